"""The plan-depth profile and the plan question (issue 23 part 4): the sub-goal chain at every block
input, the whole search's null, a causal check, and answers that a planner can pass."""

import numpy as np
import pytest
import torch

from hansprobe.questions.plan import AT, BEFORE, CAUSAL_MIN, PLAN_SELECTIVITY, plan_verdict
from hansprobe.measurements.plan_depth import _search, measure_plan_depth, targets
from hansprobe.model import build_model
from hansprobe.objectives import get_objective
from hansprobe.tasks import PathStar
from helpers import REPO, tiny_model, tiny_model_cfg

CHECKPOINTS = REPO / "checkpoints"


# --- the targets ---------------------------------------------------------------------------------
def test_the_chain_runs_from_the_goals_parent_to_the_decision_node():
    b = PathStar(degree=3, path_len=5, n_nodes=30).generate(64, 0)
    ts = targets(b)
    assert [t.name for t in ts] == ["hop 1", "hop 2", "decision node"]  # standard layout: no edge target
    for t in ts:
        assert (t.labels == b.target[:, t.index].numpy()).all()
        assert (t.candidates == t.labels[:, None]).any(1).all()  # the answer is among the d candidates
        assert t.candidates.shape[1] == 3 and t.chance == pytest.approx(1 / 3)
    gf = targets(PathStar(degree=2, path_len=4, n_nodes=20, goal_first=True).generate(32, 0))
    assert gf[-1].name == "edge on goal path" and gf[-1].labels.shape == (32, 6)
    assert (np.sort(gf[-1].labels, 1)[:, -3:] == [1, 2, 3]).all()  # the goal arm's three edges, counted from the goal
    assert ((gf[-1].labels == 0).sum(1) == 3).all() and gf[-1].chance == pytest.approx(0.5)


# --- the whole search's null ---------------------------------------------------------------------
def test_the_whole_search_null_holds_its_level_on_cells_with_no_information():
    """Every cell right by chance: the selected cell's p-value must be (about) uniform, however many
    cells are searched — the max statistic, not a per-cell test."""
    rejections = []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        cells = {(c, 0): (rng.random((50, 60)) < 0.5, rng.random((50, 60)) < 0.5) for c in range(12)}
        rejections.append(_search(cells)[1]["null_p"] <= 0.05)
    rate = np.mean(rejections)
    assert rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 300), rate


def test_the_search_finds_a_cell_with_information_and_measures_it_on_other_graphs():
    rng = np.random.default_rng(0)
    cells = {(c, 0): (rng.random((50, 80)) < 0.5, rng.random((50, 80)) < 0.5) for c in range(12)}
    good_sel, good_ev = rng.random((50, 80)) < 0.5, rng.random((50, 80)) < 0.5
    good_sel[0], good_ev[0] = rng.random(80) < 0.9, rng.random(80) < 0.9  # the true labelling only
    cells[(5, 0)] = (good_sel, good_ev)
    key, s = _search(cells)
    assert key == (5, 0) and s["null_p"] <= 0.05
    assert s["accuracy"] == pytest.approx(good_ev[0].mean())  # reported on the evaluation graphs
    assert s["selectivity_ci"][0] > 0.2


# --- the rule on constructed evidence ----------------------------------------------------------
def _search_row(target, kind, layer, position, p=0.02, sel=(0.4, 0.5), acc=0.95):
    return {"target": target, "label": target, "kind": kind, "layer": layer, "position_label": position, "chance": 0.5,
            "accuracy": acc, "accuracy_ci": [acc - 0.03, acc + 0.02], "selectivity": sum(sel) / 2,
            "selectivity_ci": list(sel), "null_p": p, "cells_searched": 10, "positions": [0]}


def _causal(value, ci, rand=(-0.02, 0.02), whole=(0.0, 0.1)):
    return {"probe_directions": {"normalized": value, "ci": list(ci)}, "random_directions": {"normalized": 0.0, "ci": list(rand)},
            "whole_residual": {"normalized": sum(whole) / 2, "ci": list(whole)}, "layer": 2, "positions": [0], "n_pairs": 250,
            "gap": 10.0, "gap_ci": [9.0, 11.0]}


def _profile(searches, causal=None, gap=(9.0, 11.0), blocks=4, hops=3, **kw):
    return {"applicable": "", "searches": searches, "causal": causal or {}, "n_eval": 250, "hops": hops,
            "blocks": list(range(blocks)), "inert_blocks": [], "layers": list(range(blocks)), "objective": "teacher-forcing",
            "gap": sum(gap) / 2, "gap_ci": list(gap), "n_pairs": 250, "profile": {}, **kw}


def test_a_used_sub_goal_before_the_answer_is_a_plan_formed_before_the_answer():
    s = {"hop 1|before": _search_row("hop 1", "before", 1, "="), "hop 2|before": _search_row("hop 2", "before", 2, "=")}
    v = plan_verdict(_profile(s, {"hop 2|before": _causal(0.6, (0.5, 0.7))}))
    assert v["answer"] == BEFORE and v["values"]["target"] == "hop 2" and v["values"]["layer"] == 2
    assert v["values"]["chain_found"] == ["hop 1", "hop 2"]


def test_the_chain_is_tested_in_order_so_a_deeper_hop_without_its_parent_is_not_found():
    s = {"hop 1|before": _search_row("hop 1", "before", 1, "=", p=0.3, sel=(-0.05, 0.05)),
         "hop 2|before": _search_row("hop 2", "before", 2, "=")}
    v = plan_verdict(_profile(s, {"hop 2|before": _causal(0.6, (0.5, 0.7))}))
    assert v["answer"] == AT  # the goal still moves the decision: computed at the answer position
    assert v["values"]["chain_found"] == []


@pytest.mark.parametrize("causal", [None, _causal(0.2, (CAUSAL_MIN - 0.1, 0.3)), _causal(0.6, (0.5, 0.7), rand=(0.4, 0.8))])
def test_a_readable_sub_goal_that_is_not_shown_used_is_not_a_plan(causal):
    s = {"hop 1|before": _search_row("hop 1", "before", 1, "=")}
    v = plan_verdict(_profile(s, {"hop 1|before": causal} if causal else {}))
    assert v["answer"] == AT and "not shown used" in v["evidence"]


def test_the_whole_residual_counts_away_from_the_goal_token_only():
    """The pair differs only in the goal token: its own residual restores any goal-reading model."""
    whole = _causal(0.0, (-0.01, 0.01), whole=(0.9, 1.0))
    at_eq = {"hop 1|before": _search_row("hop 1", "before", 1, "=")}
    at_goal = {"hop 1|before": _search_row("hop 1", "before", 1, "goal")}
    assert plan_verdict(_profile(at_eq, {"hop 1|before": whole}))["answer"] == BEFORE
    assert plan_verdict(_profile(at_goal, {"hop 1|before": whole}))["answer"] == AT
    assert plan_verdict(_profile(at_goal, {"hop 1|before": _causal(0.6, (0.5, 0.7))}))["answer"] == BEFORE


def test_selectivity_below_its_bar_is_not_read_even_with_a_small_null_p():
    s = {"hop 1|before": _search_row("hop 1", "before", 1, "=", sel=(PLAN_SELECTIVITY - 0.05, 0.3))}
    assert plan_verdict(_profile(s, {"hop 1|before": _causal(0.6, (0.5, 0.7))}))["answer"] == AT


@pytest.mark.parametrize("blocks,hops,answer", [(4, 3, "no"), (3, 3, "no"), (2, 3, "not applicable"), (1, 2, "not applicable")])
def test_a_decision_that_ignores_the_goal_is_no_or_not_applicable_by_depth(blocks, hops, answer):
    s = {"hop 1|before": _search_row("hop 1", "before", 0, "goal", p=0.5, sel=(-0.05, 0.05), acc=0.5)}
    v = plan_verdict(_profile(s, gap=(-0.01, 0.01), blocks=blocks, hops=hops))
    assert v["answer"] == answer
    if answer == "not applicable":
        assert f"{blocks} block" in v["evidence"] and f"{hops} backward hops" in v["evidence"]
        assert v["values"]["blocks"] == blocks and v["values"]["hops"] == hops


def test_the_edge_family_shares_the_level_with_the_chain():
    edge = _search_row("edge on goal path", "before", 1, "each edge's child token", p=0.04)
    v = plan_verdict(_profile({"edge on goal path|before": edge}, {"edge on goal path|before": _causal(0.5, (0.4, 0.6))}))
    assert v["answer"] == AT  # p = 0.04 > 0.05 / 2: two families
    edge["null_p"] = 0.02
    assert plan_verdict(_profile({"edge on goal path|before": edge},
                                 {"edge on goal path|before": _causal(0.5, (0.4, 0.6))}))["answer"] == BEFORE


# --- the analysis on models ----------------------------------------------------------------------
def _with_null_blocks(model, task, extra: int):
    """The same model with `extra` blocks appended that compute nothing (W_O = W_out = 0, biases 0)."""
    n = model.cfg.n_layers
    big = build_model(tiny_model_cfg(n_layers=n + extra), task.d_vocab, task.n_ctx, 0, device="cpu", dtype=torch.float32)
    sd = big.state_dict()
    for k, v in model.state_dict().items():
        sd[k] = v.clone()
    for i in range(n, n + extra):
        for name in ("attn.o.weight", "attn.o.bias", "mlp.out.weight", "mlp.out.bias"):
            sd[f"blocks.{i}.{name}"] = torch.zeros_like(sd[f"blocks.{i}.{name}"])
    big.load_state_dict(sd)
    return big.eval()


@pytest.mark.parametrize("n_layers", [1, 2])
def test_appending_blocks_that_compute_nothing_changes_nothing(n_layers):
    task = PathStar(degree=2, path_len=4, n_nodes=20)  # two hops: one block is too shallow, two are not
    model = tiny_model(task, n_layers=n_layers).eval()
    big = _with_null_blocks(model, task, 2)
    obj = get_objective("teacher-forcing")
    b = task.generate(120, 3)
    small_r, big_r = (measure_plan_depth(m, obj, b, seed=0, shuffles=9).to_dict() for m in (model, big))
    assert big_r["inert_blocks"] == [n_layers, n_layers + 1] and big_r["blocks"] == small_r["blocks"]
    assert big_r["searches"] == small_r["searches"]
    small_v, big_v = plan_verdict(small_r), plan_verdict(big_r)
    assert small_v["answer"] == big_v["answer"] == ("not applicable" if n_layers == 1 else "no")


def test_reversed_targets_are_not_applicable():
    task = PathStar(degree=2, path_len=4, n_nodes=20)
    r = measure_plan_depth(tiny_model(task).eval(), get_objective("reverse"), task.generate(60, 0), shuffles=3)
    assert "reversed targets" in r.applicable and plan_verdict(r.to_dict())["answer"] == "not applicable"


def test_the_shipped_planners_are_located_and_the_shipped_failure_is_not():
    """The goal-first 4-layer G(2,3) control marks the edges into the goal before the answer and the
    decision reads them; G(2,3) in the standard layout (2 layers): at the answer position; the
    2-layer G(2,5) failure: too shallow for three hops and the decision ignores the goal."""
    from hansprobe.checkpoint import load_checkpoint

    got = {}
    for name in ("controls/pathstar-d2-l3-n50-goal-first-4layers", "controls/pathstar-d2-l3-n50-teacher-forcing",
                 "pathstar-d2-l5-n50-teacher-forcing"):
        if not (CHECKPOINTS / name / "config.json").is_file():
            pytest.skip(f"{name} is not shipped in this clone")
        ck = load_checkpoint(CHECKPOINTS / name, device="cpu")
        r = measure_plan_depth(ck.model, ck.objective, ck.task.generate(400, 1234), seed=1234)
        got[name] = plan_verdict(r.to_dict())["answer"]
    assert got == {"controls/pathstar-d2-l3-n50-goal-first-4layers": BEFORE, "controls/pathstar-d2-l3-n50-teacher-forcing": AT,
                   "pathstar-d2-l5-n50-teacher-forcing": "not applicable"}


def test_the_plan_rule_applies_the_thresholds_it_is_handed():
    s = {"hop 1|before": _search_row("hop 1", "before", 1, "=", sel=(0.2, 0.3))}
    pd = _profile(s, {"hop 1|before": _causal(0.6, (0.5, 0.7))})
    from hansprobe.questions.registry import registered_thresholds

    t = registered_thresholds("plan_represented")
    assert plan_verdict(pd)["answer"] == plan_verdict(pd, t)["answer"] == BEFORE
    assert plan_verdict(pd, {**t, "plan_selectivity": 0.25})["answer"] != BEFORE  # the selectivity CI 0.2 no longer clears it
    assert plan_verdict(pd, {**t, "plan_causal_min": 0.55})["answer"] != BEFORE  # nor the restored share 0.5
