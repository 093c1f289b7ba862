"""The plan question, decided from the plan-depth profile (hansprobe/measurements/plan_depth.py): where is the
first decision planned — before the answer, at the answer position, nowhere, or can the model not be
expected to (docs/decisions.md 43)?"""
from __future__ import annotations

from collections.abc import Mapping

from hansprobe.measurements.patching import GAP_MIN
from hansprobe.questions.registry import QuestionSpec, ci_text, register_question, registered_thresholds, verdict

PLAN_ALPHA = 0.05  # family-wise, for the whole search: the sub-goal chain tested in order, hop 1 first
PLAN_SELECTIVITY = 0.10  # the paired selectivity's CI must clear this (accuracy over relabelled probes)
CAUSAL_MIN = 0.25  # patching the probe's directions must restore at least this share of the goal's effect (CI)
# The rule below reads these through the registration's thresholds (`t`), never the constants: the
# values report.json records are the values applied.

BEFORE, AT = "before the answer", "at the answer position"


def _where(layer: int) -> str:
    return "the embeddings" if layer == 0 else f"after block {layer - 1}"


def _probe_ok(s: dict, alpha: float, t: Mapping) -> bool:
    return s["null_p"] <= alpha + 1e-12 and s["selectivity_ci"][0] >= t["plan_selectivity"]


def _causal_ok(c: dict | None, position_label: str, t: Mapping) -> str | None:
    """How patching from the goal-swap partner at a cell moves the decision back: "probe" when the
    probe's own directions restore >= CAUSAL_MIN of it (CI) and more than random directions do (the
    probed target is used); "whole" when only the whole residual there does, at a cell other than
    the goal token (whose residual differs between the pair by the goal itself): goal-derived content
    there is used, but the probed target is not shown to be it; None otherwise."""
    if not c:
        return None
    probe, rand, whole = c["probe_directions"], c["random_directions"], c["whole_residual"]
    if probe["ci"][0] >= t["plan_causal_min"] and probe["ci"][0] > rand["ci"][1]:
        return "probe"
    if position_label != "goal" and whole["ci"][0] >= t["plan_causal_min"]:
        return "whole"
    return None


def _cell(s: dict, n_eval: int) -> str:
    return (f"{s['label']} at '{s['position_label']}' {_where(s['layer'])}: {ci_text(s['accuracy'], s['accuracy_ci'])} "
            f"on {n_eval} held-out graphs (chance {s['chance']:.2f}), selectivity "
            f"{ci_text(s['selectivity'], s['selectivity_ci'])}, whole-search null p = {s['null_p']:.2g} "
            f"(best of {s['cells_searched']} cells)")


def _causal_text(c: dict) -> str:
    p, r, w = c["probe_directions"], c["random_directions"], c["whole_residual"]
    return (f"patching from the goal-swap partner restores {ci_text(w['normalized'], w['ci'], 2)} of the decision with the "
            f"whole residual there, {ci_text(p['normalized'], p['ci'], 2)} along the probe's directions alone (random "
            f"directions {ci_text(r['normalized'], r['ci'], 2)})")


def plan_verdict(pd: dict, thresholds: Mapping | None = None) -> dict:
    """formed before the answer: a sub-goal of the chain (tested in order from the goal's parent up,
    each at PLAN_ALPHA: a fixed-sequence test) or the edge-on-path mark is read at a block input
    before the decision position with the whole search's null p <= alpha and a paired selectivity
    CI above PLAN_SELECTIVITY, AND patching the probe's directions there from a goal-swap partner
    restores >= CAUSAL_MIN of the decision (CI; _causal_ok: "used"), or, failing that, patching its whole
    residual does (away from the goal token: worded "goal-derived content at X is used; the probed target
    is not shown to be it", values.used_by). at the answer position: none is, but the decision
    follows the goal. no: the decision does not follow the goal; not applicable when the model has
    fewer blocks that write than the task needs hops (or reversed targets). `thresholds`: the
    question's (its registration's when None)."""
    t = thresholds if thresholds is not None else registered_thresholds("plan_represented")
    if pd is None:
        return verdict("inconclusive", "the plan-depth analysis did not run on this checkpoint")
    if pd.get("applicable"):
        reason = pd["applicable"]
        return verdict("not applicable", f"not applicable: {reason}", summary="not applicable: " + reason.split(":")[0])
    r = _readable(pd, t)
    n = pd["n_eval"]
    follows = pd["gap_ci"][0] > t["plan_gap_min"]
    gap = (f"swapping the goal moves the decision logit difference by {ci_text(pd['gap'], pd['gap_ci'], 2)} nats on "
           f"{pd['n_pairs']} pairs")
    notes = [f"{_cell(r['searches'][k], n)}, but it is not shown used{_why_unused(pd, r, k)}"
             for k in r["readable"] if k not in r["used"]]
    values = {"hops": pd["hops"], "blocks": len(pd["blocks"]), "inert_blocks": pd["inert_blocks"], "follows_goal": follows,
              "chain_found": [k.split("|")[0] for k in r["passed"]], "target": None, "layer": None, "position": None,
              "used_by": None}
    tail = f"{gap}; {_profile_text(pd, t)}" + "".join(f"; {note}" for note in notes)
    if r["used"]:
        return _before_verdict(pd, r, values, tail)
    if follows:
        return _at_verdict(pd, r, values, tail, t)
    blocks = len(pd["blocks"])
    if blocks < pd["hops"]:  # too shallow to be expected to plan: the one n/a with values (how many blocks and hops)
        summary = f"{blocks} block{'s' if blocks != 1 else ''} for {pd['hops']} hops; the decision ignores the goal"
        return verdict("not applicable", f"{summary} — not applicable: {blocks} block{'s' if blocks != 1 else ''} write to "
                       f"the residual stream and the task needs {pd['hops']} backward hops from the goal (probing work "
                       f"finds one per layer), and the decision does not follow the goal; {tail}", summary=summary, **values)
    summary = "the decision ignores the goal; no sub-goal is used before the answer"
    return verdict("no", f"{summary} — {tail}", summary=summary, **values)


def _readable(pd: dict, t: Mapping) -> dict:
    """The chain's targets read before the answer (fixed sequence from the goal's parent up; the edge
    mark apart), how each is used (probe directions, whole residual, or not shown), falling back to
    another checked cell where the chosen one is not used along its probe; and how many cells were
    checked and passed. The searches and causal checks returned are the ones the verdict cites."""
    searches, causal = dict(pd["searches"]), dict(pd["causal"])
    chain = sorted((k for k in searches if k.endswith("|before") and not k.startswith("edge")), key=_hop_order)
    edge = [k for k in searches if k.startswith("edge") and k.endswith("|before")]
    alpha = t["plan_alpha"] / 2 if edge else t["plan_alpha"]  # two families where the edges follow the goal
    passed = []
    for k in chain:  # fixed sequence: hop j is tested only once hop j-1 is found
        if not _probe_ok(searches[k], alpha, t):
            break
        passed.append(k)
    readable = passed[::-1] + [k for k in edge if _probe_ok(searches[k], alpha, t)]
    how = {k: _causal_ok(causal.get(k), searches[k]["position_label"], t) for k in readable}
    others = pd.get("causal_cells") or {}
    for k in readable:  # the chosen cell is not used along its probe: is another cell where the probe reads it?
        if how[k] != "probe":
            cell = next((c for c in (others.get(k) or {}).get("checked", []) if _causal_ok(c, c["position_label"], t) == "probe"),
                        None)
            if cell is not None:
                searches[k] = {**searches[k], "layer": cell["layer"], "position_label": cell["position_label"],
                               "selectivity": cell["selectivity"], "selectivity_ci": cell["selectivity_ci"],
                               "other_cell": True}
                causal = {**causal, k: cell}
                how[k] = "probe"
    return {"searches": searches, "causal": causal, "passed": passed, "readable": readable, "how": how,
            "used": [k for k in readable if how[k] == "probe"] + [k for k in readable if how[k] == "whole"],
            "checked": sum(1 + len((others.get(k) or {}).get("checked", [])) for k in readable if causal.get(k)),
            "passing": sum(1 + (others.get(k) or {}).get("passing", 0) for k in readable if causal.get(k))}


def _why_unused(pd: dict, r: dict, k: str) -> str:
    c = r["causal"].get(k)
    if c:
        return f": {_causal_text(c)}"
    if r["searches"][k]["layer"] > max(pd["blocks"]):
        return " (the final residual at a prompt position feeds only the extra heads)"
    return " (the decision does not follow the goal: nothing to restore)"


def _before_verdict(pd: dict, r: dict, values: dict, tail: str) -> dict:
    """formed before the answer: the first used target, along its probe's directions or its whole residual."""
    n, first = pd["n_eval"], r["used"][0]
    s, how = r["searches"][first], r["how"][first]
    where = f"'{s['position_label']}' {_where(s['layer'])}"
    if how == "probe" and s.get("other_cell"):
        summary = f"{s['target']} at {where}, used by the decision"
        lead = (f"{summary} — formed before the answer: the whole search reads it ({_cell(pd['searches'][first], n)}), "
                f"and at this cell a probe reads it too (paired selectivity {ci_text(s['selectivity'], s['selectivity_ci'])}) "
                "whose directions the decision uses")
    elif how == "probe":
        summary = f"{s['target']} at {where}, used by the decision"
        lead = f"{summary} — formed before the answer: {_cell(s, n)}"
    else:
        summary = f"goal-derived content at {where} is used by the decision"
        lead = (f"{summary}; the probed {s['target']} is not shown to be it — formed before the answer: patching the "
                f"whole residual there restores the decision, its probe's directions do not: {_cell(s, n)}")
    return verdict(BEFORE, f"{lead}; {_causal_text(r['causal'][first])}; {tail}", summary=summary,
                   **{**values, "target": s["target"], "layer": s["layer"], "position": s["position_label"],
                      "used_by": "probe directions" if how == "probe" else "whole residual"})


def _at_verdict(pd: dict, r: dict, values: dict, tail: str, t: Mapping) -> dict:
    """at the answer position: the decision follows the goal, no sub-goal before the answer is used."""
    n, searches = pd["n_eval"], r["searches"]
    at = searches.get("decision node|at")
    read_at = at if at and _probe_ok(at, t["plan_alpha"], t) else None
    where = (f"the decision node is read at the answer position from {_where(at['layer'])} ({_cell(at, n)})" if read_at
             else "no block input holds the decision node: the last block computes it at the answer position")
    at_chain = [searches[k] for k in sorted((k for k in searches if k.endswith("|at")), key=_hop_order)
                if _probe_ok(searches[k], t["plan_alpha"], t) and not k.startswith("decision")]
    if at_chain:
        where += "; read there before the last block: " + ", ".join(
            f"{s['target']} {_where(s['layer'])} {s['accuracy']:.2f}" for s in at_chain)
    summary = "the decision follows the goal; no sub-goal before the answer is used"
    where += (f"; patching checked {r['checked']} of the {r['passing']} cells before the answer where a probe reads a "
              "sub-goal (the most selective first), and none restores the decision along its probe's directions"
              if r["checked"] else "")
    if read_at:
        values = {**values, "target": read_at["target"], "layer": read_at["layer"], "position": read_at["position_label"]}
    return verdict(AT, f"{summary} — computed at the answer position: {where}; {tail}", summary=summary, **values)


def _hop_order(key: str) -> int:
    name = key.split("|")[0]
    return 10 ** 6 if name == "decision node" else int(name.split()[-1])


def _profile_text(pd: dict, t: Mapping) -> str:
    """Where each target of the chain is first readable (its before-the-answer search)."""
    parts = []
    for k, s in pd["searches"].items():
        if k.endswith("|before"):
            parts.append(f"{s['target']} best at '{s['position_label']}' {_where(s['layer'])} {s['accuracy']:.2f}"
                         + ("" if _probe_ok(s, t["plan_alpha"], t) else " (not above the null)"))
    return "profile before the answer: " + (", ".join(parts) if parts else "no cell searched")


PLAN_REPRESENTED = register_question(QuestionSpec(
    key="plan_represented", text="Where is the first decision planned?", needs=("plan_depth",), order=40,
    decide=lambda ctx: plan_verdict(ctx.analysis("plan_depth"), ctx.thresholds),
    rule=("before the answer when a sub-goal (tested from the goal's parent up) or the goal path's edges are read by a "
          "linear probe at a block input before the decision position (whole-search null p <= {plan_alpha}, paired "
          "selectivity CI >= {plan_selectivity:.2f}) and patching that cell from a goal-swap partner restores >= "
          "{plan_causal_min:.2f} of the decision: along the probe's directions (the target is used), or only with its whole "
          "residual away from the goal token (goal-derived content there is used, the target not shown to be it); at the "
          "answer position when none is but the decision follows the goal; not applicable when the decision ignores the "
          "goal and the model has fewer blocks than the task needs hops."),
    thresholds={"plan_alpha": PLAN_ALPHA, "plan_selectivity": PLAN_SELECTIVITY, "plan_causal_min": CAUSAL_MIN,
                "plan_gap_min": GAP_MIN},
    applied_by={"plan_gap_min": "plan_depth.gap_min"},
))
