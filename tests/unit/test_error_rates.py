"""Issue 36: answers whose error rates are controlled and measured. Each test names the review item
it holds and fails on the rules before it (the headline's below-chance "decided", the failure's
"ignores the goal", the lookup's "no" from missing evidence, the plan's "used", ...). The harness
that measures the rates over graph draws: tests/end_to_end/test_calibrate.py."""
import math

import pytest
import torch

from hansprobe.measurements.entropy import decide, equivalence_test
from hansprobe.questions.indecipherable import indecipherable_verdict
from hansprobe.questions.failure import failure_verdict
from hansprobe.measurements.goal_dependence import FAMILY_ALPHA, measure_goal_dependence, route_alpha
from hansprobe.questions.decision_computed import decision_verdict
from hansprobe.measurements.heads import control_indices, max_set
from hansprobe.questions.lookup import lookup_verdict
from hansprobe.questions.plan import BEFORE, plan_verdict
from hansprobe.calibrate import decision_verdicts
from helpers import REPO, heads_summary
from hansprobe.constructed import CONSTRUCTED, RuleModel
from hansprobe.objectives import get_objective
from hansprobe.tasks import PathStar

TF = get_objective("teacher-forcing")


def _absent_gd():
    task = PathStar(2, 5, 50)
    return measure_goal_dependence(RuleModel(task, TF, lambda s: torch.zeros(len(s["goal"]), 2)), TF, task.generate(300, 0))


# --- part 1: the family-wise error of "decided" ---------------------------------------------------
@pytest.mark.parametrize("k,n", [(468, 1000), (465, 1000), (1044, 2000)])
def test_a_sample_off_chance_without_a_goal_effect_is_not_decided(k, n):
    """The review's draws of a model at chance that ignores the goal: 0.468 [0.437, 0.499] at n = 1,000
    (below chance), 0.522 [0.501, 0.544] at n = 2,000 (above, one-sided p = 0.025). The old rule called
    each "decided" (a two-sided 95% CI that excludes 1/2); below chance is no route, and above chance
    must clear its share of the family-wise 1%."""
    out, why = decide(0.5, math.log(2), k, n, equivalence_test(k, n, 0.5), (-0.02, 0.01), -0.03, 1.0, _absent_gd())
    assert out == "indecipherable", why


def test_the_routes_share_one_family_wise_level():
    assert route_alpha(2) == pytest.approx(FAMILY_ALPHA / 4) and route_alpha(1) == pytest.approx(FAMILY_ALPHA / 3)
    k = 1060  # 0.530 at n = 2,000: one-sided p ~ 0.004, above each route's 0.0025
    out, _ = decide(0.5, math.log(2), k, 2000, equivalence_test(k, 2000, 0.5), (-0.02, 0.01), -0.03, 1.0, _absent_gd())
    assert out == "indecipherable"
    k = 1080  # 0.540: p ~ 1e-4
    out, why = decide(0.5, math.log(2), k, 2000, equivalence_test(k, 2000, 0.5), (-0.02, 0.01), -0.03, 1.0, _absent_gd())
    assert out == "decided" and "above chance" in why and "0.01 over all" in why


def test_a_decision_away_from_the_goal_is_decided_by_its_signed_effect():
    """Below chance *with* a goal effect away from the goal is a decision: the goal-swap test says so."""
    c = CONSTRUCTED["away-0.2"]
    b = c.task().generate(2000, 3)
    v = decision_verdicts(c.model(TF), TF, b, 3, [2000])[2000]
    assert v["indecipherable"]["answer"] == "no" and "away from it" in v["indecipherable"]["evidence"]
    assert v["decision_computed"]["answer"] == "no"


def test_the_small_signals_are_still_detected_at_2000_graphs():
    for name in ("signal-0.05", "signal-0.2"):
        c = CONSTRUCTED[name]
        v = decision_verdicts(c.model(TF), TF, c.task().generate(2000, 11), 11, [2000])[2000]
        assert v["indecipherable"]["answer"] == "no", name


# --- item 5: "ignores the goal" when the goal moves it --------------------------------------------
def test_the_failure_names_a_goal_effect_that_is_not_toward_the_goal():
    """A decision that flips with the goal label's parity: |Δ| 0.4 on every goal swap, signed mean ~0.
    The old failure verdict said "at chance and ignores the goal"."""
    c = CONSTRUCTED["goal-parity"]
    lookup = {"answer": "yes", "evidence": "given", "values": {}}
    v = decision_verdicts(c.model(TF), TF, c.task().generate(2000, 5), 5, [2000], given={"lookup": lookup})[2000]
    f = v["clever_hans_failure"]
    assert f["answer"] == "yes" and "ignores the goal" not in f["evidence"]
    assert "though the goal moves it (goal-swap pairs move its candidate log-odds by |Δ| 0.19" in f["evidence"]
    assert "arm-rewire pairs move its candidate log-odds by |Δ| 0.4" in f["evidence"]
    assert f["values"]["goal_moves_it"] is True
    null = CONSTRUCTED["null-lowest-label"]  # a preference that does not read the goal: Δ = 0 on every goal swap
    v = decision_verdicts(null.model(TF), TF, null.task().generate(2000, 5), 5, [2000], given={"lookup": lookup})[2000]
    assert "ignores the goal" in v["clever_hans_failure"]["evidence"]


# --- item 6 and 8: the lookup -----------------------------------------------------------------------
def _heads(found=False, follow=(0.52, 0.45, 0.60), drop_ci=None):
    return heads_summary(found, follow, drop=0.3, drop_ci=drop_ci)


def test_a_lookup_is_not_refuted_by_missing_evidence():
    """No set found and a follow CI of [0.45, 0.60]: the old rule answered *no* (and so failure *no*)."""
    behaviour = {"forced_accuracy": [1.0, 0.5, 1.0, 1.0, 1.0], "forced_accuracy_ci": [[0.99, 1.0]] * 5}
    assert lookup_verdict("teacher-forcing", behaviour, _heads())["answer"] == "inconclusive"
    assert lookup_verdict("teacher-forcing", behaviour, _heads(follow=(0.1, 0.08, 0.12)))["answer"] == "no"
    unlearned = {"forced_accuracy": [1.0, 0.5, 0.1, 0.1, 1.0], "forced_accuracy_ci": [[0.9, 1.0]] * 2 + [[0.05, 0.15]] * 2 + [[0.9, 1.0]]}
    v = lookup_verdict("teacher-forcing", unlearned, _heads())
    assert v["answer"] == "no" and "no lookup to read" in v["evidence"]


def test_the_last_index_is_a_control_only_where_it_is_copied():
    copies = {"follow_rate_last_ci": [0.0, 0.01]}
    looks_up = {"follow_rate_last_ci": [0.95, 1.0]}
    assert control_indices(5, copies) == [0, 4]
    assert control_indices(5, looks_up) == [0] and control_indices(5, None) == [0]


def test_the_cap_is_printed_as_what_it_is():
    from hansprobe.measurements.heads import mechanism_text

    heads = heads_summary(found=False, heads=[(0, 0)], drop=0.1)
    heads["mechanism"].update(max_set=max_set(1, 2), n_heads_total=2, control_indices=[0, 3])
    assert max_set(1, 2) == 1 and "at most 1 of the 2 heads (50%" in mechanism_text(heads)


# --- part 2: the plan's "used" ------------------------------------------------------------------------
def test_a_whole_residual_result_does_not_say_the_probed_target_is_used():
    """The goal-first control: the whole residual at the edges' child tokens restores the decision, the
    probe's own directions restore 0.00. The old summary read "edge on goal path ... used by the decision"."""
    row = {"target": "edge on goal path", "label": "edge", "kind": "before", "layer": 1, "chance": 0.5,
           "position_label": "each edge's child token", "accuracy": 0.99, "accuracy_ci": [0.97, 1.0], "selectivity": 0.45,
           "selectivity_ci": [0.4, 0.5], "null_p": 0.005, "cells_searched": 12, "positions": [1]}
    causal = {"probe_directions": {"normalized": 0.0, "ci": [-0.02, 0.02]}, "random_directions": {"normalized": 0.01, "ci": [0.0, 0.02]},
              "whole_residual": {"normalized": 1.0, "ci": [0.98, 1.02]}, "layer": 1, "positions": [1], "n_pairs": 250,
              "gap": 10.0, "gap_ci": [9.0, 11.0]}
    pd = {"applicable": "", "searches": {"edge on goal path|before": row}, "causal": {"edge on goal path|before": causal},
          "n_eval": 250, "hops": 1, "blocks": [0, 1, 2, 3], "inert_blocks": [], "layers": [0, 1, 2, 3], "gap": 10.0,
          "gap_ci": [9.0, 11.0], "n_pairs": 250, "profile": {}}
    v = plan_verdict(pd)
    assert v["answer"] == BEFORE and v["values"]["used_by"] == "whole residual"
    assert "used by the decision" in v["summary"] and v["summary"].startswith("goal-derived content")
    assert "not shown to be it" in v["evidence"]
    causal["probe_directions"] = {"normalized": 0.8, "ci": [0.7, 0.9]}
    v = plan_verdict(pd)
    assert v["values"]["used_by"] == "probe directions" and v["summary"].startswith("edge on goal path")


# --- part 7: a witness among the report's checkpoints -------------------------------------------------
def test_the_report_finds_a_witness_among_its_checkpoints():
    from hansprobe.report.run import witnesses_among

    root = REPO / "checkpoints"
    failure, witness = root / "pathstar-d2-l5-n50-teacher-forcing-4layers-6000steps", root / "pathstar-d2-l5-n50-multi-token-4layers-6000steps"
    two_layer, goal_first = root / "pathstar-d2-l5-n50-teacher-forcing", root / "controls" / "pathstar-d2-l3-n50-goal-first-4layers"
    paths = [failure, witness, two_layer, goal_first]
    if not all((p / "config.json").is_file() for p in paths):
        pytest.skip("the shipped checkpoints are not in this clone")
    found = witnesses_among(paths)
    assert found[failure] == witness  # same task, layout and shape, another objective
    assert two_layer not in found and goal_first not in found  # no checkpoint of their shape and layout


def test_the_answer_position_answer_checks_the_other_cells_where_a_probe_reads_the_sub_goal():
    """Issue 36 part 2: "at the answer position" rested on one causal check per target, at the chosen
    cell. Here the chosen cell is not used, but another cell where a probe reads hop 1 is, along the
    probe's own directions: the plan is formed before the answer."""
    row = {"target": "hop 1", "label": "hop 1", "kind": "before", "layer": 1, "chance": 0.5, "position_label": "=",
           "accuracy": 0.95, "accuracy_ci": [0.92, 0.97], "selectivity": 0.45, "selectivity_ci": [0.4, 0.5],
           "null_p": 0.02, "cells_searched": 12, "positions": [9]}

    def patched(probe, whole=(0.0, 0.1)):
        return {"probe_directions": {"normalized": sum(probe) / 2, "ci": list(probe)},
                "random_directions": {"normalized": 0.0, "ci": [-0.02, 0.02]},
                "whole_residual": {"normalized": sum(whole) / 2, "ci": list(whole)}, "layer": 1, "positions": [9],
                "n_pairs": 250, "gap": 10.0, "gap_ci": [9.0, 11.0]}
    other = {**patched((0.5, 0.7)), "layer": 2, "positions": [8], "position_label": "goal", "selectivity": 0.3,
             "selectivity_ci": [0.2, 0.4]}
    pd = {"applicable": "", "searches": {"hop 1|before": row}, "causal": {"hop 1|before": patched((-0.01, 0.01))},
          "causal_cells": {"hop 1|before": {"passing": 3, "checked": [other]}}, "n_eval": 250, "hops": 3,
          "blocks": [0, 1, 2, 3], "inert_blocks": [], "layers": [0, 1, 2, 3], "gap": 10.0, "gap_ci": [9.0, 11.0],
          "n_pairs": 250, "profile": {}}
    v = plan_verdict(pd)
    assert v["answer"] == BEFORE and v["values"]["layer"] == 2 and v["values"]["position"] == "goal"
    assert "a probe reads it too" in v["evidence"]
    assert pd["searches"]["hop 1|before"]["layer"] == 1  # the analysis's summary is left as it was
    pd["causal_cells"]["hop 1|before"]["checked"] = [{**other, "probe_directions": {"normalized": 0.0, "ci": [-0.01, 0.01]}}]
    v = plan_verdict(pd)
    assert v["answer"] == "at the answer position" and "checked 2 of the 4 cells" in v["evidence"]
