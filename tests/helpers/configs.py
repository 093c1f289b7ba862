"""Tiny CPU builders (SAELens style): small enough that a training run takes seconds, big enough
to exercise every code path; the repository's paths; the CLI in-process; the tiny report."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hansprobe.model import ModelConfig, build_model
from hansprobe.tasks import PathStar
from hansprobe.train import TrainConfig

REPO = Path(__file__).resolve().parents[2]  # the repository: tests/helpers/configs.py -> ../../
CHECKPOINTS = REPO / "checkpoints"
SHARED_NTF = REPO.parent / "shared" / "data" / "ntf"


def tiny_task(degree: int = 2, path_len: int = 4, n_nodes: int = 20) -> PathStar:
    return PathStar(degree=degree, path_len=path_len, n_nodes=n_nodes)


def tiny_model_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{"n_layers": 1, "d_model": 32, "n_heads": 2, **kw})


def tiny_model(task: PathStar | None = None, seed: int = 0, **kw):
    task = task or tiny_task()
    return build_model(tiny_model_cfg(**kw), task.d_vocab, task.n_ctx, seed, device="cpu", dtype=torch.float32)


def tiny_train_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 12, "batch_size": 32, "lr": 3e-3, "warmup_steps": 2, "eval_every": 4,
                          "eval_graphs": 64, "checkpoint_every": 4, **kw})


def shared_ntf(name: str) -> Path:
    """A file of the paper's test splits; skips the test where ../shared is absent (a user's clone)."""
    path = SHARED_NTF / name
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared NTF test splits live beside the project only in the hansprobe workspace")
    return path


def run_cli(argv, capsys):
    """`hansprobe ARGV` in-process: (exit code, stdout, stderr); argparse's exits count as codes."""
    from hansprobe.cli import main

    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# --- the tiny report the report and page tests share (conftest.py: `runs`, `report`) -------------------
TINY_TASK_ARGS = ["--degree", "2", "--path-len", "4", "--nodes", "20"]
TINY_TRAIN = ["train", *TINY_TASK_ARGS, "--n-layers", "1", "--d-model", "32", "--n-heads", "2", "--steps", "6",
              "--batch-size", "16", "--eval-every", "3", "--eval-graphs", "32", "--checkpoint-every", "3"]
TINY_TRAIN_ARGS = [*TINY_TRAIN, "--json"]


def _tiny_report_settings():
    from hansprobe.report.settings import ReportSettings

    return ReportSettings(n_graphs=40, patch_pairs=20, batch_size=40, jobs=1)


TINY_REPORT = _tiny_report_settings()
