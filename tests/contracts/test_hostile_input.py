"""Hostile input (issue 25): endless lines, devices and FIFOs (defect 1); the sweep runner's strings
that reach a shell script, grids too large to write, runs that fail, refusals that leave stubs,
duplicate seeds, orphaned children (defects 2-6 and 8)."""
import json
import os
import shlex
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hansprobe.sweep import emit_slurm, expand, load_spec

from helpers import REPO, run_cli

BASE = """
steps = 6
seeds = [0]
[train]
n-layers = 1
d-model = 16
n-heads = 2
batch-size = 8
eval-every = 3
eval-graphs = 16
checkpoint-every = 3
[[tasks]]
name = {task_name}
task = "pathstar"
degree = 2
path-len = 3
nodes = 12
[[objectives]]
name = {objective_name}
objective = "teacher-forcing"
"""


def toml_str(s: str) -> str:
    return json.dumps(s)  # a TOML basic string is a JSON string for these characters


def spec_file(tmp_path, task_name="G", objective_name="tf", extra=""):
    p = tmp_path / "s.toml"
    p.write_text(BASE.format(task_name=toml_str(task_name), objective_name=toml_str(objective_name)) + extra)
    return p


# --- defect 2: nothing in a spec runs in a launch script --------------------------------------------
@pytest.mark.parametrize("name", ["tf\ntouch pwned #", "a\rb", "x\x1b[31m", "a\x85b", "a\u2028b", "a\u202eb"])
def test_control_characters_in_any_string_are_refused(tmp_path, capsys, name):
    code, _, err = run_cli(["sweep", str(spec_file(tmp_path, objective_name=name)), "--out", str(tmp_path / "o"),
                            "--emit", "slurm"], capsys)
    assert code == 2 and "control character" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def _commands(script: str) -> list[list[str]]:
    """The command lines a launch script would run (bash's own parse: `bash -n` passes and every
    simple command is one of the script's own)."""
    out = []
    for line in script.split("\n"):  # bash's lines: str.splitlines() also splits at U+0085 and U+2028
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(shlex.split(line, comments=True))
    return out


def _check_scripts(out_dir):
    launch = out_dir / "launch"
    for script in launch.glob("*.sh"):
        text = script.read_text()
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        for cmd in _commands(text):
            assert cmd[0] in ("set", "if", "fi", "exec"), cmd  # nothing but the script's own lines
            if cmd[0] == "exec":
                assert cmd[1:4] == ["python", "-m", "hansprobe"] and cmd[4] == "train", cmd
    slurm = (out_dir / "sweep.slurm").read_text()
    assert subprocess.run(["bash", "-n", str(out_dir / "sweep.slurm")]).returncode == 0
    output = next(line for line in slurm.splitlines() if line.startswith("#SBATCH --output="))
    assert shlex.split(output[len("#SBATCH --output="):])  # quoted: one word, whatever the path holds


ANY = st.text(st.characters(max_codepoint=0x2FFF), min_size=1, max_size=30)  # control characters included


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(task_name=ANY, objective_name=ANY)
def test_any_names_give_scripts_that_run_only_hansprobe_or_a_one_line_refusal(tmp_path_factory, task_name, objective_name):
    from hansprobe.errors import ConfigError

    tmp = tmp_path_factory.mktemp("hyp")
    try:
        spec = load_spec(spec_file(tmp, task_name, objective_name))
    except ConfigError as e:  # a control character, or two names that slug alike: refused in one line
        assert "control character" in str(e) or "share a name" in str(e) or "not valid TOML" in str(e)
        return
    out = tmp / "out dir $(touch pwned) `id` 'q'"
    emit_slurm(spec, out, tmp / "s.toml")
    _check_scripts(out)
    assert not (tmp / "pwned").exists() and not any(p.name == "pwned" for p in tmp.rglob("*"))


def test_names_with_shell_syntax_are_quoted_not_run(tmp_path, capsys):
    name = "$(touch pwned) `touch pwned2` ; touch pwned3 'q\" #"
    out = tmp_path / "out with spaces"
    code, _, err = run_cli(["sweep", str(spec_file(tmp_path, name, name + "x")), "--out", str(out), "--emit", "slurm"],
                           capsys)
    assert code == 0, err
    _check_scripts(out)
    for script in (out / "launch").glob("*.sh"):  # run what bash would parse, with python replaced by a stub
        text = script.read_text().replace("exec python -m hansprobe", "exec true")
        subprocess.run(["bash", "-c", text], cwd=tmp_path, check=True)
    assert not any(p.name.startswith("pwned") for p in tmp_path.rglob("*"))


# --- defect 3: a grid too large is refused before anything is written --------------------------------
def test_a_grid_over_the_limit_is_refused_before_writing(tmp_path, capsys):
    seeds = "seeds = [" + ", ".join(map(str, range(1001))) + "]"
    p = spec_file(tmp_path)
    p.write_text(p.read_text().replace("seeds = [0]", seeds))
    code, _, err = run_cli(["sweep", str(p), "--out", str(tmp_path / "o"), "--emit", "slurm"], capsys)
    assert code == 2 and "1001 runs" in err and "--max-runs 1001" in err
    assert not (tmp_path / "o").exists()


def test_a_failed_emit_leaves_the_old_launch_directory(tmp_path, monkeypatch):
    import hansprobe.sweep as sweep

    spec = load_spec(spec_file(tmp_path))
    out = tmp_path / "o"
    emit_slurm(spec, out, tmp_path / "s.toml")
    before = sorted(p.name for p in (out / "launch").iterdir())
    monkeypatch.setattr(sweep, "_write_launch", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError):
        emit_slurm(spec, out, tmp_path / "s.toml")
    assert sorted(p.name for p in (out / "launch").iterdir()) == before
    assert not list(out.glob(".launch-*"))


# --- defect 4: runs are validated, failures counted ----------------------------------------------------
@pytest.mark.parametrize("extra,needle", [('bogus-key = 3\n', "bogus-key"), ("", "nope")])
def test_a_run_train_would_refuse_is_refused_before_anything_runs(tmp_path, capsys, extra, needle):
    p = spec_file(tmp_path)
    text = p.read_text().replace('objective = "teacher-forcing"', 'objective = "nope"') if needle == "nope" else \
        p.read_text().replace("[[tasks]]", extra + "[[tasks]]")
    p.write_text(text)
    for emit in ([], ["--emit", "slurm"]):
        code, _, err = run_cli(["sweep", str(p), "--out", str(tmp_path / "o"), *emit], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("key", ["out = \"x\"", "overwrite = true", "seed = 3"])
def test_keys_the_sweep_owns_are_refused(tmp_path, capsys, key):
    p = spec_file(tmp_path)
    p.write_text(p.read_text().replace("[[tasks]]", key + "\n[[tasks]]"))
    code, _, err = run_cli(["sweep", str(p), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "set by the sweep itself" in err


def test_a_sweep_with_a_failed_run_exits_non_zero_and_counts_it(tmp_path, capsys):
    p = spec_file(tmp_path)
    out = tmp_path / "o"
    run_dir = out / "runs" / expand(load_spec(p))[0].name
    run_dir.mkdir(parents=True)
    (run_dir.parent / f".{run_dir.name}.hansprobe-lock").touch()
    import fcntl

    fd = os.open(run_dir.parent / f".{run_dir.name}.hansprobe-lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process holds the run: the child fails on the lock
    try:
        code, _, err = run_cli(["sweep", str(p), "--out", str(out)], capsys)
    finally:
        os.close(fd)
    assert code == 1 and "1 of 1 runs failed" in err and "FAILED" in err


def test_a_killed_child_is_named_by_its_signal(tmp_path, monkeypatch):
    import hansprobe.sweep as sweep

    spec = load_spec(spec_file(tmp_path))
    real = subprocess.run

    def killed(cmd, **kw):
        return subprocess.CompletedProcess(cmd, -9, "", "")
    monkeypatch.setattr(sweep.subprocess, "run", killed)
    lines = sweep.run_local(spec, tmp_path / "o", log=lambda line: None)
    monkeypatch.setattr(sweep.subprocess, "run", real)
    assert lines == [f"{expand(spec)[0].name}: FAILED (killed by signal 9; `hansprobe sweep` again resumes it)"]


def test_a_rows_figures_and_step_come_from_one_evaluation(tmp_path):
    from hansprobe.sweep import gather

    spec = load_spec(spec_file(tmp_path))
    run_dir = tmp_path / "o" / "runs" / expand(spec)[0].name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"step": 5, "metrics": {"step": 3, "eval_graphs": 16,
                                                                             "exact_match": 0.5, "decision_accuracy": 0.5}}))
    row = gather(spec, tmp_path / "o")[0]
    assert row["status"] == "at step 5" and row["step"] == 3


# --- defect 6: duplicate seeds --------------------------------------------------------------------------
def test_duplicate_seeds_are_refused(tmp_path, capsys):
    p = spec_file(tmp_path)
    p.write_text(p.read_text().replace("seeds = [0]", "seeds = [0, 0]"))
    code, _, err = run_cli(["sweep", str(p), "--out", str(tmp_path / "o"), "--emit", "slurm"], capsys)
    assert code == 2 and "repeat a seed" in err


# --- defect 5: a late refusal leaves no stub -------------------------------------------------------------
def test_structured_samples_beyond_the_goals_are_refused_before_the_directory(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--degree", "2", "--path-len", "3", "--nodes", "12", "--n-layers", "1", "--d-model", "16",
            "--n-heads", "2", "--batch-size", "8", "--steps", "2", "--out", str(out)]
    code, _, err = run_cli([*argv, "--structured-samples", "4"], capsys)
    assert code == 2 and "only 2 goals" in err
    assert not out.exists()
    code, _, err = run_cli([*argv, "--structured-samples", "2", "--json"], capsys)  # the corrected rerun is not refused
    assert code == 0, err


# --- defect 8: the sweep's child ends with it ----------------------------------------------------------
def test_a_killed_sweep_takes_its_child_with_it(tmp_path):
    script = textwrap.dedent("""
        import subprocess, sys, time
        from hansprobe.sweep import _end_with_parent
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=_end_with_parent)
        print(child.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    import time

    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("the child outlived its killed parent")


# --- defect 1: an endless line is refused, not read whole -------------------------------------------
def test_eval_on_dev_zero_is_a_one_line_error_not_an_oom(tmp_path, capsys):
    ck = REPO / "checkpoints" / "pathstar-d2-l5-n50-teacher-forcing"
    if not (ck / "config.json").is_file():
        pytest.skip("the reference checkpoint is not shipped in this clone")
    code, _, err = run_cli(["eval", str(ck), "--data", "/dev/zero", "-n", "5"], capsys)
    assert code == 2 and "/dev/zero line 1 is longer than" in err and len(err.strip().splitlines()) == 1


def test_a_fifo_is_read_with_the_same_bound(tmp_path):
    import threading

    from hansprobe.errors import TaskError
    from hansprobe.tasks import PathStar, format_ntf_lines
    from hansprobe.tasks.ntf_format import max_line_bytes, read_lines, read_ntf

    task = PathStar(2, 5, 50)
    good = tmp_path / "good.fifo"
    os.mkfifo(good)
    lines = format_ntf_lines(task.generate(3, 0))
    writer = threading.Thread(target=lambda: good.write_text("".join(x + "\n" for x in lines)))
    writer.start()
    assert len(read_ntf(good, task)) == 3  # a FIFO of valid lines reads as a file does
    writer.join()
    assert max(map(len, lines)) < max_line_bytes(task) < 1000
    long = tmp_path / "long.txt"
    long.write_text("1," * 2000 + "\n")
    with pytest.raises(TaskError, match="line 1 is longer than"):
        read_lines(long, max_line=max_line_bytes(task))


@pytest.mark.parametrize("what", ["spec", "config"])
def test_a_spec_or_config_that_never_ends_is_refused(tmp_path, capsys, what):
    if what == "spec":
        code, _, err = run_cli(["sweep", "/dev/zero", "--out", str(tmp_path / "o")], capsys)
        assert code == 2 and "larger than" in err
    else:
        from hansprobe.errors import CheckpointError
        from hansprobe.validation import read_text_bounded

        with pytest.raises(CheckpointError, match="larger than 1000 bytes"):
            read_text_bounded("/dev/zero", "checkpoint config", 1000, error=CheckpointError)


def test_a_huge_tree_depth_is_refused_before_big_integer_arithmetic(capsys):
    code, _, err = run_cli(["data", "--task", "tree", "--depth", "1000000", "-n", "1"], capsys)
    assert code == 2 and "more than 1e+09 nodes" in err and "unexpected" not in err


def test_partial_teacherless_without_p_names_its_default_in_help_and_config(tmp_path, capsys):
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert "(default 0.5)" in " ".join(out.split())
    code, out, err = run_cli(["train", "--degree", "2", "--path-len", "3", "--nodes", "12", "--n-layers", "1",
                              "--d-model", "16", "--n-heads", "2", "--batch-size", "8", "--steps", "1",
                              "--objective", "partial-teacherless", "--out", str(tmp_path / "r"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["objective_options"] == {"p": 0.5}
