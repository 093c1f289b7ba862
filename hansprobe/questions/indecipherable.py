"""The indecipherable question, decided from the entropy measurement's outcome (design.md's rule,
measurements/entropy.py): is the first decision token a uniform guess over the candidates?"""
from __future__ import annotations

from hansprobe.measurements.entropy import CANDIDATE_MASS_MIN, EQUIVALENCE_ALPHA, EQUIVALENCE_BAND, INFO_FRACTION
from hansprobe.measurements.goal_dependence import FAMILY_ALPHA
from hansprobe.questions.registry import QuestionSpec, ci_text, register_question, verdict

INDECIPHERABLE_ANSWER = {"indecipherable": "yes", "decided": "no", "not learned": "not learned",
                         "inconclusive": "inconclusive", "not applicable": "not applicable"}


def indecipherable_verdict(entropy: dict) -> dict:
    """The entropy analysis's outcome (design.md's rule): the clause that decided it first, then the figures."""
    e = entropy
    answer = INDECIPHERABLE_ANSWER[e["outcome"]]
    parts = [e["verdict"]]
    if answer == "not applicable":  # a question without an object carries no values (docs/report.md); the numbers stay in analyses.entropy
        return verdict(answer, e["verdict"])
    parts += [f"decision accuracy over the whole vocabulary {ci_text(e['decision_accuracy'], e['decision_accuracy_ci'])}",
              f"information over uniform {ci_text(e['information_nats'], e['information_nats_ci'])} nats",
              f"candidate entropy {ci_text(e['candidate_entropy_frac'], e['candidate_entropy_frac_ci'])} x log d",
              f"mass outside the candidates {e['mass_outside_candidates']:.3f}"]
    follows = [f"{k} {ci_text(v['rate'], v['ci'])}" for k, v in e.get("preference", {}).items() if v["follows"]]
    if follows:
        parts.append("the top candidate is the " + "; ".join(follows) + f" (chance {e['chance']:.3f})")
    return verdict(answer, "; ".join(parts), outcome=e["outcome"], candidate_accuracy=e["candidate_accuracy"],
                   candidate_accuracy_ci=e["candidate_accuracy_ci"], decision_accuracy=e["decision_accuracy"],
                   decision_accuracy_ci=e["decision_accuracy_ci"], chance=e["chance"], equivalence=e["equivalence"],
                   information_nats=e["information_nats"], information_nats_ci=e["information_nats_ci"],
                   candidate_entropy_frac=e["candidate_entropy_frac"],
                   mass_outside_candidates=e["mass_outside_candidates"],
                   follows=[k for k, v in e.get("preference", {}).items() if v["follows"]])


INDECIPHERABLE = register_question(QuestionSpec(
    key="indecipherable", text="First decision token indecipherable?", needs=("entropy",), order=20,
    decide=lambda ctx: indecipherable_verdict(ctx.analysis("entropy")),
    rule=("yes when the accuracy among the d candidates is shown equivalent to 1/d (two one-sided tests at "
          "{equivalence_alpha}, against a band of {equivalence_band:.0%} of the way from chance to perfect or to "
          "never), the goal does not move the decision, and the information over uniform is <= "
          "{information_fraction} log d; no (decided) when the goal moves the decision toward or away from it, or the "
          "accuracy lies above 1/d, or the information above {information_fraction} log d, each route tested so that "
          "together they err on a model that ignores the goal in at most {family_alpha:.0%} of graph draws; 'not "
          "learned' when less than {candidate_mass_min:.0%} of the mass is on the candidates."),
    thresholds={"equivalence_band": EQUIVALENCE_BAND, "equivalence_alpha": EQUIVALENCE_ALPHA,
                "information_fraction": INFO_FRACTION, "candidate_mass_min": CANDIDATE_MASS_MIN,
                "family_alpha": FAMILY_ALPHA},
    applied_by={k: f"entropy.thresholds.{k}" for k in ("equivalence_band", "equivalence_alpha", "information_fraction",
                                                        "candidate_mass_min", "family_alpha")},
))
