"""Constructed models of known truth: hand-made decision rules that read the graph back from the
input tokens, so that a verdict can be checked, over many graph draws, on models whose right answer
is known by construction (the calibration harness, hansprobe/calibrate.py; the verdict tests).

A `RuleModel` puts `rule(structure) -> (B, D)` logits on the d candidates at the decision position
(and `off` nats less on every other token) and predicts uniformly elsewhere. `CONSTRUCTED` names the
rules the calibration table measures: nulls that ignore the goal (uniform, with a label or edge-order
preference, with edge-order noise), goal signals of several sizes under that noise, a planner, a
model that steers away from the goal, and the review's traps (a decision that flips with the goal
label's parity). Each says which answers to each cheap question would be false on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hansprobe.tasks.pathstar import PathStar


def structure_from_tokens(task: PathStar, tokens: Int[Tensor, "batch pos"]) -> dict:
    """Read a path-star prompt back from input tokens (B, T): candidates (sorted children of the
    start), the goal arm (walking up from the goal), the goal label, the start and the edge tokens.
    Lets a constructed model answer counterfactual partners (goal swap, arm rewire) as its rule says,
    not by row."""
    p, e, n = task.prefix_len, task.n_edges, task.n_nodes
    parent, child = tokens[:, 0:3 * e:3], tokens[:, 1:3 * e:3]
    start, goal = tokens[:, p - 3], tokens[:, p - 2]
    big = torch.full_like(child, n)
    candidates = torch.where(parent == start[:, None], child, big).sort(1).values[:, :task.degree]  # (B, D)
    parent_of = torch.full((len(tokens), n + 1), n).scatter_(1, child, parent)  # (B, N+1)
    node = goal
    for _ in range(task.path_len - 2):
        node = parent_of.gather(1, node[:, None])[:, 0]
    goal_arm = (candidates == node[:, None]).float().argmax(1)
    from_start = parent == start[:, None]  # (B, E)
    listed = torch.where(from_start, torch.arange(e).expand_as(parent), e)  # edge index of each start edge
    first_listed = torch.gather(child, 1, listed.argmin(1, keepdim=True))[:, 0]  # the child of the first-listed start edge
    first_listed_arm = (candidates == first_listed[:, None]).float().argmax(1)
    return {"candidates": candidates, "goal_arm": goal_arm, "goal": goal, "start": start, "edges": tokens[:, :3 * e],
            "first_listed_arm": first_listed_arm}


def edge_order_noise(edges: Int[Tensor, "batch edge_tokens"], d: int) -> Float[Tensor, "batch d"]:
    """(B, D) standard-normal-like values that are a fixed function of the edge list's tokens in
    their order (not of the goal): a model's confidence tied to edge order. Relisting or rewiring
    the edges redraws them; a goal swap leaves them as they were."""
    pos = torch.arange(1, edges.shape[1] + 1, dtype=torch.float64)
    u = []
    for j in range(d):
        x = (edges.double() * torch.sin(pos * (1.7 + j) + 0.3 * j)).sum(1)  # (B,)
        u.append(torch.frac(torch.sin(x * 12.9898) * 43758.5453).abs())
    u = torch.stack(u, 1).clamp(1e-6, 1 - 1e-6)
    return (torch.erfinv(2 * u - 1) * 2 ** 0.5).float()  # (B, D)


class RuleModel(torch.nn.Module):
    """A constructed model: at the decision position its logits over the candidates are
    `rule(structure) -> (B, D)` (structure_from_tokens), `off` nats below their maximum on every
    other token (so mass can sit off the candidates); uniform at every other position. Forward
    objectives on the standard path-star layout."""

    def __init__(self, task: PathStar, objective, rule: Callable[[dict], Tensor], off: float = 30.0):
        super().__init__()
        self.task, self.objective, self.rule, self.off = task, objective, rule, off
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # so next(model.parameters()) gives a device

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos vocab"]:
        b, t = tokens.shape
        v = self.task.d_vocab
        out = torch.zeros(b, t, v)
        s = structure_from_tokens(self.task, tokens)
        cand_logits = self.rule(s).float()  # (B, D)
        row = torch.full((b, v), -self.off) + cand_logits.max(1, keepdim=True).values
        row.scatter_(1, s["candidates"], cand_logits)
        pos = self.task.prefix_len - 1 + self.objective.decision_index(self.task.target_len)
        if pos < t:
            out[:, pos] = row
        return out.log_softmax(-1)


# --- the named rules the calibration table measures ------------------------------------------------
def _arm(arm: Tensor, d: int, nats: float) -> Tensor:
    return torch.nn.functional.one_hot(arm, d).float() * nats  # (B, D)


def goal_signal(alpha: float, sigma: float = 0.0, d: int = 2) -> Callable[[dict], Tensor]:
    """alpha nats on the goal's arm (negative: away from it) + sigma x noise tied to edge order."""
    return lambda s: _arm(s["goal_arm"], d, alpha) + sigma * edge_order_noise(s["edges"], d)


def label_preference(nats: float, d: int = 2, sigma: float = 0.0) -> Callable[[dict], Tensor]:
    """nats on the lowest-labelled candidate whatever the goal (a label preference), plus edge-order noise."""
    return lambda s: _arm(torch.zeros_like(s["goal_arm"]), d, nats) + sigma * edge_order_noise(s["edges"], d)


def first_listed_preference(nats: float, d: int = 2) -> Callable[[dict], Tensor]:
    """nats on the candidate whose edge from the start is listed first in the prompt."""
    return lambda s: _arm(s["first_listed_arm"], d, nats)


def goal_parity(nats: float, d: int = 2) -> Callable[[dict], Tensor]:
    """Toward the goal's arm for even goal labels, away from it for odd ones (the review's trap: |Δ| is
    large in every pair, the signed mean ~0, the accuracy at chance)."""
    return lambda s: _arm(s["goal_arm"], d, nats) * (1 - 2 * (s["goal"] % 2)).float()[:, None]


def wrong_favourite(p_right: float = 0.3, p_favourite: float = 0.4, d: int = 5) -> Callable[[dict], Tensor]:
    """p_right on the goal's arm (above 1/d) and p_favourite on the next arm (more than on the goal's),
    the rest spread evenly: greedy decoding is always wrong, yet samples find the goal's arm more
    often than a uniform guesser (inference-time search's "yes", hansprobe/measurements/inference.py)."""
    rest = (1 - p_right - p_favourite) / (d - 2)

    def rule(s):
        probs = torch.full((len(s["goal_arm"]), d), rest)
        probs[torch.arange(len(probs)), s["goal_arm"]] = p_right
        probs[torch.arange(len(probs)), (s["goal_arm"] + 1) % d] = p_favourite
        return probs.log()

    return rule


NULL = {"indecipherable": ("no", "not learned"), "decision_computed": ("yes",),
        "clever_hans_failure": ("no",)}  # ignores the goal: "decided" or "computed" would be false
SIGNAL = {"indecipherable": ("yes",), "decision_computed": ("no",),
          "clever_hans_failure": ("yes",)}  # follows the goal (through the graph): "indecipherable" would be false
AWAY = {"indecipherable": ("yes",), "decision_computed": ("yes",), "clever_hans_failure": ("yes",)}


@dataclass(frozen=True)
class Constructed:
    """A named constructed model: its rule, degree, what it is, and per question the answers that
    would be false on it (`false`); `trap`: the review item it stands for, if any."""

    name: str
    rule: Callable[[int], Callable[[dict], Tensor]]  # degree -> rule
    what: str
    false: dict = field(default_factory=dict)
    degree: int = 2
    path_len: int = 5
    n_nodes: int = 50
    trap: str = ""

    def task(self) -> PathStar:
        return PathStar(self.degree, self.path_len, self.n_nodes)

    def model(self, objective) -> RuleModel:
        return RuleModel(self.task(), objective, self.rule(self.degree))


CONSTRUCTED = {c.name: c for c in [
    Constructed("null-uniform", lambda d: goal_signal(0.0, 0.0, d), "uniform over the candidates, ignores the goal", NULL),
    Constructed("null-uniform-d5", lambda d: goal_signal(0.0, 0.0, d), "the same at d = 5 (chance 0.2)", NULL, degree=5),
    Constructed("null-lowest-label", lambda d: label_preference(1.0, d), "1 nat toward the lowest label, ignores the goal",
                NULL),
    Constructed("null-first-listed", lambda d: first_listed_preference(1.0, d),
                "1 nat toward the first-listed start edge, ignores the goal", NULL),
    Constructed("null-edge-noise", lambda d: goal_signal(0.0, 0.38, d),
                "edge-order noise of sd 0.38 nats (the lr 5e-4 control's size), ignores the goal", NULL),
    Constructed("null-edge-noise-8", lambda d: goal_signal(0.0, 8.0, d), "edge-order noise of sd 8 nats, ignores the goal",
                NULL),
    Constructed("null-label-and-noise", lambda d: label_preference(1.0, d, 0.38),
                "the lowest-label preference under edge-order noise 0.38", NULL),
    Constructed("signal-0.05", lambda d: goal_signal(0.05, 0.38, d), "0.05 nats toward the goal under edge-order noise 0.38",
                SIGNAL),
    Constructed("signal-0.1", lambda d: goal_signal(0.1, 0.38, d), "0.1 nats toward the goal under edge-order noise 0.38",
                SIGNAL),
    Constructed("signal-0.2", lambda d: goal_signal(0.2, 0.38, d), "0.2 nats toward the goal under edge-order noise 0.38",
                SIGNAL),
    Constructed("planner", lambda d: goal_signal(4.0, 0.38, d), "4 nats toward the goal: a model that plans", SIGNAL),
    Constructed("away-0.2", lambda d: goal_signal(-0.2, 0.38, d), "0.2 nats away from the goal under edge-order noise",
                AWAY, trap="an accuracy below chance that is a decision"),
    Constructed("goal-parity", lambda d: goal_parity(0.2, d),
                "0.2 nats toward the goal for even goal labels, away for odd ones: the goal moves it, not toward it",
                {"decision_computed": ("yes",)}, trap="'ignores the goal' said of a decision the goal moves"),
]}


# --- inference-time search (hansprobe/measurements/inference.py): which answers are false on which model ---------
NO_SEARCH = {"search_recovers": ("yes", "not needed")}  # the decision ignores the goal: nothing beats a guesser
SEARCH_CONSTRUCTED = {c.name: c for c in [
    replace(CONSTRUCTED["null-uniform"], false=NO_SEARCH),
    replace(CONSTRUCTED["null-uniform-d5"], false=NO_SEARCH),
    replace(CONSTRUCTED["null-lowest-label"], false=NO_SEARCH),
    replace(CONSTRUCTED["null-edge-noise-8"], false=NO_SEARCH),
    replace(CONSTRUCTED["planner"], false={"search_recovers": ("no", "yes")}),
    Constructed("wrong-favourite-d5", lambda d: wrong_favourite(0.3, 0.4, d),
                "0.3 on the goal's arm, 0.4 on the next arm, 0.1 on each other: greedy always wrong, samples right "
                "more often than a guess", {"search_recovers": ("no", "not needed")}, degree=5),
]}
