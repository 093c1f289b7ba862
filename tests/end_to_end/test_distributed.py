"""Data-parallel training with torchrun (gloo on CPU): 2 processes with per-rank batch B reach the same
weights as 1 process with batch 2B on the same graphs (`--data-shards 2`), within float tolerance
(the all-reduce sums in another order); only rank 0 writes; --resume works under torchrun."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from hansprobe.checkpoint import read_metrics
from hansprobe.cli import main

pytestmark = pytest.mark.slow  # the fast tier (pytest -m 'not slow') leaves these out: end-to-end runs

TOL = 1e-4  # max |weight difference| after 8 AdamW steps (measured 2e-5 on this machine)
ARGS = ["--degree", "2", "--path-len", "4", "--nodes", "20", "--n-layers", "1", "--d-model", "32", "--n-heads", "2",
        "--batch-size", "8", "--eval-every", "4", "--eval-graphs", "32", "--checkpoint-every", "4", "--seed", "3", "--json"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(*args):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "hansprobe", "train", *args], env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def eight_steps(tmp_path_factory):
    """One uninterrupted 8-step torchrun run, shared: the one-process comparison and the kill test's
    reference (read only; a test that resumes it copies it first)."""
    out = tmp_path_factory.mktemp("torchrun") / "two"
    return out, torchrun(*ARGS, "--steps", "8", "--out", str(out))


def train_in_process(args) -> None:
    """The one-process reference: `hansprobe train` in this process (conftest: one torch thread,
    as ENV gives the ranks)."""
    assert main(["train", *args]) == 0


def test_two_gloo_ranks_match_one_process_on_the_same_graphs(eight_steps, tmp_path):
    first, proc = eight_steps
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"format": "hansprobe-checkpoint"') == 1  # rank 0 alone prints
    two, one = tmp_path / "two", tmp_path / "one"
    shutil.copytree(first, two)  # resumed below
    train_in_process([*ARGS, "--steps", "8", "--data-shards", "2", "--out", str(one)])
    a, b = load_file(two / "model.safetensors"), load_file(one / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= TOL
    assert [r["step"] for r in read_metrics(two)] == [4, 8]  # one writer: every row once
    assert json.loads((two / "config.json").read_text())["train"]["data_shards"] == 2
    proc = torchrun("--resume", "--out", str(two), "--steps", "12", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["step"] for r in read_metrics(two)] == [4, 8, 12]


def test_multi_token_under_torchrun_matches_one_process(tmp_path):
    """The extra heads train inside the data-parallel module: their weights match too."""
    two, one = tmp_path / "two", tmp_path / "one"
    mt = ["--objective", "multi-token", "--extra-heads", "2", "--steps", "4"]
    proc = torchrun(*ARGS, *mt, "--out", str(two))
    assert proc.returncode == 0, proc.stderr[-3000:]
    train_in_process([*ARGS, *mt, "--data-shards", "2", "--out", str(one)])
    for name in ("model.safetensors", "extra_heads.safetensors"):
        a, b = load_file(two / name), load_file(one / name)
        assert a.keys() == b.keys()
        assert max((a[k] - b[k]).abs().max().item() for k in a) <= TOL, name


def test_a_bad_option_under_torchrun_is_one_message_and_exit_2(tmp_path):
    """Issue 25 defect 7: each rank printed the error; now rank 0 alone, every rank exits 2, before
    the process group starts."""
    proc = torchrun(*ARGS, "--steps", "2", "--objective", "nope", "--out", str(tmp_path / "r"))
    assert proc.returncode != 0
    assert proc.stderr.count("hansprobe: error:") == 1 and "unknown objective 'nope'" in proc.stderr
    assert "exitcode  : 2" in proc.stderr or "exit code 2" in proc.stderr or "exitcode: 2" in proc.stderr.replace(" ", "")
    assert not (tmp_path / "r").exists()


def test_a_failed_collective_says_another_rank_stopped_and_how_to_resume(tmp_path):
    from hansprobe.train import collective_failure, train

    from helpers import tiny_model_cfg, tiny_task, tiny_train_cfg

    run = tmp_path / "r"
    train(run, tiny_task(), "teacher-forcing", tiny_model_cfg(), tiny_train_cfg(steps=8), seed=0, progress=False)
    e = collective_failure(RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection reset by peer"), run, 2)
    text = str(e)
    assert "another training process stopped" in text and "Connection reset by peer" in text
    assert f"torchrun --nproc_per_node 2 -m hansprobe train --resume --out {run}" in text and "step 8" in text
    assert "\n" not in text


KILL_RANK0_AT_WRITE = """
import os, signal, sys
import torch
torch.set_num_threads(1)
import hansprobe.storage as c
n, calls, real = int(sys.argv[1]), [0], c.atomic_write_bytes
def write(path, data):
    calls[0] += 1
    if calls[0] == n and os.environ.get("RANK") == "0":
        os.kill(os.getpid(), signal.SIGKILL)  # rank 0 dies before its n-th checkpoint write
    return real(path, data)
c.atomic_write_bytes = write
from hansprobe.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_torchrun_run_killed_and_resumed_ends_bit_identical_to_an_uninterrupted_one(eight_steps, tmp_path):
    """Issue 25 defect 7: resume under torchrun, checked. Rank 0 is killed before a checkpoint write
    after step 4's checkpoint; the survivor says another rank stopped; `torchrun ... --resume` then
    ends with the same bytes as a run that was never stopped."""
    (whole, proc), cut = eight_steps, tmp_path / "cut"
    args = [*ARGS, "--steps", "8"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    killer = tmp_path / "killer.py"
    killer.write_text(KILL_RANK0_AT_WRITE)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(killer), "6", "train", *args, "--out", str(cut)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert json.loads((cut / "config.json").read_text())["step"] == 4  # the last complete checkpoint
    proc = torchrun("--resume", "--out", str(cut), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_file(whole / "model.safetensors"), load_file(cut / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_metrics(cut)] == [r["step"] for r in read_metrics(whole)]
