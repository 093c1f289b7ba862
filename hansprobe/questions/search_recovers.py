"""The search question, decided from the inference measurement (measurements/inference.py): does a
strategy other than greedy decoding decide above a guesser uniform over the candidates?"""
from __future__ import annotations

from hansprobe.measurements.goal_dependence import FAMILY_ALPHA
from hansprobe.questions.registry import QuestionContext, QuestionSpec, ci_text, register_question, verdict


def search_verdict(inference: dict | None, why_not: str | None = None) -> dict:
    """not needed when greedy decoding beats the uniform guesser; yes when another strategy does
    (the one of largest accuracy named, with its gain over greedy); no when none does; all at the
    family-wise level."""
    if inference is None:
        return verdict("not applicable", why_not or "inference-time search was not measured")
    rows = inference["rows"]
    greedy = rows[0]
    winners = [r for r in rows[1:] if r["beats_uniform"]]
    level = f"{inference['ci_level']:.2%} CIs, family-wise alpha {inference['family_alpha']} over {len(rows)} strategies"
    g = f"greedy {ci_text(greedy['accuracy'], greedy['accuracy_ci'], 3)} against 1/d = {greedy['uniform_accuracy']:.3f}"
    if greedy["beats_uniform"]:
        best = max(rows, key=lambda r: r["accuracy"] - r["uniform_accuracy"])  # a pass@k is measured against its own guesser
        return verdict("not needed", f"greedy decoding already decides above the uniform guesser — {g}; furthest above "
                       f"its guesser: {best['strategy']} {best['accuracy']:.3f} against {best['uniform_accuracy']:.3f} "
                       f"({level})", best=best["strategy"], greedy_accuracy=greedy["accuracy"])
    if winners:
        best = max(winners, key=lambda r: r["accuracy"] - r["uniform_accuracy"])
        gain = best["accuracy"] - greedy["accuracy"]
        return verdict("yes", f"{best['strategy']} recovers the decision: {ci_text(best['accuracy'], best['accuracy_ci'], 3)} "
                       f"against a uniform guesser's {best['uniform_accuracy']:.3f} with the same budget, {gain:+.3f} over "
                       f"greedy — {g}; {len(winners)} of {len(rows) - 1} strategies beat it ({level})",
                       best=best["strategy"], gain_over_greedy=gain, beating=[r["strategy"] for r in winners])
    top = max(rows, key=lambda r: r["accuracy"] - r["uniform_accuracy"])
    return verdict("no", f"no strategy beats a guesser uniform over the candidates — {g}; closest {top['strategy']} "
                   f"{ci_text(top['accuracy'], top['accuracy_ci'], 3)} against {top['uniform_accuracy']:.3f} ({level})",
                   closest=top["strategy"])


def _decide(ctx: QuestionContext) -> dict:
    return search_verdict(ctx.analysis("inference"), ctx.skipped("inference"))


SEARCH = register_question(QuestionSpec(
    key="search_recovers", text="Can inference-time search recover the decision?", needs=("inference",), decide=_decide,
    order=25,
    rule=("not needed when greedy decoding's decision accuracy lies above a guesser uniform over the d candidates; yes "
          "when another strategy's does (beam 2/d/2d, a vote of 1/4/16 samples at T = 0.7 or 1, likelihood-ranked best "
          "of 4/16, oracle-verified pass@1..8 against 1 - (1 - 1/d)^k); no when none does. Every lower bound is exact "
          "at the family-wise level alpha = {search_family_alpha} shared by Bonferroni over the strategies."),
    thresholds={"search_family_alpha": FAMILY_ALPHA},
    applied_by={"search_family_alpha": "inference.family_alpha"},
))
