"""Issue 37, the fourth reliability pass: the tool never destroys a file it did not write. Each test
reproduces a numbered defect of the issue and fails on the code before it. Nothing here touches the
real /dev: a FIFO and a symbolic link in a temporary directory stand in for a device."""
import json
import os
import shutil

import pytest

from helpers import run_cli


def _entropy(ckpt, out, *extra):
    return ["entropy", str(ckpt), "-n", "20", "--out", str(out), *extra]


def test_an_analysis_never_writes_into_a_checkpoint(ckpt, tmp_path, capsys):
    """Item 1: `entropy CK --out CK/model.safetensors` replaced the weights with JSON and exited 0."""
    ck = tmp_path / "ck"
    shutil.copytree(ckpt, ck)
    weights = (ck / "model.safetensors").read_bytes()
    for target in (ck / "model.safetensors", ck / "metrics.jsonl", ck / "notes.json"):
        code, _, err = run_cli(_entropy(ck, target, "--overwrite"), capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "checkpoint, run or report directory" in err
    assert (ck / "model.safetensors").read_bytes() == weights and not (ck / "notes.json").exists()


def test_an_analysis_replaces_an_existing_file_only_with_overwrite(ckpt, tmp_path, capsys):
    out = tmp_path / "result.json"
    out.write_text("my notes\n")
    code, _, err = run_cli(_entropy(ckpt, out), capsys)
    assert code == 2 and "exists; pass --overwrite" in err and out.read_text() == "my notes\n"
    code, _, _ = run_cli(_entropy(ckpt, out, "--overwrite"), capsys)
    assert code == 0 and json.loads(out.read_text())["analysis"] == "entropy"


def test_a_fifo_or_a_symlink_is_refused_not_renamed_over(ckpt, tmp_path, capsys):
    """Item 1: `--out FIFO` replaced the FIFO with a file (and `--out /dev/null`, run as root, the machine's
    /dev/null). A FIFO stands in for the device here."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    target = tmp_path / "target.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    for out in (fifo, link):
        code, _, err = run_cli(_entropy(ckpt, out, "--overwrite"), capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert fifo.is_fifo() and link.is_symlink() and target.read_text() == "{}"


def test_data_and_to_safetensors_take_the_same_checks(ckpt, tmp_path, capsys):
    code, _, err = run_cli(["data", "--degree", "2", "--path-len", "4", "--nodes", "20", "-n", "3",
                            "--out", str(ckpt / "graphs.txt")], capsys)
    assert code == 2 and "checkpoint, run or report directory" in err and not (ckpt / "graphs.txt").exists()


def test_the_lock_is_on_the_directory_however_it_is_named(tmp_path):
    """Item 3: the lock was named after the path as typed: `train --resume --out LINK` beside
    `train --out RUN` both ran, and metrics.jsonl got 24 duplicated rows."""
    from hansprobe.errors import CheckpointError
    from hansprobe.storage import run_lock

    run = tmp_path / "run"
    run.mkdir()
    link = tmp_path / "link"
    link.symlink_to(run)
    with run_lock(run):
        for other in (link, tmp_path / "x" / ".." / "run"):
            with pytest.raises(CheckpointError, match="being written by another hansprobe process"):
                with run_lock(other):
                    pass


def test_overwrite_replaces_only_a_checkpoint_directory_and_never_through_a_link(ckpt, tmp_path, capsys):
    """Item 3: `train --overwrite --out SYMLINK` gave "unexpected OSError: Cannot call rmtree on a
    symbolic link"; and --overwrite removed any non-empty directory, a user's files included."""
    from helpers import TINY_TRAIN

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(mine)
    for out, needle in ((link, "symbolic link"), (mine, "did not write")):
        code, _, err = run_cli([*TINY_TRAIN, "--steps", "1", "--out", str(out), "--overwrite"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert (mine / "thesis.tex").read_text() == "keep" and link.is_symlink()
    run = tmp_path / "run"
    shutil.copytree(ckpt, run)  # a checkpoint this tool wrote: --overwrite replaces it
    code, _, err = run_cli([*TINY_TRAIN, "--steps", "1", "--eval-every", "1", "--checkpoint-every", "1", "--out", str(run),
                            "--overwrite"], capsys)
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["step"] == 1


def _marked(mark: str) -> list[int]:
    """The live processes (not zombies) whose environment holds `mark`."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if mark.encode() not in f.read():
                    continue
            with open(f"/proc/{d}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        pids.append(int(d))
    return pids


@pytest.mark.slow
def test_report_workers_die_with_a_killed_report(runs, tmp_path):
    """Item 4: `kill -9` of `report --jobs 2` left both workers, the fork server and the resource
    tracker running for good (1.7 GB, parent pid 1)."""
    import signal
    import subprocess
    import sys
    import time
    import uuid

    mark = f"HANSPROBE_TEST_MARK={uuid.uuid4().hex}"
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1], "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hansprobe", "report", str(runs["teacher-forcing"]), str(runs["reverse"]),
                             "--jobs", "2", "-n", "20000", "--mechanism-graphs", "4000", "--out", str(tmp_path / "rep")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(_marked(mark)) < 4 and time.time() < deadline and proc.poll() is None:  # main, server, 2 workers
            time.sleep(0.2)
        assert proc.poll() is None, "the report ended before its workers could be seen"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 15
        while _marked(mark) and time.time() < deadline:
            time.sleep(0.2)
        left = _marked(mark)
    finally:
        for pid in _marked(mark):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived the killed report: {left}"


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])  # the field after the state


@pytest.mark.slow
def test_a_dead_worker_is_one_line_naming_its_checkpoint_and_ctrl_c_ends_at_once(runs, tmp_path):
    """Item 4: a worker killed in mid-run gave "unexpected BrokenProcessPool ... please report"; SIGINT
    took 13-17 s."""
    import signal
    import subprocess
    import sys
    import time
    import uuid

    def start(mark):
        env = {**os.environ, "HANSPROBE_TEST_MARK": mark, "OMP_NUM_THREADS": "1"}
        return subprocess.Popen([sys.executable, "-m", "hansprobe", "report", str(runs["teacher-forcing"]),
                                 str(runs["multi-token"]), "--jobs", "2", "-n", "20000", "--mechanism-graphs", "4000",
                                 "--out", str(tmp_path / mark)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)

    def workers(mark, main):
        server = [p for p in _marked(mark) if p != main and _ppid(p) == main]
        return [p for p in _marked(mark) if _ppid(p) in server]

    for action in ("kill a worker", "interrupt"):
        mark = uuid.uuid4().hex
        proc = start(mark)
        try:
            deadline = time.time() + 120
            while len(workers(mark, proc.pid)) < 2 and time.time() < deadline and proc.poll() is None:
                time.sleep(0.2)
            assert proc.poll() is None, proc.stderr.read()
            if action == "kill a worker":
                os.kill(workers(mark, proc.pid)[0], signal.SIGKILL)
                err = proc.communicate(timeout=60)[1]
                assert proc.returncode == 2 and "worker process measuring" in err and "died" in err, err
                assert len([line for line in err.splitlines() if line.startswith("hansprobe")]) == 1, err
            else:
                t0 = time.time()
                proc.send_signal(signal.SIGINT)
                proc.communicate(timeout=30)
                assert proc.returncode == 130 and time.time() - t0 < 5
        finally:
            for pid in _marked(mark):
                os.kill(pid, signal.SIGKILL)


def test_a_compressed_archive_is_not_expanded_beyond_its_size(tmp_path, capsys):
    """Item 5: a 1.9 MB nanoGPT .pt with a deflate-compressed storage reached 2.1 GB before failing,
    by `import --format nanogpt` and by `--to-safetensors`."""
    import zipfile

    import torch

    plain = tmp_path / "plain.pt"
    torch.save({"model": {"transformer.wte.weight": torch.zeros(4, 4)}}, plain)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():  # the weight's storage record, deflated and 64 MiB long: torch reads it whole
            data, kind = ((b"\0" * (64 << 20), zipfile.ZIP_DEFLATED) if info.filename.endswith("/data/0")
                          else (src.read(info), zipfile.ZIP_STORED))
            dst.writestr(info.filename, data, compress_type=kind)
    assert bomb.stat().st_size < 1 << 20
    for argv in (["import", str(bomb), "--format", "nanogpt", "--degree", "2", "--path-len", "4", "--nodes", "20",
                  "--objective", "teacher-forcing", "--out", str(tmp_path / "ck")],
                 ["import", str(bomb), "--format", "nanogpt", "--to-safetensors", str(tmp_path / "w.safetensors")]):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "compressed member" in err, err
    from hansprobe.interop import read_state_dict

    assert "transformer.wte.weight" in read_state_dict(plain)  # an ordinary torch.save file still loads


def test_a_state_dict_key_that_is_not_a_name_is_one_line(tmp_path, capsys):
    """Item 12: a nanoGPT .pt with an integer key gave "unexpected TypeError"."""
    import torch

    odd = tmp_path / "odd.pt"
    torch.save({"model": {1: torch.zeros(2)}}, odd)
    code, _, err = run_cli(["import", str(odd), "--format", "nanogpt", "--to-safetensors", str(tmp_path / "w.safetensors")],
                           capsys)
    assert code == 2 and "not a parameter name (1)" in err and "unexpected" not in err, err


def test_the_training_log_is_read_a_bounded_line_at_a_time(tmp_path):
    """Item 6: a 4 GB sparse metrics.jsonl made report and dynamics fail with "ran out of memory ... use
    fewer graphs (-n)", which names the wrong cause. Here 1 GiB of zeros: no row, little memory."""
    import resource

    from hansprobe.storage import read_metrics

    with open(tmp_path / "metrics.jsonl", "wb") as f:
        f.write(b'{"step": 5, "train_loss": 1.0}\n')
        f.truncate(1 << 30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = read_metrics(tmp_path)
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert rows == [{"step": 5, "train_loss": 1.0}] and grew_mib < 100, grew_mib


def test_odd_rows_in_the_training_log_are_skipped_everywhere(ckpt, tmp_path, capsys):
    """Item 9: rows like `[1,2,3]`, `5`, an object without "step", appended binary crashed report,
    dynamics and train --resume after every analysis had run."""
    from helpers import TINY_TRAIN

    from hansprobe.storage import read_metrics

    run = tmp_path / "run"
    shutil.copytree(ckpt, run)
    good = read_metrics(run)
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'[1, 2, 3]\n5\n{"train_loss": 1}\n{"step": "7"}\n{"step": 9, "exact_match": "x", "lr": 1e999}\n\xff\xfe\x00garbage\n')
    rows = read_metrics(run)
    assert rows[: len(good)] == good and rows[-1] == {"step": 9}  # its odd fields dropped
    code, _, err = run_cli(["report", str(run), "-n", "20", "--mechanism-graphs", "20", "--patch-pairs", "4",
                            "--out", str(tmp_path / "rep")], capsys)
    assert code == 0, err
    code, _, err = run_cli([*TINY_TRAIN, "--steps", "9", "--out", str(run), "--resume"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("edit,needle", [
    (lambda c: {**c, "seed": json.loads("[" * 5000 + "]" * 5000)}, "nests deeper"),
    (None, "value no checkpoint config has"),
    (lambda c: {**c, "train": {**c["train"], "batch_size": "big"}}, "train.batch_size"),
    (lambda c: {**c, "train": {**c["train"], "batch_size": [1, 2]}}, "train.batch_size"),
    (lambda c: {**c, "train": {**c["train"], "lr": "fast"}}, "train.lr"),
])
def test_a_damaged_config_is_one_line_when_loaded_not_a_crash_later(ckpt, tmp_path, capsys, edit, needle):
    """Items 7 and 8: a config nested 5,000 levels deep gave "unexpected RecursionError", a 5,000-digit
    integer "unexpected ValueError"; a wrong-typed train.batch_size passed validation and crashed
    `analyse witness` / `report --witness` after 7 of 8 analyses."""
    run = tmp_path / "run"
    shutil.copytree(ckpt, run)
    text = (run / "config.json").read_text()
    if edit is None:
        text = text.replace('"seed": 0', '"seed": ' + "9" * 5000)
    else:
        cfg = json.loads(text)
        text = json.dumps(edit(cfg)) if needle != "nests deeper" else text.replace('"seed": 0', '"seed": ' + "[" * 5000 + "]" * 5000)
    (run / "config.json").write_text(text)
    code, _, err = run_cli(["eval", str(run), "-n", "10"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err and "unexpected" not in err, err


@pytest.mark.parametrize("text,needle", [("[" * 5000 + "]" * 5000, "nests deeper"), ('{"n_layer": ' + "9" * 5000 + "}",
                                                                                  "value no GPT-2 config has")])
def test_a_damaged_hf_config_is_one_line(tmp_path, capsys, text, needle):
    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text(text)
    code, _, err = run_cli(["import", str(src), "--format", "hf-gpt2", "--degree", "2", "--path-len", "4", "--nodes", "20",
                            "--objective", "teacher-forcing", "--out", str(tmp_path / "ck")], capsys)
    assert code == 2 and needle in err and "unexpected" not in err, err


@pytest.mark.parametrize("flag", ["--layers", "--positions"])
def test_an_empty_list_option_is_one_line(ckpt, capsys, flag):
    """Item 10: `probe --layers ,` gave "unexpected RuntimeError", `--positions ,` "unexpected IndexError"."""
    code, _, err = run_cli(["probe", str(ckpt), "-n", "20", flag, ","], capsys)
    assert code == 2 and "comma-separated list" in err and "unexpected" not in err, err


@pytest.mark.parametrize("n", [1, 3, 9])
def test_a_data_file_of_too_few_graphs_is_refused_like_n(ckpt, tmp_path, capsys, n):
    """Item 11: a 1-graph --data file gave "unexpected ValueError: torch.cat()"; 2-9 graphs gave verdicts
    on 3 graphs, although -n 9 is refused."""
    data = tmp_path / "g.txt"
    code, _, _ = run_cli(["data", "--degree", "2", "--path-len", "4", "--nodes", "20", "-n", str(n), "--out", str(data)], capsys)
    assert code == 0
    code, _, err = run_cli(["report", str(ckpt), "--data", str(data), "--out", str(tmp_path / "rep")], capsys)
    assert code == 2 and f"holds {n} graph" in err and "at least 10" in err, err
    assert not (tmp_path / "rep" / "report.json").exists()


def test_a_witness_whose_weights_do_not_load_is_refused_before_measuring(ckpt, tmp_path, capsys):
    """Item 14: a witness with truncated weights failed after 7 analyses, and nothing was written."""
    w = tmp_path / "w"
    shutil.copytree(ckpt, w)
    data = (w / "model.safetensors").read_bytes()
    (w / "model.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(["report", str(ckpt), "--witness", str(w), "-n", "20", "--mechanism-graphs", "20",
                            "--patch-pairs", "4", "--out", str(tmp_path / "rep")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "model.safetensors" in err, err
    assert not (tmp_path / "rep").exists() or not any((tmp_path / "rep").iterdir())


def test_paths_are_printed_escaped_and_any_name_can_be_measured(ckpt, tmp_path, capsys):
    """Item 15: a directory name that is not UTF-8 could not be loaded (safetensors takes only UTF-8
    paths; the report's page could not be written); ESC characters in paths reached the terminal raw;
    a newline in a checkpoint's name split the report's header line."""
    odd = tmp_path / os.fsdecode(b"odd\xffname")
    esc = tmp_path / "esc\x1b[31mred\nline"
    for d in (odd, esc):
        shutil.copytree(ckpt, d)
    code, out, err = run_cli(["eval", str(esc), "-n", "10"], capsys)
    assert code == 0 and "\x1b" not in out + err and out.splitlines()[0].startswith(str(tmp_path) + "/esc\\x1b[31mred\\nline")
    code, out, err = run_cli(["report", str(odd), str(esc), "-n", "20", "--mechanism-graphs", "20", "--patch-pairs", "4",
                              "--out", str(tmp_path / "rep")], capsys)
    assert code == 0, err
    assert "\x1b" not in out + err and "odd\\xffname (" in out and "esc\\x1b[31mred\\nline (" in out
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [c["name"] for c in doc["checkpoints"]] == ["odd\\xffname", "esc\\x1b[31mred\\nline"]
    code, _, err = run_cli(["eval", str(tmp_path / "no\x1bsuch"), "-n", "10"], capsys)
    assert code == 2 and "\x1b" not in err and "no\\x1bsuch" in err


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_named_as_such(tmp_path, capsys, value):
    """Item 16: NaN weights that were correctly tied gave "untied heads are not supported"; one inf
    weight gave "logits differ by nan ... please report"."""
    import torch

    from helpers import nanogpt_state_dict, tiny_task

    task = tiny_task()
    sd = nanogpt_state_dict(task.d_vocab, task.n_ctx)
    sd["transformer.wte.weight"][0, 0] = value  # lm_head is the same tensor: still tied
    sd["transformer.h.0.attn.c_attn.weight"][1, 1] = value
    torch.save({"model": sd, "model_args": {"n_head": 2}}, tmp_path / "ckpt.pt")
    code, _, err = run_cli(["import", str(tmp_path / "ckpt.pt"), "--format", "nanogpt", "--degree", "2", "--path-len", "4",
                            "--nodes", "20", "--objective", "teacher-forcing", "--out", str(tmp_path / "ck")], capsys)
    assert code == 2 and "not finite" in err and "untied" not in err and "please report" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_pickle_refusal_is_one_line_without_torchs_warnings(tmp_path, capsys):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"model": Evil()}))
    code, out, err = run_cli(["import", str(tmp_path / "evil.pt"), "--format", "nanogpt", "--to-safetensors",
                              str(tmp_path / "w.safetensors")], capsys)
    assert code == 2 and "ran" not in out and len(err.strip().splitlines()) == 1, err


def test_the_minor_items_are_one_line_and_early(ckpt, runs, tmp_path, capsys):
    """Item 17: a FIFO as config.json was reported "missing"; `import --objective multi-token` recorded k = 1
    with no extra heads; `--out /proc/self/x.json` was refused only after measuring; an extra-heads file
    that disagrees with the config went unnoticed."""
    import time

    fifo_ck = tmp_path / "fifo_ck"
    fifo_ck.mkdir()
    os.mkfifo(fifo_ck / "config.json")
    code, _, err = run_cli(["eval", str(fifo_ck), "-n", "10"], capsys)
    assert code == 2 and "not a regular file" in err, err
    t0 = time.time()
    code, _, err = run_cli(["entropy", str(ckpt), "-n", "2000", "--out", "/proc/self/x.json"], capsys)
    assert code == 2 and "/proc/self/x.json" in err and time.time() - t0 < 5, err
    mt = tmp_path / "mt"
    shutil.copytree(runs["multi-token"], mt)
    cfg = json.loads((mt / "config.json").read_text())
    cfg["objective_options"] = {**cfg.get("objective_options", {}), "k": 3}
    (mt / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(["eval", str(mt), "-n", "10"], capsys)
    assert code == 2 and "extra_heads.safetensors" in err and "3 extra" in err, err
    from helpers import nanogpt_state_dict, tiny_task

    import torch

    task = tiny_task()
    torch.save({"model": nanogpt_state_dict(task.d_vocab, task.n_ctx), "model_args": {"n_head": 2}}, tmp_path / "c.pt")
    code, _, err = run_cli(["import", str(tmp_path / "c.pt"), "--format", "nanogpt", "--degree", "2", "--path-len", "4",
                            "--nodes", "20", "--objective", "multi-token", "--out", str(tmp_path / "imp")], capsys)
    assert code == 2 and "no extra output heads" in err and not (tmp_path / "imp").exists(), err
