"""Error compounding: is a wrong answer a failure of execution that snowballs, or one wrong decision?

The snowballing argument bounds exact match by (1 - eps)^T when every position errs independently
with rate eps: small per-token errors compound over a long answer. The argument under study says
that bound diagnoses a failure of *execution*, not of *learning*: under the Clever-Hans failure the
later tokens are right whenever their prefix is (forced accuracy ~1 from r2 on), so every wrong
answer starts at the decision token and nothing compounds after it. This analysis measures, under
the objective's own greedy decoding (the decoding behaviour uses, shared through the context):

- for every wrong sequence, the label position of its first error, and the share of wrong sequences
  whose first error is the decision token (`first_error_at_decision_share`, exact CI);
- the per-position error with the true prefix (forced) and without it (free);
- the exact match that independent per-position errors would give, prod_i (1 - eps_i^forced),
  beside the measured exact match (Wilson CI).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from hansprobe.mechanics.results import Result, fmt_ci, wilson_ci
from hansprobe.measurements.registry import AnalysisSpec, register_analysis
from hansprobe.error_rates import rate_ci
from hansprobe.objectives import Objective


@dataclass
class CompoundingResult(Result):
    objective: str
    n_graphs: int
    decision_index: int  # label index of the decision token (objective order)
    label_names: list[str]  # the path token at each label position
    wrong: int  # sequences with at least one wrong token under greedy decoding
    first_error_counts: list[int]  # [position]: wrong sequences whose first error is there
    first_error_at_decision_share: float | None  # None when no sequence is wrong
    first_error_at_decision_ci: tuple[float, float] | None  # exact (Clopper-Pearson) 95%
    forced_error: list[float]  # [position]: 1 - accuracy with the true prefix
    free_error: list[float]  # [position]: 1 - accuracy under greedy decoding
    independent_exact_match: float  # prod_i (1 - forced_error[i]): what independent errors would give
    exact_match: float  # measured, greedy decoding
    exact_match_ci: tuple[float, float]  # Wilson 95%
    errors_after_first: float | None = None  # mean later-position errors of a wrong sequence, right prefix or not
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return self.to_dict()

    def figures(self) -> dict:
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14, subplot_titles=(
            f"first error of the {self.wrong} wrong answers", "per-position error: true prefix vs greedy"))
        share = [c / self.wrong if self.wrong else 0.0 for c in self.first_error_counts]
        fig.add_bar(x=self.label_names, y=share, name="first error here", row=1, col=1,
                    marker_color=["#d62728" if i == self.decision_index else "#7f7f7f" for i in range(len(share))])
        fig.add_scatter(x=self.label_names, y=self.forced_error, mode="lines+markers", name="error, true prefix (forced)",
                        row=1, col=2)
        fig.add_scatter(x=self.label_names, y=self.free_error, mode="lines+markers", name="error, greedy decoding (free)",
                        row=1, col=2)
        fig.update_yaxes(range=[0, 1.05], row=1, col=1, title_text="share of wrong answers")
        fig.update_yaxes(range=[0, 1.05], row=1, col=2, title_text="error rate")
        fig.update_layout(title=(f"Error compounding ({self.objective}, {self.n_graphs} graphs): exact match "
                                 f"{self.exact_match:.3f} measured, {self.independent_exact_match:.3f} if the forced "
                                 f"errors were independent"))
        return {"first_error": fig}

    def line(self) -> str:
        """One sentence for a model card."""
        if not self.wrong:
            return f"no wrong answer in {self.n_graphs} graphs: nothing to compound"
        at = self.label_names[self.decision_index]
        return (f"{self.first_error_at_decision_share:.0%} of the {self.wrong} wrong answers first err at the decision "
                f"token {at} (CI {self.first_error_at_decision_ci[0]:.3f}-{self.first_error_at_decision_ci[1]:.3f}); "
                f"forced error after it at most {max(self.forced_error[self.decision_index + 1:] or [0.0]):.3f}; exact "
                f"match {self.exact_match:.3f} against {self.independent_exact_match:.3f} from independent errors")

    def text(self) -> str:
        lines = [f"  {self.line()}", f"  exact match {fmt_ci(self.exact_match, self.exact_match_ci)}; independent "
                 f"per-position errors would give {self.independent_exact_match:.3f}",
                 "  position  first error  forced error  free error"]
        for i, n in enumerate(self.label_names):
            mark = "  <- decision" if i == self.decision_index else ""
            lines.append(f"  {n:<9} {self.first_error_counts[i]:>11}  {self.forced_error[i]:>12.3f}  "
                         f"{self.free_error[i]:>10.3f}{mark}")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def measure_compounding(objective: Objective, forced_ok: torch.Tensor, free_ok: torch.Tensor) -> CompoundingResult:
    """From per-graph, per-position correctness (B, L) bool with the true prefix (`forced_ok`) and under
    the objective's greedy decoding (`free_ok`): `Objective.correctness` or the report's shared pass."""
    n, length = free_ok.shape
    k = objective.decision_index(length)
    wrong_rows = ~free_ok.all(1)  # (B,)
    wrong = int(wrong_rows.sum())
    first = (~free_ok[wrong_rows]).float().argmax(1)  # (W,): the first wrong label of each wrong answer
    counts = torch.bincount(first, minlength=length).tolist()
    share = ci = None
    if wrong:
        share = counts[k] / wrong
        ci = tuple(rate_ci(counts[k], wrong))  # exact (Clopper-Pearson) 95%
    forced_err = [1 - float(c.float().mean()) for c in forced_ok.T]
    free_err = [1 - float(c.float().mean()) for c in free_ok.T]
    independent = float(torch.tensor([1 - e for e in forced_err], dtype=torch.float64).prod())
    em = int(free_ok.all(1).sum())
    later = None
    if wrong:
        after = torch.arange(length)[None, :] > first[:, None]  # (W, L): the positions after the first error
        later = float(((~free_ok[wrong_rows]) & after).sum(1).float().mean())
    notes = []
    if objective.teacherless:
        notes.append("teacherless decoding answers every position in one pass: there is no fed-back prefix to compound")
    return CompoundingResult(
        objective=objective.name, n_graphs=n, decision_index=k, label_names=objective.label_names(length), wrong=wrong,
        first_error_counts=counts, first_error_at_decision_share=share, first_error_at_decision_ci=ci,
        forced_error=forced_err, free_error=free_err, independent_exact_match=independent, exact_match=em / n,
        exact_match_ci=wilson_ci(em, n), errors_after_first=later, notes=notes)


register_analysis(AnalysisSpec(
    name="compounding", title="Error compounding", order=12,
    measure=lambda ctx: measure_compounding(ctx.objective, *ctx.correctness()),
    captions={
        "first_error": "Left: where each wrong answer first goes wrong (the decision token in red). Right: per-position "
                       "error with the true prefix (forced) and under greedy decoding (free). Look for: under the "
                       "Clever-Hans failure every wrong answer starts at the decision and the forced error after it "
                       "is ~0, so the snowballing bound (1 - eps)^T does not describe it: one decision fails, "
                       "execution does not.",
    },
))
