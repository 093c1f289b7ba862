"""`hansprobe sweep`: a grid from a TOML spec, run end to end on CPU (skipping finished runs,
extending interrupted or shorter ones), gathered into a table and a figure; `--emit slurm` writes
launch scripts and an array script that a cluster can run."""
import json
import shlex
import subprocess

import pytest

from hansprobe.cli import build_parser, main
from hansprobe.report import expand_checkpoint_dirs
from hansprobe.sweep import expand, load_spec
from helpers import REPO

pytestmark = pytest.mark.slow  # the fast tier (pytest -m 'not slow') leaves these out: end-to-end runs

SPEC = """
steps = {steps}
seeds = {seeds}

[train]
n-layers = 1
d-model = 32
n-heads = 2
batch-size = 16
eval-every = 3
eval-graphs = 32
checkpoint-every = 3

[[tasks]]
name = "G(2,3)"
task = "pathstar"
degree = 2
path-len = 3
nodes = 20

[[objectives]]
name = "teacher-forcing"
objective = "teacher-forcing"

[[objectives]]
name = "partial p=0.5"
objective = "partial-teacherless"
teacherless-p = 0.5
"""


def write_spec(path, steps=6, seeds="[0, 1]"):
    path.write_text(SPEC.format(steps=steps, seeds=seeds))
    return path


def test_the_grid_is_every_combination_seed_major(tmp_path):
    runs = expand(load_spec(write_spec(tmp_path / "s.toml")))
    assert [(r.objective, r.seed) for r in runs] == [("teacher-forcing", 0), ("partial p=0.5", 0),
                                                     ("teacher-forcing", 1), ("partial p=0.5", 1)]
    assert len({r.name for r in runs}) == 4
    args = runs[1].args
    assert args[args.index("--teacherless-p") + 1] == "0.5" and args[args.index("--steps") + 1] == "6"
    build_parser().parse_args([*args, "--out", "x"])  # every run is a valid train command


def test_a_sweep_runs_end_to_end_and_continues_where_it_stopped(tmp_path, capsys):
    # Two runs (one seed; the grid of four is checked above without training): each run is a
    # process that imports TransformerLens, the suite's costliest step.
    spec, out = write_spec(tmp_path / "s.toml", seeds="[0]"), tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out), "--jobs", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("sweep: ") == 2 and "trained" in captured.err
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["finished"] * 2
    assert all(0 <= r["decision_accuracy_ci"][0] <= r["decision_accuracy"] <= r["decision_accuracy_ci"][1] for r in rows)
    assert (out / "sweep.csv").read_text().count("\n") == 3 and (out / "sweep.html").stat().st_size > 10_000
    assert main(["sweep", str(spec), "--out", str(out)]) == 0  # again: nothing to train
    assert capsys.readouterr().err.count("finished before") == 2
    write_spec(spec, steps=9, seeds="[0]")  # a longer sweep extends every run from its last checkpoint
    assert main(["sweep", str(spec), "--out", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["step"] for r in rows] == [9] * 2
    metrics = [json.loads(line)["step"] for line in (out / "runs" / rows[0]["run"] / "metrics.jsonl").read_text().splitlines()]
    assert metrics == [3, 6, 9]
    assert [p.name for p in expand_checkpoint_dirs([out])] == sorted(r["run"] for r in rows)  # `report SWEEP_DIR`


def test_emit_slurm_writes_an_array_script_and_one_valid_launch_script_per_run(tmp_path, capsys):
    spec, out = write_spec(tmp_path / "s.toml"), tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out), "--emit", "slurm"]) == 0
    slurm = (out / "sweep.slurm").read_text()
    directives = dict(line[len("#SBATCH "):].split("=", 1) for line in slurm.splitlines() if line.startswith("#SBATCH "))
    assert directives["--array"] == "0-3"
    listed = (out / "launch" / "runs.txt").read_text().split()
    assert len(listed) == 4 and not (out / "runs" / listed[0].removesuffix(".sh")).exists()  # nothing ran
    for script in [out / "sweep.slurm", *(out / "launch" / name for name in listed)]:
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0  # valid bash
    for name in listed:
        cmd = (out / "launch" / name).read_text().strip().splitlines()[-1]
        argv = shlex.split(cmd)
        assert argv[:3] == ["exec", "python", "-m"] and argv[3] == "hansprobe"
        build_parser().parse_args(argv[4:])  # a valid hansprobe command
    # the array task i runs the i-th launch script
    env_line = next(line for line in slurm.splitlines() if line.startswith("script="))
    assert "SLURM_ARRAY_TASK_ID + 1" in env_line


@pytest.mark.parametrize("text,needle", [
    ("seeds = [0]\n[[tasks]]\nname='a'\n[[objectives]]\nname='b'\n", "steps must be a positive integer"),
    ("steps = 5\n[[objectives]]\nname='b'\n", "at least one [[tasks]]"),
    ("steps = 5\n[[tasks]]\nname='a'\n[[tasks]]\nname='a'\n[[objectives]]\nname='b'\n", "share a name"),
    ("steps = 5\n[[tasks]]\ndegree=2\n[[objectives]]\nname='b'\n", "needs a name"),
    ("steps = [", "not valid TOML"),
    ("steps = 5\nmodel = 3\n", "unknown keys ['model']"),
])
def test_bad_specs_are_one_line(tmp_path, capsys, text, needle):
    (tmp_path / "s.toml").write_text(text)
    code = main(["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_the_objectives_study_spec_trains_the_studys_runs():
    """analyses/study_objectives.toml and analyses/study_objectives.py describe the same 63 runs."""
    import importlib.util

    root = REPO
    spec_mod = importlib.util.spec_from_file_location("study_objectives", root / "analyses" / "study_objectives.py")
    study = importlib.util.module_from_spec(spec_mod)
    spec_mod.loader.exec_module(study)

    def parsed(args):  # the train command's parsed arguments, so that flag order does not matter
        ns = vars(build_parser().parse_args([*args, "--out", "x"]))
        return {k: v for k, v in ns.items() if not callable(v)}

    runs = expand(load_spec(root / "analyses" / "study_objectives.toml"))
    want = {(t, o, s): ["train", *study.TASKS[t], *study.OBJECTIVES[o], *study.MODEL, "--steps", str(study.STEPS),
                        "--seed", str(s)]
            for t in study.TASKS for o in study.OBJECTIVES for s in study.SEEDS}
    assert {(r.task, r.objective, r.seed) for r in runs} == set(want) and len(runs) == len(want) == 63
    for r in runs:
        assert parsed(r.args) == parsed(want[r.task, r.objective, r.seed]), shlex.join(r.args)
