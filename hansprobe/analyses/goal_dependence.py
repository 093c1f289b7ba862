"""Goal dependence: does the decision move when only the goal's place moves?

Bias-invariant by construction. For each graph we build a counterfactual partner in which the
correct decision changes from a (clean) to b (partner) and nothing a label heuristic could read
changes with it:

- **goal swap**: the same edges in the same order, the goal token moved to another arm's leaf;
- **arm rewire**: the same tokens (same multiset, same positions but two), the same goal label, the
  goal now reached through another first node (`hansprobe.tasks.pathstar.arm_rewire`).

At the decision position (the objective's own input) m = log q(a) − log q(b), and per pair
Δ = m(clean) − m(partner). A preference that ignores the goal (lowest label, first-listed edge, ...)
adds the same amount to m in both runs and cancels in Δ; a model that follows the goal has Δ ≫ 0.
We report the signed mean (t interval), the mean |Δ| (a sign-inconsistent use of the goal averages
to 0 in the signed mean, not in |Δ|) and the shares of pairs whose candidate argmax follows the goal
in both runs, or goes the opposite way in both.

Any model whose output depends on its input at all moves a little when tokens change (an untrained
model: |Δ| ≈ 0.09 nats on G(2,5)), so |Δ| is compared with a **placebo** on the same graph: the
edges relisted in another order (`edge_reorder`), which changes many positions and not the answer.
The excess |Δ| − |Δ_placebo| per graph (bootstrap CI of its mean) decides: a pair kind shows goal
dependence when the CI lies above DELTA_MIN, its absence when the CI lies below DELTA_MIN, and is
unclear otherwise (docs/decisions.md 19).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from hansprobe.analyses.base import Result, decision_distribution, mean_ci, t_ci, wilson_ci
from hansprobe.objectives import Objective
from hansprobe.tasks.base import Batch

DELTA_MIN = 0.1  # nats of candidate log-odds beyond the placebo; the floor the patching analysis uses for "measurable"


@dataclass
class GoalDependenceResult(Result):
    objective: str
    n_graphs: int
    decision_index: int
    applicable: bool
    reason: str  # why not applicable, or ""
    kinds: dict = field(default_factory=dict)  # pair kind -> figures (see _summarise)
    delta_min: float = DELTA_MIN
    per_pair_delta: dict = field(default_factory=dict, repr=False)  # kind -> [Δ per pair], for the figure

    def status(self, kind: str) -> str:
        """'present', 'absent' or 'unclear' for one pair kind ('n/a' where it could not be built)."""
        k = self.kinds.get(kind)
        return "n/a" if k is None else k["status"]

    @property
    def any_present(self) -> bool:
        return any(k["status"] == "present" for k in self.kinds.values())

    @property
    def all_absent(self) -> bool:
        return bool(self.kinds) and all(k["status"] == "absent" for k in self.kinds.values())

    def summary(self) -> dict:
        d = self.to_dict()
        d.pop("per_pair_delta")
        return d

    def figures(self) -> dict:
        import plotly.graph_objects as go

        if not self.per_pair_delta:
            return {}
        fig = go.Figure()
        for kind, values in self.per_pair_delta.items():
            fig.add_histogram(x=values, name=kind.replace("_", " "), opacity=0.6, nbinsx=60)
        fig.add_vline(x=0, line_dash="dot", annotation_text="ignores the goal")
        fig.update_layout(barmode="overlay", xaxis_title="Δ = m(clean) − m(partner), nats (m = log q(a) − log q(b))",
                          yaxis_title="pairs", title=f"Goal dependence of the decision ({self.objective}, {self.n_graphs} pairs "
                                                     "per kind)")
        return {"goal_dependence": fig}


def _log_odds(logp: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """m = log q(a) - log q(b) per graph from (B, V) decision log-probs."""
    rows = torch.arange(len(logp))
    return logp[rows, a] - logp[rows, b]


def _summarise(delta: np.ndarray, placebo: np.ndarray, m_clean: np.ndarray, m_partner: np.ndarray, seed: int) -> dict:
    n = len(delta)
    follow = int(((m_clean > 0) & (m_partner < 0)).sum())  # picks a, then b: the argmax follows the goal
    anti = int(((m_clean < 0) & (m_partner > 0)).sum())  # the opposite way in both runs
    lo, hi = t_ci(delta)
    abs_ci = mean_ci(np.abs(delta), seed)
    excess = np.abs(delta) - np.abs(placebo)
    ex_ci = mean_ci(excess, seed)
    status = "present" if ex_ci[0] >= DELTA_MIN else "absent" if ex_ci[1] < DELTA_MIN else "unclear"
    return {"n_pairs": n, "delta_mean": float(delta.mean()), "delta_mean_ci": [float(lo), float(hi)],
            "abs_delta_mean": float(np.abs(delta).mean()), "abs_delta_ci": [float(abs_ci[0]), float(abs_ci[1])],
            "placebo_abs_delta_mean": float(np.abs(placebo).mean()),
            "excess_mean": float(excess.mean()), "excess_ci": [float(ex_ci[0]), float(ex_ci[1])],
            "follow_share": follow / n, "follow_ci": list(wilson_ci(follow, n)),
            "anti_follow_share": anti / n, "anti_follow_ci": list(wilson_ci(anti, n)), "status": status}


@torch.no_grad()
def measure_goal_dependence(model, objective: Objective, batch: Batch, seed: int = 0, batch_size: int = 1000,
                            clean_logp: torch.Tensor | None = None) -> GoalDependenceResult:
    """Δ of the candidate log-odds at the decision position on goal-swap and arm-rewire pairs.
    `clean_logp`: the batch's own decision log-probs (`decision_distribution`), when the caller has
    them already; one forward pass per partner kind and one for the placebo are added."""
    n, d = batch.candidates.shape
    length = batch.target.shape[1]
    k = objective.decision_index(length)
    base = dict(objective=objective.name, n_graphs=n, decision_index=k)
    if objective.reverse:
        return GoalDependenceResult(**base, applicable=False, reason=(
            "under reversed targets the goal is copied first and every later token, the arm's first node included, "
            "is the parent of the previous one: there is no decision made before the answer to move"))
    if d < 2:
        return GoalDependenceResult(**base, applicable=False, reason="degree 1: a single candidate, nothing to decide")
    rows = torch.arange(n)
    a = batch.candidates[rows, batch.goal_arm]
    kinds, per_pair = {}, {}
    if clean_logp is None:
        clean_logp = decision_distribution(model, objective, batch, batch_size)
    placebo_logp = decision_distribution(model, objective, batch.task.placebo(batch, seed), batch_size)  # same answer
    for name, build in batch.task.counterfactuals.items():  # the task's pair builders (goal swap, arm rewire)
        partner = build(batch, seed)
        b = partner.candidates[rows, partner.goal_arm]
        m_c = _log_odds(clean_logp, a, b)
        m_p = _log_odds(decision_distribution(model, objective, partner, batch_size), a, b)
        m_0 = _log_odds(placebo_logp, a, b)
        delta, d0 = (m_c - m_p).double().numpy(), (m_c - m_0).double().numpy()
        kinds[name] = _summarise(delta, d0, m_c.double().numpy(), m_p.double().numpy(), seed)
        per_pair[name] = delta.tolist()
    return GoalDependenceResult(**base, applicable=True, reason="", kinds=kinds, per_pair_delta=per_pair)
