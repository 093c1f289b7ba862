"""The lookup question, decided from the heads analysis: are the later tokens read off the previous
one? Its causal evidence is the heads analysis's greedy ablation search; its behavioural evidence
is the counterfactual-prefix follow rate (follow.py), which the heads analysis measures beside it."""
from __future__ import annotations

from collections.abc import Mapping

from hansprobe.mechanics.follow import FOLLOW_MAJORITY
from hansprobe.measurements.heads import DROP_THRESHOLD, MAX_SET_FRACTION, mechanism_text
from hansprobe.questions.registry import (QuestionContext, QuestionSpec, ci_text, register_question, registered_thresholds,
                                          verdict)
from hansprobe.objectives import Objective, as_objective, inner_lookup_indices



def lookup_verdict(objective: Objective | str, behaviour: dict, heads: dict | None, why_not: str | None = None,
                   thresholds: Mapping | None = None) -> dict:
    """yes when a set of at most a quarter of the heads is found whose joint ablation breaks forced
    accuracy at indices 2..l-2 beyond the controls (the heads analysis's causal search, chosen on one
    half of the graphs and measured on the other, its drop's CI above the bar) AND the
    counterfactual follow rate's CI lies above 1/2; no only on evidence against it: the follow
    rate's CI lies below 1/2 (whatever the search found: the answer is not read off the previous
    token), or forced accuracy at every index 2..l-2 lies below 1/2 (CI: there is no lookup to
    read); inconclusive otherwise — a search that finds no small set is missing evidence, not
    evidence of absence. Under reversed targets r_i = parent(r_(i-1)) is the correct rule: the
    same question then asks about the child -> parent lookup. `thresholds`: the question's (its
    registration's when None)."""
    majority = (thresholds if thresholds is not None else registered_thresholds("lookup"))["follow_majority"]
    objective = as_objective(objective)
    if heads is None:
        return verdict("not applicable", why_not or f"{objective.name} inputs hold no previous answer token")
    reverse = objective.reverse
    idx = heads.get("query_label_indices") or inner_lookup_indices(len(behaviour["forced_accuracy"]))
    forced = "; ".join(f"r{i} {ci_text(behaviour['forced_accuracy'][i], behaviour['forced_accuracy_ci'][i])}" for i in idx)
    mech = heads["mechanism"]
    follow = heads.get("follow")
    follows = follow is not None and follow["follow_rate_ci"][0] > majority
    refuted = follow is not None and follow["follow_rate_ci"][1] < majority
    parts = [f"forced accuracy {forced}"]
    if follow is not None:
        parts.append(f"swapping r_(i-1) for another arm's node makes it answer that node's {'parent' if reverse else 'child'} "
                     f"in {ci_text(follow['follow_rate'], follow['follow_rate_ci'])} of graphs (indices {idx[0]}..{idx[-1]})")
    parts.append(mechanism_text(heads))
    if reverse:
        parts.append("under reversed targets this child -> parent lookup is the correct rule, not a shortcut")
    found = bool(mech["found"])
    cis = behaviour.get("forced_accuracy_ci")
    unlearned = bool(cis) and all(cis[i][1] < majority for i in idx)  # nothing there to read off
    answer = "yes" if found and follows else "no" if refuted or unlearned else "inconclusive"
    if unlearned:
        parts.insert(0, "forced accuracy at every index 2..l-2 lies below 1/2 (CI): there is no lookup to read")
    broke = (f"ablating {'+'.join(f'L{l}H{h}' for l, h in mech['heads'])} breaks it" if found
             else "no set of heads breaks it by ablation")
    moved = ("swapping r_(i-1) redirects the answer (follow-rate CI above 1/2)" if follows
             else "swapping r_(i-1) redirects the answer in fewer than half of the graphs (CI below 1/2)" if refuted
             else "swapping r_(i-1) does not reliably redirect the answer" if follow is not None
             else "the follow rate was not measured")
    clause = f"{'and' if found == follows else 'but'} ".join([broke + " ", moved])
    return verdict(answer, f"{clause} — " + "; ".join(parts), heads=mech["heads"], ablation_drop=mech["ablation_drop"],
                   ablation_drop_ci=mech.get("ablation_drop_ci"), ablation_graphs=mech.get("ablation_graphs"),
                   specific_drop=mech.get("specific_drop"), specific_drop_ci=mech.get("specific_drop_ci"),
                   control_drop=mech.get("control_drop"), max_set=mech.get("max_set"),
                   reads=mech.get("reads", {}), follow_rate=follow["follow_rate"] if follow else None,
                   follow_rate_ci=follow["follow_rate_ci"] if follow else None,
                   forced_accuracy={str(i): behaviour["forced_accuracy"][i] for i in idx})


def _decide(ctx: QuestionContext) -> dict:
    return lookup_verdict(ctx.objective, ctx.analysis("behaviour"), ctx.analysis("heads"), ctx.skipped("heads"), ctx.thresholds)


LOOKUP = register_question(QuestionSpec(
    key="lookup", text="Later tokens read off the previous one?", needs=("behaviour", "heads"), decide=_decide, order=10,
    rule=("yes when a set of at most {lookup_max_set_fraction:.0%} of the heads (at least one), chosen on half of the "
          "graphs, drops forced accuracy at positions 2..l-2 on the other half by at least {lookup_drop} (CI) beyond its "
          "drop at the copies it does not make (the first index; the last where its follow rate shows a copy), and the "
          "model follows a swapped-in r_(i-1) to its successor in most graphs (follow-rate CI above {follow_majority}); "
          "no only when that CI lies below it or forced accuracy at 2..l-2 lies below {follow_majority}; inconclusive "
          "otherwise. Attention describes where they read."),
    thresholds={"follow_majority": FOLLOW_MAJORITY, "lookup_drop": DROP_THRESHOLD, "lookup_max_set_fraction": MAX_SET_FRACTION},
    applied_by={"follow_majority": "heads.thresholds.follow_majority", "lookup_drop": "heads.thresholds.drop",
                "lookup_max_set_fraction": "heads.thresholds.max_set_fraction"},
))
