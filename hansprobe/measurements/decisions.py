"""Every decision of a tree path: on T(b, h >= 3) the answer makes h - 1 choices
(label k among the children of r_(k-1)), and the report's entropy analysis measures only the first.
Here each decision index k gets its own candidates, candidate accuracy against chance, information
over uniform, goal dependence on goal-swap pairs at that level (the goal moved under another child
of r_(k-1): the input before decision k is unchanged) and the indecipherable outcome of design.md,
all from one forced pass of the batch plus one per level for the partners (and one placebo pass)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hansprobe.mechanics.results import Result, fmt_ci
from hansprobe.mechanics.forward import label_logprobs
from hansprobe.measurements.entropy import entropy_from_logprobs
from hansprobe.measurements.goal_dependence import GoalDependenceResult, _log_odds, _summarise, route_alpha
from hansprobe.measurements.registry import AnalysisContext, AnalysisSpec, register_analysis
from hansprobe.objectives import Objective
from hansprobe.tasks.base import Batch


@dataclass
class DecisionsResult(Result):
    objective: str
    n_graphs: int
    chance: float
    decisions: list = field(default_factory=list)  # per decision index: index, candidate accuracy + CI, outcome, ...
    depth: int = 0  # the goal's label index: decision k is depth - k backward hops from the goal

    def text(self) -> str:
        lines = []
        for d in self.decisions:
            g, hops = d["goal_swap"], self.depth - d["index"]
            lines.append(f"  r{d['index']} ({hops} backward hop{'s' if hops != 1 else ''} from the goal): "
                         f"{fmt_ci(d['candidate_accuracy'], d['candidate_accuracy_ci'])} among the candidates (chance "
                         f"{self.chance:.3f}); goal swap {g['status']}, signed Δ {fmt_ci(g['delta_mean'], g['delta_mean_ci'])}"
                         f" nats; {d['outcome']}")
        return "\n".join(lines)

    def figures(self) -> dict:
        import plotly.graph_objects as go

        if not self.decisions:
            return {}
        xs = [f"r{d['index']}" for d in self.decisions]
        acc = [d["candidate_accuracy"] for d in self.decisions]
        fig = go.Figure(go.Bar(x=xs, y=acc, error_y=dict(
            type="data", symmetric=False, array=[d["candidate_accuracy_ci"][1] - a for d, a in zip(self.decisions, acc)],
            arrayminus=[a - d["candidate_accuracy_ci"][0] for d, a in zip(self.decisions, acc)]),
            text=[d["outcome"] for d in self.decisions], textposition="outside"))
        fig.add_hline(y=self.chance, line_dash="dot", annotation_text=f"chance 1/b = {self.chance:.2f}")
        fig.update_layout(yaxis_range=[0, 1.1], xaxis_title="decision (label index)", yaxis_title="accuracy among the candidates",
                          title=f"Every decision of the path ({self.objective}, {self.n_graphs} graphs, 95% CI; outcome above)")
        return {"decisions_by_index": fig}


def measure_decisions(model, objective: Objective, batch: Batch, *, seed: int = 0, batch_size: int = 1000,
                      forced_logp: torch.Tensor | None = None) -> DecisionsResult:
    """`forced_logp`: the batch's forced label log-probs (B, L, V), when the caller has them."""
    from hansprobe.tasks.tree import decision_view, goal_swap_at

    task = batch.task
    logp = label_logprobs(model, objective, batch, batch_size, "decisions") if forced_logp is None else forced_logp
    placebo = label_logprobs(model, objective, task.placebo(batch, seed), batch_size, "decisions")
    out = []
    for k in task.decision_indices:
        view = decision_view(batch, k)
        partner = goal_swap_at(batch, k, seed)
        p_logp = label_logprobs(model, objective, partner, batch_size, "decisions")
        a, b = batch.target[:, k], partner.target[:, k]
        m_c, m_p, m_0 = (_log_odds(x[:, k], a, b) for x in (logp, p_logp, placebo))
        kinds = {"goal_swap": _summarise((m_c - m_p).double().numpy(), (m_c - m_0).double().numpy(),
                                         m_c.double().numpy(), m_p.double().numpy(), seed,
                                         route_alpha(1))}
        gd = GoalDependenceResult(objective=objective.name, n_graphs=len(batch), decision_index=k, applicable=True,
                                  reason="", kinds=kinds)
        e = entropy_from_logprobs(logp[:, k], objective, view, seed, gd)
        out.append({"index": k, "candidate_accuracy": e.candidate_accuracy, "candidate_accuracy_ci": list(e.candidate_accuracy_ci),
                    "information_nats": e.information_nats, "information_nats_ci": list(e.information_nats_ci),
                    "mass_outside_candidates": e.mass_outside_candidates, "outcome": e.outcome, "verdict": e.verdict,
                    "goal_swap": {key: kinds["goal_swap"][key] for key in ("status", "delta_mean", "delta_mean_ci",
                                                                            "follow_share", "follow_ci")}})
    return DecisionsResult(objective=objective.name, n_graphs=len(batch), chance=task.chance, decisions=out,
                           depth=task.target_len - 1)


def _decisions_skip(ctx: AnalysisContext) -> str | None:
    if len(getattr(ctx.task, "decision_indices", [])) < 2 or not hasattr(ctx.task, "branching"):
        return "the task makes one decision before the answer (measured by the entropy analysis)"
    if ctx.objective.reverse:
        return "under reversed targets the decisions are parent lookups, not choices"
    return None


register_analysis(AnalysisSpec(
    name="decisions", title="Every decision of the path", order=25, skip=_decisions_skip,
    measure=lambda ctx: measure_decisions(ctx.model, ctx.objective, ctx.batch, seed=ctx.seed, batch_size=ctx.batch_size,
                                          forced_logp=ctx.forced_logprobs()),
    captions={"decisions_by_index": "Accuracy among the candidates at each decision of a tree path (label k among the "
                                    "children of r_(k-1)), with the indecipherable outcome of each. Look for: later "
                                    "decisions (nearer the goal) decided while the first is at chance."},
))
