"""The plan question, decided from the probes analysis: is the plan represented before the answer?"""
from __future__ import annotations

from dataclasses import dataclass

from hansprobe.analyses.base import null_pass_probability
from hansprobe.analyses.questions import QuestionSpec, register_question, verdict

# A probe cell counts as evidence of a plan only if it beats shuffled labels by this much AND its
# interval (on graphs its selection did not use) clears chance, the shuffled control and the
# untrained model (docs/decisions.md 12).
PLAN_SELECTIVITY = 0.10
NULL_PASS_WARN = 0.01  # a plan yes whose cells would pass this often with no information says to re-measure


@dataclass
class _PlanCell:
    """One probe cell judged by the plan rule: whether it passes, its evidence text, why it fails, and
    how often a cell with no information would pass the same bars (None without a held-out count)."""

    best: dict
    where: str
    ok: bool
    text: str
    why: str
    null_p: float | None


def _plan_cell(probes: dict, best: dict, where_kind: str) -> _PlanCell:
    lo, hi = best["accuracy_ci"]
    untrained = best.get("untrained")
    bar = max(probes["chance"], best["control_shuffle"], untrained if untrained is not None else 0.0)
    ok = best["selectivity"] >= PLAN_SELECTIVITY and lo > bar
    null_p = (null_pass_probability(int(probes["n_eval"]), probes["chance"], best["control_shuffle"] + PLAN_SELECTIVITY, bar)
              if probes.get("n_eval") else None)
    where = "embeddings" if best["layer"] == 0 else f"after block {best['layer'] - 1}"
    failed = ([f"selectivity {best['selectivity']:+.3f} < {PLAN_SELECTIVITY:+.2f}"] if best["selectivity"] < PLAN_SELECTIVITY else [])
    if lo <= bar:
        failed.append(f"the accuracy CI's lower end {lo:.3f} does not clear {bar:.3f} (the highest of chance, shuffled "
                      "labels and the untrained model)")
    text = (f"{where_kind} ({where} at '{best['position_label']}', best of {best['cells_searched']} cells on the selection "
            f"half): accuracy {best['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] on {probes.get('n_eval') or 'the other'} held-out "
            f"graphs, selectivity {best['selectivity']:+.3f} over shuffled labels (needs >= {PLAN_SELECTIVITY:+.2f})"
            + (f", untrained model {untrained:.3f}" if untrained is not None else ""))
    return _PlanCell(best, where_kind, ok, text, "; ".join(failed), null_p)


def plan_verdict(probes: dict) -> dict:
    """yes when the best goal-arm probe cell strictly before the answer, or at the decision position
    before the last block, beats shuffled labels by >= PLAN_SELECTIVITY and its accuracy's Wilson CI
    (on the evaluation half, which the cell's selection did not use) lies above chance, the
    shuffled-label control and the untrained model's accuracy there; otherwise no."""
    cells = [(probes.get("best") or {}, "before the answer"), (probes.get("best_at_decision") or {}, "at the decision position")]
    results = [_plan_cell(probes, b, w) for b, w in cells if b]
    if not results:
        return verdict("no", f"no probe cell before the answer could be measured ({probes['target']})")
    yes = [r for r in results if r.ok]
    # Two cells are tested, so a yes by chance has at most the sum of their null pass probabilities
    # (Bonferroni); with few held-out graphs that is a few percent, and a sweep of many runs meets one
    # (docs/study-objectives.md: one in 63 runs, gone on 2,000 fresh graphs).
    nulls = [r.null_p for r in results if r.null_p is not None]
    null_p = min(1.0, sum(nulls)) if nulls else None
    if yes:
        clause = f"{yes[0].where}, the probe reads the goal arm beyond every control"
        if null_p is not None:
            clause += (f" (a cell with no goal-arm information clears these bars on {probes['n_eval']} held-out graphs "
                       f"with probability at most {null_p:.2g}"
                       + ("; re-measure on more graphs (--mechanism-graphs) before believing it)" if null_p >= NULL_PASS_WARN
                          else ")"))
    else:
        clause = "no cell clears the bars (" + "; ".join(f"{r.where}: {r.why}" for r in results) + ")"
    evidence = f"{clause} — {probes['target']} probe (chance {probes['chance']:.3f}): " + "; ".join(r.text for r in results)
    if probes.get("constant_target"):
        evidence = (f"the {probes['target']} is the same in every graph of this task (a label cue), so a probe has nothing "
                    f"to decode: {evidence}")
    causal = probes.get("causal")
    if causal:
        evidence += (f"; steering along the prompt cell's probe moves the decision logit difference by "
                     f"{causal['steer_probe']['mean_change']:+.3f} (random directions {causal['steer_random']['mean_change']:+.3f})")
    chosen = (yes or results)[0]
    b = chosen.best
    return verdict("yes" if yes else "no", evidence, where=chosen.where, layer=b["layer"], position=b["position_label"],
                   accuracy=b["accuracy"], accuracy_ci=b["accuracy_ci"], selectivity=b["selectivity"],
                   chance=probes["chance"], null_pass_probability=null_p,
                   cells={r.where: {k: r.best[k] for k in ("layer", "position_label", "accuracy", "accuracy_ci", "selectivity")}
                          for r in results})


PLAN_REPRESENTED = register_question(QuestionSpec(
    key="plan_represented", text="Plan represented before the answer?", needs=("probes",), order=40,
    decide=lambda ctx: plan_verdict(ctx.analysis("probes")),
    rule=("yes when a linear probe reads the goal arm before the answer (or at the decision position before the last "
          "block), >= {plan_selectivity:.2f} above shuffled labels and above the untrained model, on held-out graphs."),
    thresholds={"plan_selectivity": PLAN_SELECTIVITY, "plan_null_pass_warn": NULL_PASS_WARN},
))
