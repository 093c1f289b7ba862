"""The combined question, decided from the others and the training dynamics: is this the Clever-Hans
failure? And the notes for answers that read as contradicting each other."""
from __future__ import annotations

from hansprobe.questions.registry import NoteSpec, QuestionContext, QuestionSpec, register_note, register_question, verdict
from hansprobe.measurements.witness import WITNESS_MIN
from hansprobe.objectives import Objective, as_objective, inner_lookup_indices


def failure_verdict(objective: Objective | str, verdicts: dict, dynamics: dict | None, witness: dict | None = None) -> dict:
    """The Clever-Hans failure is the conjunction: the lookup carries the later tokens AND the first
    decision is indecipherable AND it is not computed from the goal (AND, where snapshots exist, the
    later tokens were learned and r_1 never). no as soon as one part says no (naming it). A yes is
    the paper's signature; its evidence and `values.ruled_out` say which other explanations of it
    were checked (`alternatives`: the learning order, capacity, training length)."""
    objective = as_objective(objective)
    if objective.reverse:
        return verdict("not applicable", "reversed targets make no decision before the answer (the goal is copied first)")
    if objective.teacherless:  # a mixed fill (partial-teacherless) trains on the true prefix too
        return verdict("not applicable", "teacherless inputs hold no previous answer token: the Clever-Hans failure is a "
                       "failure of teacher-forced training")
    lk, ind, dec = (verdicts[k]["answer"] for k in ("lookup", "indecipherable", "decision_computed"))
    against = []
    if lk == "no":
        against.append("later tokens are not read off the previous one")
    if ind == "no":
        against.append("the first decision is not indecipherable")
    if ind == "not learned":
        against.append("the model has not learned the candidate set (a different failure: not trained far enough)")
    if dec == "yes":
        against.append("the decision is computed from the goal")
    parts = {"lookup": lk, "indecipherable": ind, "decision computed": dec}
    summary = ", ".join(f"{k} {v}" for k, v in parts.items())
    if against:
        return verdict("no", f"{'; '.join(against)} ({summary})", parts=parts)
    if lk == "not applicable":
        return verdict("not applicable", f"no lookup to measure: {verdicts['lookup']['evidence']}")
    if (lk, ind, dec) != ("yes", "yes", "no"):
        return verdict("inconclusive", f"a part is inconclusive ({summary})", parts=parts)
    if dynamics and "skipped" not in dynamics:
        learned = dynamics["learned_at"]  # per label index; 1 is the decision, 2..l-2 the lookup's
        if learned[1] is not None or any(learned[i] is None for i in inner_lookup_indices(len(learned))):
            return verdict("inconclusive", f"the snapshots disagree: {_order(dynamics)} ({summary})", parts=parts)
    checks = alternatives(dynamics, witness)
    ruled_out = {k: ok for k, (ok, _) in checks.items()}
    open_ = [k.replace("_", " ") for k, ok in ruled_out.items() if not ok]
    detail = "; ".join(text for _, text in checks.values())
    moved = goal_moves_it(verdicts["decision_computed"])
    goal = (f"is at chance and not moved toward the goal, though the goal moves it ({moved})" if moved
            else "is at chance and ignores the goal")
    if open_:
        head = (f"the signature (the lookup carries the later tokens, the first decision {goal}); "
                f"its cause not separated from {' / '.join(open_)}")
        short = f"the signature; its cause not separated from {' / '.join(open_)}"
    else:
        head = (f"the lookup carries the later tokens, the first decision {goal}; learning order, "
                "capacity and training length ruled out")
        short = "the signature, with learning order, capacity and training length ruled out"
    return verdict("yes", f"{head} — {detail}", summary=short, parts=parts, ruled_out=ruled_out, goal_moves_it=bool(moved))


def goal_moves_it(computed: dict) -> str:
    """Where the goal moves the decision in no consistent direction (|Δ| beyond the same-size placebo:
    goal_dependence._moved), the pair kinds and their |Δ|, in words; "" where it does not."""
    kinds = [(k, v) for k, v in (computed.get("values") or {}).items() if isinstance(v, dict) and v.get("moved")]
    return "; ".join(f"{k.replace('_', '-')} pairs move its candidate log-odds by |Δ| {v['abs_delta_mean']:.3f} "
                     f"[{v['abs_delta_ci'][0]:.3f}, {v['abs_delta_ci'][1]:.3f}] nats per pair, signed mean "
                     f"{v['delta_mean']:+.3f}" for k, v in kinds)


def _order(dynamics: dict) -> str:
    learned = dynamics["learned_at"]
    return (f"learning order over {len(dynamics['steps'])} snapshots: "
            + ", ".join(f"r{i} at step {learned[i]}" if learned[i] is not None else f"r{i} never" for i in range(len(learned))))


def alternatives(dynamics: dict | None, witness: dict | None) -> dict:
    """The explanations of the signature other than the objective, each as (ruled out?, why):
    - the learning order, from snapshots: at least two, one of them before the lookup was learned
      (an order must be seen happen), the later tokens learned, r1 never and at chance at every one;
    - training length, from the same snapshots: a plateau — r1 at chance at every snapshot from the
      step the lookup was learned to a last snapshot at least twice that step (as long again as the
      lookup took), over at least two snapshots; a witness trained with another objective shows
      nothing about how long *this* objective needs;
    - capacity, from a witness of the same task, prompt layout and model shape that decides forwards
      (hansprobe/measurements/witness.py): this shape can learn the decision, under the witness's objective."""
    out = {}
    if dynamics and "skipped" not in dynamics:
        out["learning_order"], out["training_length"] = _from_snapshots(dynamics)
    else:
        out["learning_order"] = (False, "no snapshots kept: the learning order is not checked (train --snapshot-at)")
        out["training_length"] = (False, "no snapshots kept: no plateau of r1 at chance is shown, and a witness with "
                                         "another objective does not show how long this one needs")
    if witness and "skipped" not in witness:
        w = witness
        acc = f"{w['decision_accuracy']:.3f} [{w['decision_accuracy_ci'][0]:.3f}, {w['decision_accuracy_ci'][1]:.3f}]"
        name = f"the witness {w['path']} ({w['objective']}, {w['steps']} steps: decision accuracy {acc} on {w['n_graphs']} graphs)"
        budget = _budget(w)
        if w["rules_out_capacity"]:
            out["capacity"] = (True, f"{name} has this task, prompt layout and model shape and decides forwards: this "
                                     f"shape can learn the decision under {w['objective']}{budget}")
        elif w.get("learned") and w.get("same_task", True) and w.get("same_shape", True) and not w.get("same_layout", True):
            out["capacity"] = (False, f"{name} decides forwards, but in another prompt layout "
                                      f"({'; '.join(w.get('layout_differences', []))}): capacity is shown for that "
                                      "layout, not this one")
        else:
            why = ("it decodes reversed targets, not forwards" if not w.get("forward", True) else
                   f"its decision accuracy's CI does not clear {WITNESS_MIN}" if not w["learned"] else "; ".join(w["differences"]))
            out["capacity"] = (False, f"{name} does not show this shape can decide: {why}")
    else:
        out["capacity"] = (False, "no capacity witness: a model of the same task, prompt layout and shape that learned the "
                                  "forward decision with another objective (report --witness CKPT, or among the "
                                  "checkpoints of the same report)")
    return {k: out[k] for k in ("learning_order", "capacity", "training_length")}


def _budget(w: dict) -> str:
    """The witness's budget against the checkpoint's, as graphs seen, learning rate and schedule."""
    seen, here = w.get("graphs_seen"), w.get("graphs_seen_of_checkpoint")
    if seen is None or here is None:
        return ""
    sched = w.get("schedule_differences") or []
    within = "within" if w.get("within_budget") else "beyond"
    return (f", {within} this model's budget ({seen:,} graphs seen against {here:,} here"
            + (f"; {'; '.join(sched)}" if sched else "; the same learning rate and schedule") + ")")


def _from_snapshots(dynamics: dict) -> tuple[tuple[bool, str], tuple[bool, str]]:
    steps, learned = dynamics["steps"], dynamics["learned_at"]
    inner = inner_lookup_indices(len(learned))
    lookup_at = max(learned[i] for i in inner) if inner and all(learned[i] is not None for i in inner) else None
    above = dynamics.get("decision_above_chance_at")
    if above is None:  # a summary from before the per-step candidate accuracy
        return ((False, f"{_order(dynamics)} (whether r1 stayed at chance was not measured)"),
                (False, "whether r1 stayed at chance was not measured: no plateau shown"))
    if above:
        rose = f"r1 rose above chance at step(s) {', '.join(map(str, above))}"
        return (False, f"{_order(dynamics)}, but {rose} before falling back"), (False, f"no plateau: {rose}")
    if lookup_at is None:
        return ((False, f"{_order(dynamics)}: the lookup is never learned, so no order is seen"),
                (False, "no plateau: the lookup is never learned over the snapshots"))
    if len(steps) < 2 or steps[0] >= lookup_at:
        order = (False, f"{_order(dynamics)}: not checked — it needs two snapshots or more, one of them before the lookup "
                        f"is learned (the first is at step {steps[0]})")
    else:
        order = (True, f"{_order(dynamics)}; r1 at chance at every snapshot (candidate accuracy never above 1/d, "
                       "Bonferroni over the snapshots): later tokens learned first, r1 never")
    after = [s for s in steps if s >= lookup_at]
    if len(after) >= 2 and after[-1] >= 2 * lookup_at:
        length = (True, f"a plateau: r1 at chance at each of the {len(after)} snapshots from step {lookup_at}, when the "
                        f"lookup was learned, to step {after[-1]} (as long again as the lookup took)")
    else:
        length = (False, f"no plateau shown: the lookup was learned at step {lookup_at} and the last snapshot is at step "
                         f"{steps[-1]} (a plateau needs snapshots to at least twice the lookup's step)")
    return order, length


def _decide(ctx: QuestionContext) -> dict:
    return failure_verdict(ctx.objective, ctx.verdicts, ctx.analyses.get("dynamics"), ctx.analyses.get("witness"))


CLEVER_HANS_FAILURE = register_question(QuestionSpec(
    key="clever_hans_failure", text="Clever-Hans failure?", needs=("dynamics",), describes=("witness",), decide=_decide,
    order=0,
    combines=("lookup", "indecipherable", "decision_computed"),
    rule=("yes when all three hold: later tokens are read off the previous one, the first decision is indecipherable, "
          "and it is not computed from the goal (and, with snapshots, r1 is never learned). The evidence says which other "
          "causes of this signature were ruled out: the learning order (two snapshots or more, one before the lookup is "
          "learned), training length (a plateau of r1 at chance over the snapshots after the lookup is learned) and "
          "capacity (a witness of the same task, layout and shape that decides forwards)."),
    thresholds={"witness_min": WITNESS_MIN},
    applied_by={"witness_min": "witness.witness_min"},
))


def _answer(ctx: QuestionContext, key: str) -> str:
    return ctx.verdicts[key]["answer"]


def _entropy(ctx: QuestionContext) -> dict:
    return ctx.analyses.get("entropy") or {}


def _patching_maps_a_label_effect(ctx: QuestionContext) -> bool:
    patching = ctx.analysis("patching")
    swap = ((_entropy(ctx).get("goal_dependence") or {}).get("kinds") or {}).get("goal_swap", {}).get("status")
    return _answer(ctx, "decision_computed") == "no" and bool(patching and patching.get("measurable")) and swap == "present"


# Where two answers could be read as contradicting each other, the report says what they mean together.
for _note in (
    NoteSpec("plan_without_computed", ("plan_represented", "decision_computed"),
             lambda c: _answer(c, "plan_represented") in ("before the answer", "at the answer position")
             and _answer(c, "decision_computed") == "no",
             "The plan-depth check finds the decision following the goal on goal swaps, but the counterfactual "
             "pairs do not call it computed from the goal: read both answers' evidence."),
    NoteSpec("lookup_and_computed", ("lookup", "decision_computed"),
             lambda c: _answer(c, "lookup") == "yes" and _answer(c, "decision_computed") == "yes",
             "Later tokens are read off the previous one AND the decision is computed from the goal: the lookup is "
             "the correct conditional here (a planning model has it too), not a failure."),
    NoteSpec("computed_without_information", ("decision_computed", "entropy"),
             lambda c: _answer(c, "decision_computed") == "yes" and bool(_entropy(c).get("information_nats_ci"))
             and _entropy(c)["information_nats_ci"][1] <= 0,
             "The goal moves the decision although the information over uniform is <= 0: a real goal signal "
             "under a label preference that costs more log score than it gains."),
    NoteSpec("patching_label_effect", ("decision_computed", "entropy", "patching"), _patching_maps_a_label_effect,
             "Activation patching finds a goal-token effect to restore, but the counterfactual pairs say the "
             "decision does not follow the goal through the graph; the patching maps that label effect."),
    NoteSpec("chance_not_uniform", ("indecipherable", "entropy"),
             lambda c: _answer(c, "indecipherable") == "yes" and _entropy(c).get("candidate_entropy_frac", 1) < 0.9,
             "The first decision is at chance but not uniform: the model guesses with a preference that is "
             "not tied to the goal (see what it follows in the evidence)."),
):
    register_note(_note)
