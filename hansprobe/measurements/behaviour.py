"""Behaviour: exact match, per-position accuracy (free decoding and forced inputs) and decision
accuracy against chance, each with a 95% Wilson interval."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hansprobe.mechanics.results import Result, fmt_ci, wilson_ci
from hansprobe.mechanics.forward import chunks
from hansprobe.measurements.registry import AnalysisSpec, register_analysis
from hansprobe.objectives import Objective
from hansprobe.tasks.base import Batch


@dataclass
class BehaviourResult(Result):
    objective: str
    n_graphs: int
    chance: float
    decision_index: int  # label index of the decision token (1, or l-2 for reversed targets)
    exact_match: float
    exact_match_ci: tuple[float, float]
    decision_accuracy: float  # free decoding, at decision_index
    decision_accuracy_ci: tuple[float, float]
    forced_accuracy: list[float]  # per label position, the objective's own input
    forced_accuracy_ci: list[tuple[float, float]]
    free_accuracy: list[float]  # per label position, greedy decoding
    free_accuracy_ci: list[tuple[float, float]]
    label_names: list[str] = field(default_factory=list)  # the path token at each label position (reverse: goal first)

    def figures(self) -> dict:
        import plotly.graph_objects as go

        fig = go.Figure()
        xs = self.label_names or [f"r{i}" for i in range(len(self.forced_accuracy))]
        for name, acc, ci in (("free decoding", self.free_accuracy, self.free_accuracy_ci),
                              ("forced input", self.forced_accuracy, self.forced_accuracy_ci)):
            fig.add_bar(name=name, x=xs, y=acc, error_y=dict(
                type="data", symmetric=False,
                array=[hi - a for a, (lo, hi) in zip(acc, ci)], arrayminus=[a - lo for a, (lo, hi) in zip(acc, ci)]))
        fig.add_hline(y=self.chance, line_dash="dot", annotation_text=f"chance 1/d = {self.chance:.2f}")
        fig.update_layout(barmode="group", yaxis_range=[0, 1.05], xaxis_title="label position (objective order)",
                          yaxis_title="accuracy",
                          title=f"Per-position accuracy ({self.objective}, {self.n_graphs} graphs, 95% CI)")
        return {"per_position_accuracy": fig}

    def text(self) -> str:
        names = self.label_names or [f"r{i}" for i in range(len(self.forced_accuracy))]
        lines = [f"  exact match        {fmt_ci(self.exact_match, self.exact_match_ci)}",
                 f"  decision accuracy  {fmt_ci(self.decision_accuracy, self.decision_accuracy_ci)}   chance 1/d = "
                 f"{self.chance:.3f}   (label index {self.decision_index})",
                 "  position  forced               free"]
        for n, fa, fc, ra, rc in zip(names, self.forced_accuracy, self.forced_accuracy_ci, self.free_accuracy,
                                     self.free_accuracy_ci):
            lines.append(f"  {n:<9} {fmt_ci(fa, fc)}  {fmt_ci(ra, rc)}")
        return "\n".join(lines)


@torch.no_grad()
def measure_behaviour(model, objective: Objective, batch: Batch, *, batch_size: int = 1000,
                      progress: bool = False, forced_logp: torch.Tensor | None = None,
                      correct: tuple[torch.Tensor, torch.Tensor] | None = None) -> BehaviourResult:
    """Run forced and free decoding over `batch` in chunks of `batch_size` graphs. `forced_logp`:
    the batch's forced label log-probs (B, L, V), when the caller has them (the report's one pass);
    `correct`: (forced, free) correctness (B, L) when the caller has decoded already."""
    if correct is None:
        guesses = None if forced_logp is None else forced_logp.argmax(-1)
        correct = objective.correctness(model, batch, chunks=chunks(batch, batch_size, "behaviour", progress),
                                        guesses=guesses)
    forced_ok, free_ok = correct  # (B, L) each
    n, length = free_ok.shape
    k = objective.decision_index(length)

    def acc(col):
        s = int(col.sum())
        return s / n, wilson_ci(s, n)

    em, em_ci = acc(free_ok.all(1))
    dec, dec_ci = acc(free_ok[:, k])
    forced_acc = [acc(forced_ok[:, i]) for i in range(length)]
    free_acc = [acc(free_ok[:, i]) for i in range(length)]
    return BehaviourResult(
        objective=objective.name, n_graphs=n, chance=batch.task.chance, decision_index=k,
        exact_match=em, exact_match_ci=em_ci, decision_accuracy=dec, decision_accuracy_ci=dec_ci,
        forced_accuracy=[a for a, _ in forced_acc], forced_accuracy_ci=[c for _, c in forced_acc],
        free_accuracy=[a for a, _ in free_acc], free_accuracy_ci=[c for _, c in free_acc],
        label_names=objective.label_names(length),
    )


register_analysis(AnalysisSpec(
    name="behaviour", title="Behaviour", order=10,
    measure=lambda ctx: measure_behaviour(ctx.model, ctx.objective, ctx.batch, batch_size=ctx.batch_size, progress=ctx.progress,
                                          correct=ctx.correctness()),
    captions={
        'per_position_accuracy': 'Accuracy at each answer position, free decoding vs forced inputs (95% Wilson CIs). Look for: under the Clever-Hans shortcut forced accuracy is ~1 from position 2 on, while free decoding is only as good as the decision token.',
    },
))
