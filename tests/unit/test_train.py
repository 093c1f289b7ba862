import json

import pytest
import torch
from safetensors.torch import load_file

from hansprobe.checkpoint import read_metrics
from hansprobe.errors import CheckpointError, ConfigError
from hansprobe.train import TrainConfig, derived_seed, train

from helpers import tiny_model_cfg, tiny_task, tiny_train_cfg


def test_a_tiny_run_learns(tmp_path):
    cfg = tiny_train_cfg(steps=80, eval_every=40, checkpoint_every=80, lr=3e-3)
    train(tmp_path / "r", tiny_task(), "teacher-forcing", tiny_model_cfg(), cfg, seed=0, progress=False)
    rows = read_metrics(tmp_path / "r")
    assert [r["step"] for r in rows] == [40, 80]
    # the loss falls, and copying the start token from the prompt (the easiest position) is learned;
    # an untrained model is right there 1 time in d_vocab = 24
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.3
    assert rows[-1]["forced_accuracy"][0] > 0.9


def test_learning_rate_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [cfg.lr_at(s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and cfg.lr_at(100) == pytest.approx(0.1)


class Crash(RuntimeError):
    pass


def crash_at(monkeypatch, step):
    original = TrainConfig.lr_at

    def lr_at(self, s):
        if s == step:
            raise Crash(f"simulated crash at step {s}")
        return original(self, s)

    monkeypatch.setattr(TrainConfig, "lr_at", lr_at)


@pytest.mark.parametrize("crash_step", [5, 7])
def test_resume_ends_bit_identical_to_an_uninterrupted_run(tmp_path, monkeypatch, crash_step):
    cfg = dict(steps=12, eval_every=2, checkpoint_every=4)
    train(tmp_path / "full", tiny_task(), "teacher-forcing", tiny_model_cfg(), tiny_train_cfg(**cfg), seed=3, progress=False)
    with monkeypatch.context() as m:
        crash_at(m, crash_step)
        with pytest.raises(Crash):
            train(tmp_path / "cut", tiny_task(), "teacher-forcing", tiny_model_cfg(), tiny_train_cfg(**cfg), seed=3, progress=False)
    # the crash left evaluation rows past the last checkpoint (step 4): resume must drop them
    assert [r["step"] for r in read_metrics(tmp_path / "cut")][-1] == crash_step - 1 if crash_step % 2 else True
    train(tmp_path / "cut", resume=True, progress=False)
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    assert strip(read_metrics(tmp_path / "full")) == strip(read_metrics(tmp_path / "cut"))
    assert [r["step"] for r in read_metrics(tmp_path / "cut")] == [2, 4, 6, 8, 10, 12]


def test_chunks_with_until_end_bit_identical_to_an_uninterrupted_run(tmp_path):
    """`--until` stops with a complete checkpoint and leaves the horizon alone: the cosine schedule
    of the chunked run is the uninterrupted run's, so the weights and every logged row agree."""
    cfg = dict(steps=12, eval_every=2, checkpoint_every=4)
    train(tmp_path / "full", tiny_task(), "decision-only", tiny_model_cfg(), tiny_train_cfg(**cfg), seed=5, progress=False)
    first = train(tmp_path / "cut", tiny_task(), "decision-only", tiny_model_cfg(), tiny_train_cfg(**cfg), seed=5,
                  progress=False, until=5)  # stops between checkpoints: the stop writes its own
    assert first["step"] == 5 and first["train"]["steps"] == 12
    assert train(tmp_path / "cut", resume=True, progress=False, until=9)["step"] == 9
    train(tmp_path / "cut", resume=True, progress=False)
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    assert strip(read_metrics(tmp_path / "full")) == strip(read_metrics(tmp_path / "cut"))


def test_resume_can_extend_the_horizon(tmp_path):
    train(tmp_path / "r", tiny_task(), "reverse", tiny_model_cfg(), tiny_train_cfg(steps=4), seed=0, progress=False)
    cfg = train(tmp_path / "r", resume=True, steps=8, progress=False)
    assert cfg["step"] == 8 and cfg["train"]["steps"] == 8
    assert json.loads((tmp_path / "r" / "config.json").read_text())["step"] == 8
    elapsed = [r["elapsed_s"] for r in read_metrics(tmp_path / "r")]
    assert elapsed == sorted(elapsed) and elapsed[-1] > elapsed[len(elapsed) // 2 - 1]  # goes on across the resume


def test_refuses_to_clobber_or_resume_nothing(tmp_path):
    train(tmp_path / "r", tiny_task(), "teacherless", tiny_model_cfg(), tiny_train_cfg(steps=2), seed=0, progress=False)
    with pytest.raises(ConfigError, match="exists and is not empty; pass --overwrite"):
        train(tmp_path / "r", tiny_task(), "teacherless", tiny_model_cfg(), tiny_train_cfg(steps=2), seed=0, progress=False)
    train(tmp_path / "r", tiny_task(), "teacherless", tiny_model_cfg(), tiny_train_cfg(steps=2), seed=1, overwrite=True, progress=False)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["seed"] == 1
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tmp_path / "empty", resume=True, progress=False)


def test_derived_seeds_are_distinct_streams():
    seeds = {derived_seed(0, 0, k) for k in range(1000)} | {derived_seed(0, 1)} | {derived_seed(1, 0, 0)}
    assert len(seeds) == 1002 and all(0 <= s < 2**63 for s in seeds)


def test_bad_training_options_are_config_errors():
    with pytest.raises(ConfigError, match="steps must be at least 1"):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError, match="lr must be positive"):
        TrainConfig(lr=0)


@pytest.mark.parametrize("flag,value", [("--lr", "inf"), ("--lr", "nan"), ("--grad-clip", "nan"), ("--weight-decay", "nan"),
                                        ("--weight-decay", "-1")])
def test_non_finite_training_options_are_refused(tmp_path, capsys, flag, value):
    """Issue 14, defect 4: these trained to all-NaN weights with exit 0."""
    from hansprobe.cli import main

    try:
        code = main(["train", "--degree", "2", "--path-len", "4", "--nodes", "20", "--steps", "2", flag, value,
                     "--out", str(tmp_path / "run")])
    except SystemExit as e:  # argparse rejects the flag: one line, exit 2
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "finite" in err and "\n" not in err.strip()
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="finite"):
        tiny_train_cfg(lr=float("inf"))


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import json
    import math

    from hansprobe.checkpoint import load_checkpoint
    from hansprobe.objectives import Objective
    from hansprobe.train import NonFiniteLoss

    calls = {"n": 0}
    real = Objective.loss

    def flaky(self, logits, batch):
        calls["n"] += 1
        loss = real(self, logits, batch)
        return loss * float("nan") if calls["n"] == 7 else loss  # the 7th step's loss is NaN

    monkeypatch.setattr(Objective, "loss", flaky)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match="step 7.*last good checkpoint \\(step 4\\)"):
        train(out, tiny_task(), "teacher-forcing", tiny_model_cfg(), tiny_train_cfg(steps=12), seed=0, progress=False)
    ck = load_checkpoint(out)
    assert ck.config["step"] == 4 and all(bool(torch.isfinite(p).all()) for p in ck.model.parameters())
    for line in (out / "metrics.jsonl").read_text().splitlines():  # strict JSON: no NaN / Infinity tokens
        json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert math.isfinite(json.loads((out / "config.json").read_text())["metrics"]["train_loss"])
