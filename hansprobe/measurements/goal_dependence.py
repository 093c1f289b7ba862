"""Goal dependence: does the decision move toward the goal when only the goal's place moves?

For each graph we build a counterfactual partner in which the correct decision changes from a
(clean) to b (partner) and nothing a label heuristic could read changes with it:

- **goal swap**: the same edges in the same order, the goal token moved to another arm's leaf;
- **arm rewire**: the same tokens (same multiset, same positions but two), the same goal label, the
  goal now reached through another first node (`hansprobe.tasks.pathstar.arm_rewire`).

At the decision position (the objective's own input) m = log q(a) − log q(b), and per pair
Δ = m(clean) − m(partner). A preference that ignores the goal (lowest label, first-listed edge, ...)
adds the same amount to m in both runs and cancels in Δ; a model that follows the goal moves it the
same way, toward the goal, in every pair: Δ > 0.

**Decided on the signed effect** (design.md; docs/decisions.md 38, 53): a pair kind shows goal
dependence (`present`) when the t interval of the signed mean Δ at the route's level (1 − route_alpha:
each pair kind is one route to "decided", and the routes share FAMILY_ALPHA) lies above DELTA_MIN,
`opposite` when it lies below −DELTA_MIN, its absence (`absent`) when the 95% interval lies inside
±DELTA_MIN, and `unclear` otherwise. `moved` says whether the goal moves the decision at all, in either
direction (|Δ| beyond what the same-size change of anything else does: see `_moved`). The share of pairs whose candidate argmax follows the goal in both runs is reported with
it. The mean |Δ| and a placebo (the edges relisted in another order, which changes many positions
and not the answer) are description only: a placebo that relists every edge is a far larger
perturbation than a goal swap (one token) or a rewire (two), so comparing |Δ| with it hid real but
small goal effects under edge-order noise.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from hansprobe.mechanics.results import Result, t_ci, wilson_ci
from hansprobe.mechanics.forward import decision_distribution
from hansprobe.objectives import Objective
from hansprobe.tasks.base import Batch

# nats of signed candidate log-odds change per pair: the smallest goal effect that counts, and the
# half-width of "no effect" (docs/decisions.md 38: 0.05 nats of Δ is a shift of ~0.6% in a two-way choice)
DELTA_MIN = 0.05
# The false "decided" rate allowed on a model that ignores the goal, over all the routes to it together
# (each pair kind's signed Δ, the candidate accuracy above chance, the information over uniform):
# Bonferroni, each route at FAMILY_ALPHA / routes (docs/decisions.md 53; measured: docs/calibration.md).
FAMILY_ALPHA = 0.01
# Pair kinds whose partner differs from the clean prompt in the goal token alone: a model that ignores
# the goal gives Δ = 0 in every pair, so the same-size placebo is no change at all (_moved).
GOAL_TOKEN_KINDS = ("goal_swap",)


def route_alpha(n_kinds: int) -> float:
    """Each route's share of FAMILY_ALPHA: the pair kinds, the accuracy and the information."""
    return FAMILY_ALPHA / (n_kinds + 2)


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


def _moved(kind: str, abs_ci, excess_ci) -> bool:
    """Does the goal move the decision at all, toward it or not? On a pair kind that changes the goal
    token alone, when |Δ| is shown above DELTA_MIN (a model that ignores the goal gives Δ = 0 there);
    on the others, when |Δ| exceeds the placebo's (every edge relisted: a larger change than the pair's
    two tokens, so the bar is conservative) by DELTA_MIN."""
    return bool((abs_ci if kind in GOAL_TOKEN_KINDS else excess_ci)[0] > DELTA_MIN)


def _summarise(delta: np.ndarray, placebo: np.ndarray, m_clean: np.ndarray, m_partner: np.ndarray, seed: int,
               alpha: float, kind: str = "goal_swap") -> dict:
    """One pair kind's figures and status; `alpha`: the route's two-sided level for present/opposite."""
    n = len(delta)
    follow = int(((m_clean > 0) & (m_partner < 0)).sum())  # picks a, then b: the argmax follows the goal
    anti = int(((m_clean < 0) & (m_partner > 0)).sum())  # the opposite way in both runs
    lo, hi = (float(x) for x in t_ci(delta))
    rlo, rhi = (float(x) for x in t_ci(delta, level=1 - alpha))
    abs_ci = [float(x) for x in t_ci(np.abs(delta))]
    excess = np.abs(delta) - np.abs(placebo)  # description, and the bar of _moved
    ex_ci = [float(x) for x in t_ci(excess)]
    status = ("present" if rlo > DELTA_MIN else "opposite" if rhi < -DELTA_MIN
              else "absent" if -DELTA_MIN < lo and hi < DELTA_MIN else "unclear")
    return {"n_pairs": n, "delta_mean": float(delta.mean()), "delta_mean_ci": [lo, hi],
            "alpha": alpha, "delta_mean_decision_ci": [rlo, rhi],
            "abs_delta_mean": float(np.abs(delta).mean()), "abs_delta_ci": abs_ci,
            "placebo_abs_delta_mean": float(np.abs(placebo).mean()),
            "excess_mean": float(excess.mean()), "excess_ci": ex_ci, "moved": _moved(kind, abs_ci, ex_ci),
            "follow_share": follow / n, "follow_ci": list(wilson_ci(follow, n)),
            "anti_follow_share": anti / n, "anti_follow_ci": list(wilson_ci(anti, n)), "status": status}


@torch.no_grad()
def goal_dependence_logprobs(model, objective: Objective, batch: Batch, seed: int = 0, batch_size: int = 1000,
                             clean_logp: torch.Tensor | None = None) -> dict | None:
    """The forward passes goal dependence reads: {"clean": (B, V), "placebo": (B, V), "partners": {kind:
    ((B, V), partner decision (B,))}} at the decision position; None where it does not apply. Rows stay
    paired, so the first n rows of each are the measurement on the first n graphs (the calibration
    harness reads several sample sizes from one set of passes)."""
    n, d = batch.candidates.shape
    if objective.reverse or d < 2:
        return None
    rows = torch.arange(n)
    if clean_logp is None:
        clean_logp = decision_distribution(model, objective, batch, batch_size)
    placebo_logp = decision_distribution(model, objective, batch.task.placebo(batch, seed), batch_size)  # same answer
    partners = {}
    for name, build in batch.task.counterfactuals.items():  # the task's pair builders (goal swap, arm rewire)
        partner = build(batch, seed)
        partners[name] = (decision_distribution(model, objective, partner, batch_size),
                          partner.candidates[rows, partner.goal_arm])
    return {"clean": clean_logp, "placebo": placebo_logp, "partners": partners}


def goal_dependence_from_logprobs(objective: Objective, batch: Batch, logps: dict | None,
                                  seed: int = 0) -> GoalDependenceResult:
    """The goal-dependence result from `goal_dependence_logprobs` (rows = the batch's graphs)."""
    n, d = batch.candidates.shape
    base = dict(objective=objective.name, n_graphs=n, decision_index=objective.decision_index(batch.target.shape[1]))
    if objective.reverse:
        return GoalDependenceResult(**base, applicable=False, reason=(
            "under reversed targets the goal is copied first and every later token, the arm's first node included, "
            "is the parent of the previous one: there is no decision made before the answer to move"))
    if d < 2 or logps is None:
        return GoalDependenceResult(**base, applicable=False, reason="degree 1: a single candidate, nothing to decide")
    a = batch.candidates[torch.arange(n), batch.goal_arm]
    alpha = route_alpha(len(logps["partners"]))
    kinds, per_pair = {}, {}
    for name, (partner_logp, b) in logps["partners"].items():
        m_c = _log_odds(logps["clean"], a, b)
        m_p = _log_odds(partner_logp, a, b)
        m_0 = _log_odds(logps["placebo"], a, b)
        delta, d0 = (m_c - m_p).double().numpy(), (m_c - m_0).double().numpy()
        kinds[name] = _summarise(delta, d0, m_c.double().numpy(), m_p.double().numpy(), seed, alpha, name)
        per_pair[name] = delta.tolist()
    return GoalDependenceResult(**base, applicable=True, reason="", kinds=kinds, per_pair_delta=per_pair)


def measure_goal_dependence(model, objective: Objective, batch: Batch, *, seed: int = 0, batch_size: int = 1000,
                            clean_logp: torch.Tensor | None = None) -> GoalDependenceResult:
    """Δ of the candidate log-odds at the decision position on goal-swap and arm-rewire pairs.
    `clean_logp`: the batch's own decision log-probs (`decision_distribution`), when the caller has
    them already; one forward pass per partner kind and one for the placebo are added."""
    logps = goal_dependence_logprobs(model, objective, batch, seed, batch_size, clean_logp)
    return goal_dependence_from_logprobs(objective, batch, logps, seed)
