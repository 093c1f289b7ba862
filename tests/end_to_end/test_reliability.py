"""Fault injection and determinism: a killed run resumes bit-identically, no half-written file is
ever read, the same command gives the same bytes, analyses stream in bounded chunks."""
import hashlib
import json
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hansprobe.checkpoint import read_metrics
from hansprobe.cli import main

from helpers import cli_child, forkserver

pytestmark = pytest.mark.slow  # the fast tier (pytest -m 'not slow') leaves these out: end-to-end runs
TRAIN = ["train", "--degree", "2", "--path-len", "4", "--nodes", "20", "--n-layers", "1", "--d-model", "32",
         "--n-heads", "2", "--batch-size", "16", "--eval-graphs", "32", "--seed", "5"]


@pytest.fixture(scope="module")
def fork():
    """Killable children forked from one server that imported hansprobe once (helpers.forkserver)."""
    return forkserver()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_equal(a: Path, b: Path) -> bool:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def eval_steps(run: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    args = [*TRAIN, "--steps", "12", "--eval-every", "2", "--checkpoint-every", "4", "--out", str(out), "--json"]
    assert main(args) == 0
    return out, args


@pytest.mark.parametrize("nth_write", [2, 5, 6, 9])  # no resume file yet; replacing one; the weights; the last step's weights
def test_kill_during_a_checkpoint_write_then_resume(reference, fork, tmp_path, nth_write, capsys):
    ref, args = reference
    run = tmp_path / "run"
    argv = [a if a != str(ref) else str(run) for a in args]
    child = fork.Process(target=cli_child, args=(argv[:], nth_write))  # `hansprobe ARGV`, killed in that write
    child.start()
    child.join(300)
    assert child.exitcode == -signal.SIGKILL, child.exitcode
    assert list(run.glob(".*.tmp")), "the kill should leave a half-written temporary file"
    # writes are config(1), then per checkpoint resume, model, config: the 2nd write is the first resume file.
    # The resume runs in this process (the killed one was a process of its own): it reads only the files.
    capsys.readouterr()
    code = main(["train", "--resume", "--out", str(run), "--json"])
    err = capsys.readouterr().err
    if nth_write == 2:  # killed before any resume file existed: a clear error, nothing half-read
        assert code == 2 and "nothing to resume" in err and "Traceback" not in err
        return
    assert code == 0, err
    assert not list(run.glob(".*.tmp")), "resume removes the temporaries of the killed write"
    assert weights_equal(ref, run) and digest(ref / "model.safetensors") == digest(run / "model.safetensors")
    assert eval_steps(run) == eval_steps(ref) == [2, 4, 6, 8, 10, 12]


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_a_random_moment_then_resume(fork, tmp_path, seed, capsys):
    rng = random.Random(seed)
    args = [*TRAIN, "--steps", "100", "--eval-every", "10", "--checkpoint-every", "10"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main([*args, "--out", str(ref), "--json"]) == 0
    child = fork.Process(target=cli_child, args=([*args, "--out", str(run), "--json"],))
    child.start()
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and child.is_alive() and time.time() < deadline:
        time.sleep(0.02)  # wait for training to start
    time.sleep(rng.uniform(0.0, 1.0))
    child.kill()  # SIGKILL
    child.join()
    killed_at = max(eval_steps(run), default=0)
    capsys.readouterr()
    code = main(["train", "--resume", "--out", str(run), "--json"])  # in this process: it reads only the files
    err = capsys.readouterr().err
    if not (run / "resume.safetensors").exists() or code == 2:
        pytest.skip(f"killed before the first checkpoint (eval rows up to {killed_at}); nothing to resume")
    assert code == 0, err
    assert weights_equal(ref, run)
    assert eval_steps(run) == list(range(10, 101, 10)), "no duplicated or missing evaluation rows"


def test_same_command_same_bytes_other_seed_other_bytes(tmp_path):
    args = [*TRAIN, "--steps", "6", "--eval-every", "3", "--checkpoint-every", "3", "--json"]
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert main([*args, "--seed", seed, "--out", str(tmp_path / name)]) == 0
    for f in ("model.safetensors", "resume.safetensors", "config.json"):
        assert digest(tmp_path / "a" / f) == digest(tmp_path / "b" / f), f
    assert digest(tmp_path / "a" / "model.safetensors") != digest(tmp_path / "c" / "model.safetensors")


@pytest.mark.parametrize("command", ["eval", "entropy", "heads", "dynamics"])
def test_analyses_with_the_same_seed_give_identical_json(reference, command, capsys):
    ref, _ = reference
    outs = []
    for _ in range(2):
        assert main([command, str(ref), "-n", "60", "--seed", "9", "--json"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]
    assert main([command, str(ref), "-n", "60", "--seed", "10", "--json"]) == 0
    assert capsys.readouterr().out != outs[0]


@pytest.mark.parametrize("analysis", ["behaviour", "entropy", "heads", "follow"])
def test_analyses_stream_in_bounded_chunks(reference, analysis):
    import hansprobe
    from hansprobe.measurements import measure_behaviour, measure_entropy
    from hansprobe.mechanics.follow import measure_follow
    from hansprobe.measurements.heads import measure_heads

    model, task, obj = hansprobe.load(reference[0])
    seen = []
    handle = model.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    fn = {"behaviour": measure_behaviour, "entropy": measure_entropy, "heads": measure_heads, "follow": measure_follow}[analysis]
    try:
        fn(model, obj, task.generate(250, 0), batch_size=64)
    finally:
        handle.remove()
    assert seen and max(seen) <= 64, f"{analysis} ran a forward pass of {max(seen)} graphs"


@pytest.mark.parametrize("argv,needle", [
    (["heads", "CKPT", "--ablate", "3.0"], "does not exist"),
    (["heads", "CKPT", "--ablate", "0.9"], "does not exist"),
    (["heads", "CKPT", "--ablate", "x"], "layer.head"),
    (["eval", "CKPT", "--device", "cuda"], "cuda"),
    (["entropy", "CKPT", "--device", "tpu"], "device"),
])
def test_analysis_requests_that_cannot_work_are_one_line_errors(reference, argv, needle, capsys):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = [str(reference[0]) if a == "CKPT" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_unknown_task_in_a_checkpoint_config(reference, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for f in reference[0].iterdir():
        if f.is_file():
            (run / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((run / "config.json").read_text())
    cfg["task"]["name"] = "maze"
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'maze'" in err and len(err.strip().splitlines()) == 1


def test_a_second_writer_of_a_run_or_report_directory_gets_one_line(reference, tmp_path, capsys):
    """Issue 14, defect 5: two `train --resume` on one --out both ran and interleaved their metrics,
    and `--overwrite` replaced a directory under a running run. Every writer now holds a lock."""
    from hansprobe.checkpoint import run_lock

    run = tmp_path / "run"
    run.mkdir()
    for f in reference[0].iterdir():
        if f.is_file():
            (run / f.name).write_bytes(f.read_bytes())
    before = (run / "metrics.jsonl").read_bytes()
    with run_lock(run):  # another process is writing this run
        for argv in (["train", "--resume", "--steps", "8", "--out", str(run)],
                     ["train", "--degree", "2", "--path-len", "4", "--nodes", "20", "--steps", "2", "--overwrite",
                      "--out", str(run)]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert "another hansprobe process" in err and len(err.strip().splitlines()) == 1
        assert (run / "metrics.jsonl").read_bytes() == before  # nothing was written
        with run_lock(tmp_path / "report"):
            assert main(["report", str(run), "-n", "10", "--out", str(tmp_path / "report")]) == 2
            assert "another hansprobe process" in capsys.readouterr().err
    assert main(["train", "--resume", "--steps", "14", "--out", str(run), "--json"]) == 0  # released: it runs
