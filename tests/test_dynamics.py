import pytest

from hansprobe.analyses import measure_dynamics
from hansprobe.errors import CheckpointError
from hansprobe.train import train

from helpers import tiny_model_cfg, tiny_task, tiny_train_cfg


def test_dynamics_measures_every_snapshot_and_the_final_weights(tmp_path):
    run = tmp_path / "r"
    train(run, tiny_task(), "teacher-forcing", tiny_model_cfg(),
          tiny_train_cfg(steps=30, snapshot_at=[1, 10, 20], eval_every=10, checkpoint_every=10, lr=5e-3), seed=0, progress=False)
    assert sorted(f.name for f in (run / "snapshots").iterdir()) == [
        "step-000001.safetensors", "step-000010.safetensors", "step-000020.safetensors"]
    res = measure_dynamics(run, tiny_task().generate(200, 1234))
    assert res.steps == [1, 10, 20, 30]
    assert len(res.forced_accuracy) == 4 and all(len(row) == 4 for row in res.forced_accuracy)
    assert res.logged["steps"] == [10, 20, 30]
    for p, step in enumerate(res.learned_at):  # learned_at is the first measured step at >= 0.9
        hits = [s for s, row in zip(res.steps, res.forced_accuracy) if row[p] >= 0.9]
        assert step == (hits[0] if hits else None)
    assert sorted(res.learning_order) == [0, 1, 2, 3]
    # copying the start token is learned before the decision token
    assert res.learning_order.index(0) < res.learning_order.index(1)
    assert res.forced_accuracy[0][0] < 0.5  # after one step nothing is learned yet
    assert "learning_order" in res.figures()


def test_dynamics_needs_weights(tmp_path):
    run = tmp_path / "r"
    train(run, tiny_task(), "teacher-forcing", tiny_model_cfg(), tiny_train_cfg(steps=2), seed=0, progress=False)
    (run / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="--snapshot-at"):
        measure_dynamics(run, tiny_task().generate(10, 0))
