"""The objectives and training options beside teacher forcing / teacherless / reverse: the
partial-teacherless masks, the multi-token heads, structured samples and the goal-first layout."""
import json
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from scipy import stats

from hansprobe.checkpoint import load_checkpoint, read_metrics
from hansprobe.cli import main
from hansprobe.errors import ConfigError, TaskError
from hansprobe.multitoken import ExtraHeads, extra_loss
from hansprobe.objectives import get_objective
from hansprobe.tasks import PathStar, Tree, format_ntf_lines, parse_ntf_lines
from hansprobe.train import TrainConfig, train, training_batch

from helpers import tiny_model_cfg, tiny_task, tiny_train_cfg

TINY = ["--degree", "2", "--path-len", "4", "--nodes", "20"]
TRAIN = ["train", *TINY, "--n-layers", "1", "--d-model", "32", "--n-heads", "2", "--batch-size", "16",
         "--eval-every", "4", "--eval-graphs", "32", "--checkpoint-every", "4", "--json"]


# --- partial-teacherless ----------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_partial_teacherless_masks_each_slot_with_probability_p(p):
    task = PathStar(2, 6, 30)
    batch = task.generate(2000, 0)
    obj = get_objective("partial-teacherless", {"p": p})
    x = obj.inputs(batch, torch.Generator().manual_seed(1))
    slots = x[:, task.prefix_len:]  # (B, L-1)
    masked = slots == task.dummy
    true = get_objective("teacher-forcing").inputs(batch)[:, task.prefix_len:]
    assert torch.equal(slots[~masked], true[~masked])  # what is not masked is the true prefix
    k, n = int(masked.sum()), masked.numel()
    lo, hi = stats.binomtest(k, n).proportion_ci(0.999)  # the share of `$` is p, within sampling error
    assert lo <= p <= hi
    assert torch.equal(x, obj.inputs(batch, torch.Generator().manual_seed(1)))  # the same generator, the same masks
    assert torch.equal(obj.inputs(batch), get_objective("teacher-forcing").inputs(batch))  # evaluation: true prefix
    if p == 1.0:
        assert torch.equal(x, get_objective("teacherless").inputs(batch))


def test_objective_options_are_checked():
    for name, opts, needle in [("partial-teacherless", {"p": 1.5}, "in [0, 1]"), ("multi-token", {"k": 0}, "1..16"),
                               ("teacher-forcing", {"p": 0.5}, "takes no option 'p'"), ("multi-token", {"q": 1}, "unknown")]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            get_objective(name, opts)


# --- multi-token ------------------------------------------------------------------------------------
def test_extra_heads_predict_the_tokens_after_next():
    heads = ExtraHeads(2, 8, 11, seed=0)
    resid = torch.randn(3, 9, 8)
    labels = torch.randint(0, 11, (3, 4))
    first = 4  # label i is predicted at position first + i
    logits = torch.einsum("btd,kdv->kbtv", resid, heads.weight)
    want = sum(F.cross_entropy(logits[j - 1, :, first:first + 4 - j].reshape(-1, 11), labels[:, j:].reshape(-1))
               for j in (1, 2))
    assert torch.allclose(extra_loss(heads, resid, labels, first), want)


def test_multi_token_training_keeps_the_hooked_model_and_resumes_bit_identically(tmp_path):
    task, obj = tiny_task(), get_objective("multi-token", {"k": 2})
    full, part = tmp_path / "full", tmp_path / "part"
    cfg = dict(steps=8, eval_every=2, checkpoint_every=4)
    train(full, task, obj, tiny_model_cfg(), tiny_train_cfg(**cfg), seed=3, progress=False)

    def crash_at_step_6(model, objective, batch):  # the evaluation after step 6: past the step-4 checkpoint
        if len(read_metrics(part)) == 2:
            raise KeyboardInterrupt
        return objective.evaluate(model, batch)
    with pytest.raises(KeyboardInterrupt):
        train(part, task, obj, tiny_model_cfg(), tiny_train_cfg(**cfg), seed=3, progress=False, evaluate=crash_at_step_6)
    train(part, resume=True, progress=False)
    for name in ("model.safetensors", "extra_heads.safetensors"):
        a, b = load_file(full / name), load_file(part / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    heads = load_file(full / "extra_heads.safetensors")["weight"]
    assert heads.shape == (2, 32, task.d_vocab)
    plain = tmp_path / "plain"
    train(plain, task, "teacher-forcing", tiny_model_cfg(), tiny_train_cfg(steps=4), seed=3)
    assert load_file(plain / "model.safetensors").keys() == load_file(full / "model.safetensors").keys()
    ck = load_checkpoint(full)  # the hooked model alone; analyses read its main head
    assert ck.objective.extra_heads == 2 and ck.config["objective_options"] == {"k": 2}
    assert "objective_options" not in json.loads((plain / "config.json").read_text())


# --- structured samples -----------------------------------------------------------------------------
@pytest.mark.parametrize("task", [PathStar(3, 4, 30), Tree(2, 3, 40)])
def test_structured_samples_repeat_each_graph_with_different_goals(task):
    cfg = TrainConfig(batch_size=12, structured_samples=3, steps=5)
    batch = training_batch(task, cfg, seed=0, step=2)
    assert len(batch) == 12
    edges = torch.stack([batch.edge_parent, batch.edge_child], -1).view(4, 3, -1, 2)
    assert (edges == edges[:, :1]).all()  # the same graph, the same edge order, three times
    goals = batch.goal.view(4, 3)
    assert all(len(set(row.tolist())) == 3 for row in goals)  # three different goals
    same = training_batch(task, cfg, seed=0, step=2)
    assert torch.equal(same.prefix, batch.prefix)
    plain = training_batch(task, TrainConfig(batch_size=12), seed=0, step=2)
    assert torch.equal(plain.prefix, task.generate(12, __import__("hansprobe.train", fromlist=["x"]).derived_seed(0, 0, 2)).prefix)


def test_structured_samples_are_checked():
    with pytest.raises(ConfigError, match="multiple of structured-samples"):
        TrainConfig(batch_size=10, structured_samples=3)
    with pytest.raises(TaskError, match="has only 2 goals"):
        training_batch(PathStar(2, 4, 20), TrainConfig(batch_size=12, structured_samples=3), 0, 0)


# --- goal first -------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", [PathStar(2, 5, 30, goal_first=True), Tree(2, 3, 40, goal_first=True)])
def test_goal_first_layout(task):
    b = task.generate(50, 0)
    p = task.prefix_len
    assert (b.prefix[:, 0] == b.start).all() and (b.prefix[:, 1] == b.goal).all()
    assert (b.prefix[:, 2] == task.slash).all() and (b.prefix[:, p - 1] == task.equals).all()
    assert (b.prefix.gather(1, b.edge_parent_pos) == b.edge_parent).all()
    assert (b.prefix.gather(1, b.edge_child_pos) == b.edge_child).all()
    assert (b.edge_sep_pos[:, -1] == p - 1).all() and (b.prefix.gather(1, b.edge_sep_pos[:, :-1]) == task.pipe).all()
    plain = type(task)(**{k: v for k, v in task.to_dict().items() if k not in ("name", "goal_first")}).generate(50, 0)
    assert torch.equal(plain.target, b.target)  # the same graphs, only laid out differently
    if isinstance(task, PathStar):  # the text format is the graph's: it reads back into the goal-first layout
        again = parse_ntf_lines(format_ntf_lines(b), task)
        assert torch.equal(again.prefix, b.prefix)


def test_the_cli_trains_every_option(tmp_path, capsys):
    for extra, check in [(["--objective", "partial-teacherless", "--teacherless-p", "0.25"],
                          lambda c: c["objective_options"] == {"p": 0.25}),
                         (["--objective", "multi-token", "--extra-heads", "2"], lambda c: c["objective_options"] == {"k": 2}),
                         (["--structured-samples", "2"], lambda c: c["train"]["structured_samples"] == 2),
                         (["--goal-first"], lambda c: c["task"]["goal_first"] is True)]:
        out = tmp_path / "_".join(extra).strip("-")
        assert main([*TRAIN, "--steps", "4", *extra, "--out", str(out)]) == 0
        assert check(json.loads(capsys.readouterr().out))
    code = main([*TRAIN, "--steps", "4", "--teacherless-p", "0.5", "--out", str(tmp_path / "bad")])
    assert code == 2 and "takes no option 'p'" in capsys.readouterr().err
