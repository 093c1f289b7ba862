"""Reference attention patterns: for each graph and each shortcut query position, which key
positions a head following the pattern would attend to.

The queries are the input positions holding r_{i-1} while predicting r_i, for label indices
i = 2 .. l-1 (labels in the objective's order). Scores are taken at the shortcut indices 2 .. l-2;
the last index is reported apart (there a forward model can copy the goal from the prompt). A
pattern maps (batch, objective) to named components, each a (B, Q, T) bool mask over key positions;
a user pattern has the same shape.
"""
from __future__ import annotations

from typing import Callable

import torch
from jaxtyping import Bool
from torch import Tensor

from hansprobe.objectives import Objective
from hansprobe.tasks.base import Batch, prompt_positions

PatternFn = Callable[[Batch, Objective], dict[str, Bool[Tensor, "B Q T"]]]


def shortcut_label_indices(target_len: int) -> list[int]:
    return list(range(2, target_len))


def query_positions(batch: Batch, objective: Objective) -> Tensor:
    """Input positions of the shortcut queries: label i is predicted at P-1+i, where r_{i-1} sits."""
    p = batch.prefix.shape[1]
    return torch.tensor([p - 1 + i for i in shortcut_label_indices(batch.target.shape[1])])


def _seq_len(batch: Batch) -> int:
    return batch.prefix.shape[1] + batch.target.shape[1] - 1


def _at(positions: Tensor, batch: Batch) -> Tensor:
    """(B, Q) key positions -> (B, Q, T) one-hot masks."""
    return torch.nn.functional.one_hot(positions, _seq_len(batch)).bool()


def _edge_span(batch: Batch, edge: Tensor) -> dict[str, Tensor]:
    rows = torch.arange(len(batch))[:, None]
    return {"parent": _at(batch.edge_parent_pos[rows, edge], batch),
            "child": _at(batch.edge_child_pos[rows, edge], batch),
            "separator": _at(batch.edge_sep_pos[rows, edge], batch)}


def _previous_nodes(batch: Batch, objective: Objective) -> Tensor:
    """r_{i-1} at every shortcut query: (B, Q)."""
    labels = objective.labels(batch)
    return labels[:, [i - 1 for i in shortcut_label_indices(labels.shape[1])]]


def edge_lookup(batch: Batch, objective: Objective) -> dict[str, Tensor]:
    """The edge whose parent is r_{i-1}: under forward targets, the edge (r_{i-1}, r_i) that the
    Clever-Hans shortcut reads its answer from (its parent, its child and the separator after it)."""
    node = _previous_nodes(batch, objective)
    edge = (batch.edge_parent[:, None, :] == node[:, :, None]).float().argmax(-1)  # (B, Q)
    return _edge_span(batch, edge)


def child_parent_lookup(batch: Batch, objective: Objective) -> dict[str, Tensor]:
    """The edge whose child is r_{i-1}: under reversed targets, the edge (r_i, r_{i-1}) a
    child-to-parent lookup reads."""
    node = _previous_nodes(batch, objective)
    edge = (batch.edge_child[:, None, :] == node[:, :, None]).float().argmax(-1)
    return _edge_span(batch, edge)


def _fixed(batch: Batch, objective: Objective, key: int) -> dict[str, Tensor]:
    q = len(shortcut_label_indices(batch.target.shape[1]))
    return {"token": _at(torch.full((len(batch), q), key), batch)}


def goal_token(batch: Batch, objective: Objective) -> dict[str, Tensor]:
    return _fixed(batch, objective, prompt_positions(batch)["goal"])


def start_token(batch: Batch, objective: Objective) -> dict[str, Tensor]:
    return _fixed(batch, objective, prompt_positions(batch)["start"])


def previous_token(batch: Batch, objective: Objective) -> dict[str, Tensor]:
    q = query_positions(batch, objective)
    return {"token": _at((q - 1).expand(len(batch), -1), batch)}


def current_token(batch: Batch, objective: Objective) -> dict[str, Tensor]:
    """The query itself (the position holding r_{i-1})."""
    q = query_positions(batch, objective)
    return {"token": _at(q.expand(len(batch), -1), batch)}


REFERENCE_PATTERNS: dict[str, PatternFn] = {
    "edge_lookup": edge_lookup,
    "child_parent_lookup": child_parent_lookup,
    "goal": goal_token,
    "start": start_token,
    "previous_token": previous_token,
    "current_token": current_token,
}
