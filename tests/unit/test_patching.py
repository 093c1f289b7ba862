import json

import numpy as np
import pytest
import torch

from hansprobe.measurements.patching import edge_order_pairs, goal_swap_pairs, measure_patching, metric_index
from hansprobe.cli import main
from hansprobe.errors import ConfigError
from hansprobe.objectives import get_objective
from hansprobe.train import train

from helpers import tiny_model, tiny_model_cfg, tiny_task, tiny_train_cfg


def test_goal_swap_pairs_line_up_and_differ_only_in_the_goal():
    b = tiny_task(3, 4, 30).generate(50, 0)
    clean, corr = goal_swap_pairs(b, seed=1)
    assert (clean.goal_arm != corr.goal_arm).all()
    diff = (clean.prefix != corr.prefix).any(0).nonzero().flatten().tolist()
    assert diff == [clean.prefix.shape[1] - 2]  # only the goal token
    assert torch.equal(clean.edge_parent, corr.edge_parent)
    assert metric_index(get_objective("teacher-forcing"), clean, corr) == 1
    assert metric_index(get_objective("reverse"), clean, corr) == 0  # reversed targets start with the goal


def test_edge_order_pairs_keep_the_graph_and_goal():
    b = tiny_task().generate(20, 0)
    clean, corr = edge_order_pairs(b, seed=3)
    assert torch.equal(clean.target, corr.target) and not torch.equal(clean.prefix, corr.prefix)
    for r in range(20):
        assert set(zip(clean.edge_parent[r].tolist(), clean.edge_child[r].tolist())) == \
            set(zip(corr.edge_parent[r].tolist(), corr.edge_child[r].tolist()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny reverse model: its first answer token copies the goal, a large clean-corrupted gap."""
    out = tmp_path_factory.mktemp("patch") / "run"
    train(out, tiny_task(), "reverse", tiny_model_cfg(n_layers=2), tiny_train_cfg(steps=60, eval_every=60, checkpoint_every=60),
          seed=0, progress=False)
    return out


def test_known_answer_only_the_goal_position_restores_at_the_embeddings(trained):
    """Clean and corrupted inputs differ only at the goal token (before the metric position), so for
    any model: patching the embedding residual at the goal position restores the clean metric
    exactly (normalised 1) and every other position changes nothing (0); at the last layer only the
    metric position itself restores it, completely."""
    import hansprobe

    model, task, obj = hansprobe.load(trained)
    r = measure_patching(model, obj, task.generate(40, 0), sweeps=("resid",), directions=("sufficiency", "necessity"))
    assert r.measurable, r.verdict
    assert r.metric_label_index == 0 and r.metric_position == task.prefix_len - 1
    goal = task.prefix_len - 2
    for direction in ("sufficiency", "necessity"):
        z = np.array(r.sweeps["resid"][direction]["normalized"])
        expected0 = np.zeros(r.metric_position + 1)
        expected0[goal] = 1.0
        assert np.allclose(z[0, : r.metric_position + 1], expected0, atol=1e-4), direction
    assert r.position_labels[goal] == "goal" and len(r.position_labels) == task.n_ctx


@pytest.mark.parametrize("sweep", ["resid", "attn", "heads-by-pos"])
def test_a_sweep_runs_only_the_cells_that_can_move_the_metric_and_equals_the_full_sweep(trained, sweep):
    """The library's whole grid, every cell run, against the cells given to it as `index_df` (those
    up to the metric position whose patched-in activation differs from the run's own) with the
    unpatched values elsewhere: the same per-pair values and intervals, from fewer forward passes."""
    import hansprobe
    from transformer_lens import patching as tlp

    from hansprobe.measurements.patching import PER_POSITION, _by_position_sweep, _kl_metric, _logit_diff_metric

    model, task, obj = hansprobe.load(trained)
    clean, corr = goal_swap_pairs(task.generate(30, 2), seed=0)
    k = metric_index(obj, clean, corr)
    pos = clean.prefix.shape[1] - 1 + k
    clean_x, corr_x = obj.inputs(clean), obj.inputs(corr)
    _, clean_cache = model.run_with_cache(clean_x)
    corr_logits, corr_cache = model.run_with_cache(corr_x)
    metrics = {"logit_diff": _logit_diff_metric(pos, obj.labels(clean)[:, k], obj.labels(corr)[:, k]),
               "kl": _kl_metric(pos, corr_logits[:, pos].float().log_softmax(-1))}
    fn = {"resid": tlp.get_act_patch_resid_pre, "attn": tlp.get_act_patch_attn_out,
          "heads-by-pos": tlp.get_act_patch_attn_head_out_by_pos}[sweep]
    full = fn(model, corr_x, clean_cache, metrics, reduce="none", baseline=True)  # (M, L, T[, H], B)
    ran = []

    def counted(*args, **kwargs):
        ran.append(len(kwargs["index_df"]))
        return fn(*args, **kwargs)

    sparse = _by_position_sweep(tlp, counted, model, corr_x, clean_cache, corr_cache, metrics, PER_POSITION[sweep], pos)
    assert sparse.values.shape == full.values.shape and sparse.axis_names == full.axis_names
    torch.testing.assert_close(sparse.values, full.values, rtol=0, atol=1e-5)
    for a, b in zip(sparse["logit_diff"].bootstrap_ci(seed=3), full["logit_diff"].bootstrap_ci(seed=3)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert 0 < ran[0] < full.values[0, ..., 0].numel()  # the cells before the goal and after the metric were not run


def test_fused_shortcut_patching_gives_the_hooked_bridges_rates(trained):
    """Fused, the patched position runs alone from the patched block on the clean keys and values;
    with a (no-op) hook on the model it is the bridge with a resid_pre hook, a whole pass per layer."""
    import hansprobe

    from hansprobe.measurements.patching import shortcut_patching

    model, task, obj = hansprobe.load(trained)
    b = task.generate(60, 5)
    fused = shortcut_patching(model, obj, b, seed=2)
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: x)]):
        hooked = shortcut_patching(model, obj, b, seed=2)
    assert fused.to_dict() == hooked.to_dict()
    assert len({r for rates in fused.move_rate.values() for r in rates}) > 1  # the rates differ across layers/indices


def test_no_gap_is_reported_instead_of_noise():
    """A model that cannot see the goal (its embedding zeroed by a hook) has nothing to restore:
    the analysis says so and draws no sweep."""
    task = tiny_task()
    obj = get_objective("teacher-forcing")

    model = tiny_model(task)
    b = task.generate(30, 0)
    goal = task.prefix_len - 2

    def blind_goal(x, hook):
        x = x.clone()
        x[:, goal] = 0.0
        return x

    with model.hooks(fwd_hooks=[("hook_embed", blind_goal)]):
        r = measure_patching(model, obj, b, sweeps=("resid",))
    assert not r.measurable and "no decision computation to restore" in r.verdict and r.sweeps == {}
    assert abs(r.gap) < 1e-5


def test_all_sweeps_and_shortcut_patching_on_a_trained_model(trained, capsys):
    import hansprobe

    model, task, obj = hansprobe.load(trained)
    r = measure_patching(model, obj, task.generate(30, 1), sweeps=("resid", "attn", "mlp", "heads", "heads-by-pos"))
    s = r.shortcut
    assert set(s["move_rate"]) == {"2", "3"} and all(len(v) == 2 for v in s["move_rate"].values())
    if r.measurable:
        assert set(r.sweeps) == {"resid", "attn", "mlp"} and np.array(r.heads["sufficiency"]["normalized"]).shape == (2, 2)
        assert np.array(r.heads_by_pos["sufficiency"]["normalized"]).shape == (2, task.n_ctx, 2)
        assert r.top and set(r.figures())
    assert main(["patch", str(trained), "-n", "20", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_pairs"] == 20 and "gap" in res and res["shortcut"]["move_rate"]
    with pytest.raises(SystemExit) as e:  # argparse rejects the choice: one line, exit 2
        main(["patch", str(trained), "-n", "20", "--sweep", "blocks"])
    assert e.value.code == 2


def test_bad_patching_requests():
    task = tiny_task()
    with pytest.raises(ConfigError, match="unknown sweep"):
        measure_patching(tiny_model(task), get_objective("teacher-forcing"), task.generate(5, 0), sweeps=("everything",))
    with pytest.raises(ConfigError, match="goal-swap pairs need a choice"):
        goal_swap_pairs(tiny_task(1, 4, 20).generate(5, 0))
