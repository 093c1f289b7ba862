"""Data-parallel training with torchrun (gloo on CPU): 2 processes with per-rank batch B reach the same
weights as 1 process with batch 2B on the same graphs (`--data-shards 2`), within float tolerance
(the all-reduce sums in another order); only rank 0 writes; --resume works under torchrun."""
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from hansprobe.checkpoint import read_metrics

TOL = 1e-4  # max |weight difference| after 8 AdamW steps (measured 2e-5 on this machine)
ARGS = ["--degree", "2", "--path-len", "4", "--nodes", "20", "--n-layers", "1", "--d-model", "32", "--n-heads", "2",
        "--batch-size", "8", "--eval-every", "4", "--eval-graphs", "32", "--checkpoint-every", "4", "--seed", "3", "--json"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(*args):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "hansprobe", "train", *args], env=ENV, capture_output=True, text=True, timeout=300)


def test_two_gloo_ranks_match_one_process_on_the_same_graphs(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    proc = torchrun(*ARGS, "--steps", "8", "--out", str(two))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"format": "hansprobe-checkpoint"') == 1  # rank 0 alone prints
    proc = subprocess.run([sys.executable, "-m", "hansprobe", "train", *ARGS, "--steps", "8", "--data-shards", "2",
                           "--out", str(one)], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
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
    proc = subprocess.run([sys.executable, "-m", "hansprobe", "train", *ARGS, *mt, "--data-shards", "2",
                           "--out", str(one)], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("model.safetensors", "extra_heads.safetensors"):
        a, b = load_file(two / name), load_file(one / name)
        assert a.keys() == b.keys()
        assert max((a[k] - b[k]).abs().max().item() for k in a) <= TOL, name
