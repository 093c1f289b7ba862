import math

import pytest
import torch

from hansprobe.mechanics.follow import measure_follow
from hansprobe.measurements.heads import _ablation_hooks, forced_accuracy, measure_heads, score_heads, score_patterns
from hansprobe.mechanics.patterns import REFERENCE_PATTERNS, edge_lookup, query_positions
from hansprobe.errors import ConfigError
from hansprobe.objectives import get_objective
from hansprobe.tasks import PathStar
from hansprobe.train import train

from helpers import tiny_model, tiny_model_cfg, tiny_task, tiny_train_cfg


def hand_built_attention(batch, objective, n_layers=1, n_heads=3):
    """(B, L, H, Q, T): head 0 puts all its mass on the separator after the edge (r_{i-1}, r_i),
    head 1 splits it between that edge's parent and child, head 2 is a uniform causal head."""
    q = query_positions(batch, objective)
    T = batch.prefix.shape[1] + batch.target.shape[1] - 1
    span = edge_lookup(batch, objective)
    att = torch.zeros(len(batch), n_layers, n_heads, len(q), T)
    att[:, 0, 0] = span["separator"].float()
    att[:, 0, 1] = 0.5 * span["parent"].float() + 0.5 * span["child"].float()
    causal = (torch.arange(T)[None, :] <= q[:, None]).float()
    att[:, 0, 2] = causal / causal.sum(-1, keepdim=True)
    return att


def test_scores_of_a_hand_built_pattern_are_exact():
    task, obj = PathStar(2, 5, 50), get_objective("teacher-forcing")
    b = task.generate(50, 0)
    s = score_patterns(hand_built_attention(b, obj), b, obj, REFERENCE_PATTERNS)
    e = s["edge_lookup"]
    assert e["separator"]["score"][0][0] == pytest.approx(1.0) and e["parent"]["score"][0][0] == pytest.approx(0.0)
    assert e["span"]["score"][0][0] == pytest.approx(1.0)
    assert e["parent"]["score"][0][1] == pytest.approx(0.5) and e["child"]["score"][0][1] == pytest.approx(0.5)
    assert e["separator"]["score"][0][1] == pytest.approx(0.0) and e["span"]["score"][0][1] == pytest.approx(1.0)
    # a uniform head scores exactly the uniform baseline: 3 of the q+1 visible keys at the shortcut
    # queries q = 28, 29 (label indices 2, 3; the last index, 4, is scored apart)
    expected = sum(3 / (q + 1) for q in (28, 29)) / 2
    assert e["span"]["score_last"][0][2] == pytest.approx(3 / 31)
    assert e["span"]["uniform"] == pytest.approx(expected) and e["span"]["score"][0][2] == pytest.approx(expected)
    # the child->parent edge of r_{i-1} is a different edge: the forward lookup head scores 0 there
    assert s["child_parent_lookup"]["span"]["score"][0][0] == pytest.approx(0.0)
    assert s["goal"]["token"]["score"][0][2] == pytest.approx(expected / 3)
    lo, hi = e["span"]["ci"][0][0]
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)


def test_reverse_targets_swap_which_edge_is_the_lookup():
    task, obj = PathStar(2, 5, 50), get_objective("reverse")
    b = task.generate(20, 1)
    span = REFERENCE_PATTERNS["child_parent_lookup"](b, obj)
    labels = obj.labels(b)
    pos = span["child"].float().argmax(-1)  # (B, Q): where the child token of the looked-up edge sits
    assert torch.equal(b.prefix.gather(1, pos), labels[:, 1:-1])  # the child is r_{i-1} ...
    ppos = span["parent"].float().argmax(-1)
    assert torch.equal(b.prefix.gather(1, ppos), labels[:, 2:])  # ... and its parent is the answer r_i


def test_patterns_are_read_from_the_model_at_the_right_queries():
    """Force a real model's attention with a hook and read it back through the analysis."""
    task, obj = tiny_task(), get_objective("teacher-forcing")
    b = task.generate(40, 2)
    model = tiny_model(task, n_layers=1)
    target = edge_lookup(b, obj)["separator"].float()  # (B, Q, T)
    q = query_positions(b, obj)

    seen = [0]  # graphs already passed: the analysis runs the batch in chunks

    def force(pattern, hook):
        pattern = pattern.clone()
        pattern[:, 0, q] = target[seen[0]: seen[0] + pattern.shape[0]]
        seen[0] += pattern.shape[0]
        return pattern

    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", force)]):
        s, _ = score_heads(model, obj, b, {"edge_lookup": edge_lookup}, batch_size=16)  # chunks of 16 graphs
    assert s["edge_lookup"]["separator"]["score"][0][0] == pytest.approx(1.0)
    assert s["edge_lookup"]["separator"]["score"][0][1] < 0.5


def test_ablation_hooks_zero_and_mean():
    task, obj = tiny_task(), get_objective("teacher-forcing")
    b = task.generate(30, 3)
    model = tiny_model(task, n_layers=2)
    clean = forced_accuracy(model, obj, b)
    one = b[:1]
    _, mean_one = score_heads(model, obj, one, {"edge_lookup": edge_lookup})  # the mean over one graph is its own z
    same = forced_accuracy(model, obj, one, heads=[(0, 0), (1, 1)], mean_z=mean_one)
    want = forced_accuracy(model, obj, one)  # the same up to float rounding (the mean is the bridge's z, the pass fused)
    assert same["forced_accuracy"] == want["forced_accuracy"]
    assert same["shortcut_logprob"] == pytest.approx(want["shortcut_logprob"], abs=1e-5)
    # zero-ablating every head equals a model whose attention output projections are zeroed
    heads = [(l, h) for l in range(2) for h in range(2)]
    x = obj.inputs(b)
    with model.hooks(fwd_hooks=_ablation_hooks(heads, "zero", None)):
        ablated = model(x)
    sd = model.state_dict()
    for l in range(2):
        sd[f"blocks.{l}.attn.o.weight"].zero_()
    assert torch.allclose(ablated, model(x), atol=1e-5)
    assert len(clean["forced_accuracy"]) == task.target_len and all(0 <= a <= 1 for a in clean["forced_accuracy"])
    assert clean["per_graph"].shape == (30,) and clean["per_graph_control"].shape == (30,)  # per graph, for the paired CIs


@pytest.mark.parametrize("layout", [{}, {"normalization": "RMS"}, {"attn_only": True}, {"n_layers": 3, "n_heads": 4}],
                         ids=["default", "rms", "attn-only", "3x4"])
@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_fused_ablation_from_the_first_ablated_block_equals_the_hooked_bridge(layout, mode):
    """The ablations run the fused forward from the first ablated block on the cached clean residual
    (decision 51): the same logits as the whole bridge under `hook_z` hooks, for heads in one block,
    in several, and in the last (whose queries run at the label positions only)."""
    from hansprobe.measurements.heads import _ablated_logits
    from hansprobe.fused import training_view

    task, obj = tiny_task(), get_objective("teacher-forcing")
    b = task.generate(24, 5)
    model = tiny_model(task, seed=2, **{"n_layers": 2, **layout}).eval()
    L, H = model.cfg.n_layers, model.cfg.n_heads
    _, mean_z = score_heads(model, obj, b, {"edge_lookup": edge_lookup})
    x = obj.inputs(b)
    _, cache = model.run_with_cache(x, names_filter=lambda n: n.endswith("hook_resid_pre"))
    resids = training_view(model).resid_pre(x)
    for l in range(L):  # the cached residuals are the bridge's
        assert (resids[l] - cache[f"blocks.{l}.hook_resid_pre"]).abs().max().item() < 1e-5
    noop = [("blocks.0.hook_resid_pre", lambda t, hook: t)]  # any hook on the model sends it through the bridge
    for heads in ([(0, 0)], [(L - 1, H - 1)], [(0, 1), (L - 1, 0)], [(l, h) for l in range(1, L) for h in range(H)]):
        with torch.no_grad():
            fused = _ablated_logits(model, obj, b, heads, mode, mean_z, lambda net: resids)
            with model.hooks(fwd_hooks=noop):
                hooked = _ablated_logits(model, obj, b, heads, mode, mean_z, None)
            clean = obj.forced_logits(model, b)
        assert fused.shape == hooked.shape == clean.shape
        assert (fused - hooked).abs().max().item() < 1e-5, heads
        assert (fused - clean).abs().max().item() > 1e-4  # the ablation changed something


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("heads") / "run"
    train(out, PathStar(2, 4, 16), "teacher-forcing", tiny_model_cfg(n_layers=2, d_model=64, n_heads=2),
          tiny_train_cfg(steps=150, batch_size=64, lr=3e-3, warmup_steps=10, eval_every=150, checkpoint_every=150),
          seed=0, progress=False)
    import hansprobe
    return hansprobe.load(out)


def test_measure_heads_end_to_end_on_a_tiny_trained_model(trained):
    model, task, obj = trained
    b = task.generate(200, 1234)
    r = measure_heads(model, obj, b, batch_size=64, extra_groups=[[(0, 0), (1, 1)]])
    assert len(r.heads) == 4 and {(h["layer"], h["head"]) for h in r.heads} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    scores = [h["edge_lookup_score"] for h in r.heads]
    assert scores == sorted(scores, reverse=True)
    # the mechanism is what the causal search found: its joint ablation reaches the threshold
    m = r.mechanism
    assert {tuple(h) for h in m["heads"]} == {(h["layer"], h["head"]) for h in r.heads if h["in_mechanism"]}
    # the typed contract between the measurement and the lookup question says exactly what is written
    from hansprobe.measurements.heads import Ablation, HeadRow, Mechanism

    assert set(m) == set(Mechanism.__annotations__)
    assert all(set(a) == set(Ablation.__annotations__) for a in r.ablations)
    assert all(set(h) == set(HeadRow.__annotations__) for h in r.heads)
    if m["found"]:
        assert m["ablation_drop"] >= r.thresholds["drop"] and set(m["reads"]) == {f"L{l}H{h}" for l, h in m["heads"]}
    else:
        assert m["heads"] == [] and (len(m["search"]) == min(r.thresholds["max_set"], 4)
                                     or r.baseline["shortcut_accuracy"] < r.thresholds["drop"])
    assert r.query_label_indices == [2] and r.last_label_index == 3
    kinds = {(a["kind"], a["mode"]) for a in r.ablations}
    assert {("head", "zero"), ("head", "mean"), ("layer", "mean"), ("group", "zero")} <= kinds
    assert r.follow is not None and set(r.follow["follow_rate_by_position"]) == {"2", "3"}
    assert set(r.patterns["prompt_roles"]) == {"separator", "child token"}
    assert set(r.figures()) >= {"edge_lookup_scores", "ablation", "edge_lookup_components"}


def test_bad_requests_are_config_errors(trained):
    model, task, _ = trained
    b = task.generate(10, 0)
    with pytest.raises(ConfigError, match="does not exist"):
        measure_heads(model, get_objective("teacher-forcing"), b, extra_groups=[[(2, 0)]])
    with pytest.raises(ConfigError, match="teacher-forced"):
        measure_heads(model, get_objective("teacherless"), b)


def test_follow_rate_of_a_pure_shortcut_oracle():
    """A model that answers child(r_{i-1}) from a lookup table follows every swap (and, at the last
    index, too), and answers the true r_i when nothing is swapped."""
    task, obj = PathStar(3, 5, 40), get_objective("teacher-forcing")
    b = task.generate(100, 4)

    class Lookup(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, tokens):
            from helpers import match_rows
            rows = match_rows(tokens, b.prefix)
            child = torch.full((len(tokens), task.d_vocab), task.pipe)
            child.scatter_(1, b.edge_parent[rows], b.edge_child[rows])
            nxt = child.gather(1, tokens.clamp(max=task.d_vocab - 1))  # (B, T): child of each token
            return torch.nn.functional.one_hot(nxt, task.d_vocab).float().log()

    r = measure_follow(Lookup(), obj, b, seed=0, batch_size=32)
    assert r.follow_rate == 1.0 and r.follow_rate_last == 1.0 and r.unchanged_accuracy == [1.0, 1.0, 1.0]
    assert r.follow_rate_ci[0] > 0.95
    assert all(v["true_next"] == 0.0 for v in r.control.values())  # a leaf has no child: no node answered
    assert not math.isnan(r.follow_rate_ci[1])
