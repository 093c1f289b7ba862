"""The decision question, decided from the goal dependence the entropy measurement runs
(measurements/goal_dependence.py): does the decision move toward the goal when only the goal moves?"""
from __future__ import annotations

from hansprobe.measurements.goal_dependence import DELTA_MIN, FAMILY_ALPHA
from hansprobe.questions.registry import QuestionSpec, ci_text, register_question, verdict


def _kind(name: str) -> str:
    return name.replace("_", "-")


def moved_kinds(gd: dict | None) -> list[str]:
    """The pair kinds on which the goal moves the decision at all, toward it or not (`_moved`)."""
    return [k for k, v in ((gd or {}).get("kinds") or {}).items() if v.get("moved")]


def _gd_text(kind: str, v: dict) -> str:
    return (f"{_kind(kind)} pairs: signed Δ {ci_text(v['delta_mean'], v['delta_mean_ci'])} nats, argmax follows the goal in "
            f"{ci_text(v['follow_share'], v['follow_ci'])} of pairs (|Δ| {ci_text(v['abs_delta_mean'], v['abs_delta_ci'])}; "
            f"relisting the edges moves |Δ| by {v['placebo_abs_delta_mean']:.3f})")


def decision_verdict(entropy: dict, patching: dict | None = None) -> dict:
    """yes when both counterfactual kinds move the decision (goal swap: only the goal token moves;
    arm rewire: the same tokens and goal label, the goal reached through another first node) toward
    the goal, by the signed status of each pair kind (measure_goal_dependence); no when the goal swap
    does not move it toward the goal, when it does but the rewire does not (a label cue, not the
    graph), or when either moves it away; inconclusive otherwise. The
    evidence names where activation patching restores the decision, or what the decision follows instead."""
    gd = entropy.get("goal_dependence")
    if not gd or not gd.get("applicable"):
        return verdict("not applicable", (gd or {}).get("reason") or "goal dependence was not measured")
    kinds = gd["kinds"]
    status = {k: v["status"] for k, v in kinds.items()}
    figures = "; ".join(_gd_text(k, v) for k, v in kinds.items())
    swap, rewire = status.get("goal_swap"), status.get("arm_rewire", "n/a")
    follows = [f"the {k} ({v['rate']:.3f})" for k, v in entropy.get("preference", {}).items() if v["follows"]]
    instead = (f"; the decision follows {', '.join(follows)} instead" if follows else "")
    if swap == "present" and rewire in ("present", "n/a"):
        answer, clause = "yes", "the decision moves with the goal on both kinds of counterfactual pairs"
        if patching and patching.get("measurable") and patching.get("top"):
            clause += "; patching restores it at " + ", ".join(f"{t['component']} ({t['normalized']:.2f})"
                                                            for t in patching["top"][:3])
    elif swap == "absent":
        answer, clause = "no", (f"moving the goal to another arm does not move the decision toward it (the signed change's "
                                f"CI lies inside +-{gd['delta_min']} nats){instead}")
        moved = moved_kinds(gd)
        if moved:
            clause += (f"; the goal does move it on {', '.join(_kind(k) for k in moved)} pairs, but not consistently toward "
                       "the goal (|Δ| beyond the same-size placebo, signed mean ~0)")
    elif swap == "present" and rewire == "absent":
        answer, clause = "no", ("the decision moves with the goal token but not when the same goal is reached through "
                                f"another first node: it keys on a label, not on the graph{instead}")
    elif "opposite" in (swap, rewire):
        answer, clause = "no", ("the decision moves away from the goal (the signed change's CI lies below "
                                f"-{gd['delta_min']} nats): it reads the goal and goes elsewhere{instead}")
    else:
        answer, clause = "inconclusive", f"goal dependence is not clear ({', '.join(f'{_kind(k)}: {v}' for k, v in status.items())})"
    return verdict(answer, f"{clause}; {figures}", **{k: {kk: v[kk] for kk in ("status", "abs_delta_mean", "abs_delta_ci",
                   "excess_mean", "excess_ci", "delta_mean", "delta_mean_ci", "follow_share", "follow_ci", "moved", "alpha",
                   "delta_mean_decision_ci") if kk in v}
                   for k, v in kinds.items()})


DECISION_COMPUTED = register_question(QuestionSpec(
    key="decision_computed", text="Decision computed from the goal?", needs=("entropy",), describes=("patching",), order=30,
    decide=lambda ctx: decision_verdict(ctx.analysis("entropy"), ctx.analysis("patching")),
    rule=("yes when the decision moves toward the goal on both kinds of paired counterfactuals: the goal swapped to "
          "another arm, and the same goal reached through another first node (the signed change of the candidate "
          "log-odds has its interval above {goal_dependence_delta_min} nats, each kind at {family_alpha:.0%} divided "
          "among the routes to 'decided')."),
    thresholds={"goal_dependence_delta_min": DELTA_MIN, "family_alpha": FAMILY_ALPHA},
    applied_by={"goal_dependence_delta_min": "entropy.goal_dependence.delta_min", "family_alpha": "entropy.thresholds.family_alpha"},
))
