"""What a probe is asked to read, built from the structure metadata (never from tokens).

A target gives, for every graph and probed position, a class label (-1 where it is undefined),
optionally the candidate classes to score among (identity labels), and its chance level. A user
target is a function (batch, objective, positions) -> ProbeTarget.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from hansprobe.objectives import Objective
from hansprobe.tasks.base import Batch


@dataclass
class ProbeTarget:
    name: str
    labels: np.ndarray  # (B, n_positions) int, -1 = undefined here
    chance: float
    description: str
    candidates: np.ndarray | None = None  # (B, D): score only among these classes (identity labels)


TargetFn = Callable[[Batch, Objective, list], ProbeTarget]


def make_probe(seed: int = 0):
    """The probe: a scikit-learn pipeline (standardise, then multinomial logistic regression). Here,
    below both the probe analysis and the steering follow-up, so neither imports the other."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))


def goal_arm(batch: Batch, objective: Objective, positions: list[int]) -> ProbeTarget:
    d = batch.candidates.shape[1]
    return ProbeTarget("goal_arm", np.repeat(batch.goal_arm.numpy()[:, None], len(positions), 1), 1 / d,
                       "relational label: which of the sorted candidates starts the goal arm (chance 1/d)")


def decision_node(batch: Batch, objective: Objective, positions: list[int]) -> ProbeTarget:
    d = batch.candidates.shape[1]
    node = batch.target[:, 1].numpy()
    return ProbeTarget("decision_node", np.repeat(node[:, None], len(positions), 1), 1 / d,
                       "identity label: the decision node's id, scored among the d candidates (chance 1/d)",
                       candidates=batch.candidates.numpy())


def _majority(labels: np.ndarray) -> float:
    y = labels[labels >= 0]
    return float(np.bincount(y).max() / len(y)) if len(y) else float("nan")


def next_node(batch: Batch, objective: Objective, positions: list[int]) -> ProbeTarget:
    p, length = batch.prefix.shape[1], batch.target.shape[1]
    labels_obj = objective.labels(batch).numpy()
    out = np.full((len(batch), len(positions)), -1)
    for j, pos in enumerate(positions):
        i = pos - (p - 1)  # the label predicted at this input position
        if 0 <= i < length:
            out[:, j] = labels_obj[:, i]
    return ProbeTarget("next_node", out, _majority(out),
                       "the node predicted next at answer positions (chance: the commonest node)")


def edge_on_goal_path(batch: Batch, objective: Objective, positions: list[int]) -> ProbeTarget:
    e = batch.edge_parent.shape[1]
    on_path = (batch.edge_child[:, :, None] == batch.target[:, None, :]).any(-1).numpy().astype(int)  # (B, E)
    out = np.full((len(batch), len(positions)), -1)
    for j, pos in enumerate(positions):
        if pos < 3 * e:
            out[:, j] = on_path[:, pos // 3]  # the edge whose parent, child or separator sits here
    return ProbeTarget("edge_on_goal_path", out, _majority(out),
                       "at an edge's tokens: is the edge on the goal path (chance: the commoner answer)")


TARGETS: dict[str, TargetFn] = {
    "goal_arm": goal_arm, "decision_node": decision_node, "next_node": next_node, "edge_on_goal_path": edge_on_goal_path,
}
