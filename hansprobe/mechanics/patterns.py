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

from hansprobe.objectives import Objective, successor_indices
from hansprobe.tasks.base import Batch, prompt_positions

PatternFn = Callable[[Batch, Objective], dict[str, Bool[Tensor, "B Q T"]]]


def query_positions(batch: Batch, objective: Objective) -> Tensor:
    """Input positions of the shortcut queries: label i is predicted at P-1+i, where r_{i-1} sits."""
    p = batch.prefix.shape[1]
    return torch.tensor([p - 1 + i for i in successor_indices(batch.target.shape[1])])


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
    return labels[:, [i - 1 for i in successor_indices(labels.shape[1])]]


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


def context(batch: Batch, objective: Objective) -> dict[str, Tensor]:
    """Every other key a shortcut query can read, by what it holds, so that a head's attention can be
    named in words (heads.describe_reads): the parent token of the edge listed right after the
    looked-up one ("next edge's parent"), the other edges' parents, children and separators, the
    '=' token and the earlier answer tokens (before the previous one). Forward targets look up the
    edge whose parent is r_(i-1); reversed targets the edge whose child is."""
    node = _previous_nodes(batch, objective)
    field = batch.edge_child if objective.reverse else batch.edge_parent
    edge = (field[:, None, :] == node[:, :, None]).float().argmax(-1)  # (B, Q) the looked-up edge
    rows = torch.arange(len(batch))[:, None]
    n_edges = batch.edge_parent.shape[1]
    has_next = edge + 1 < n_edges
    nxt = torch.where(has_next, edge + 1, edge)  # (B, Q)
    next_parent = _at(batch.edge_parent_pos[rows, nxt], batch) & has_next[..., None]
    own = torch.stack([_at(pos[rows, edge], batch) for pos in (batch.edge_parent_pos, batch.edge_child_pos,
                                                                batch.edge_sep_pos)]).any(0)

    def every(pos: Tensor) -> Tensor:  # (B, E) positions -> (B, Q, T): all of them, minus the looked-up edge's
        m = torch.nn.functional.one_hot(pos, _seq_len(batch)).bool().any(1)  # (B, T)
        return m[:, None, :].expand(-1, edge.shape[1], -1) & ~own

    q = query_positions(batch, objective)
    t = torch.arange(_seq_len(batch))
    p = batch.prefix.shape[1]
    earlier = ((t[None, :] >= p) & (t[None, :] < (q - 1)[:, None]))[None].expand(len(batch), -1, -1)  # (B, Q, T)
    return {"next edge's parent": next_parent, "other parents": every(batch.edge_parent_pos) & ~next_parent,
            "other children": every(batch.edge_child_pos), "other separators": every(batch.edge_sep_pos),
            "'='": _at(torch.full_like(edge, p - 1), batch), "earlier answer tokens": earlier}


def _fixed(batch: Batch, objective: Objective, key: int) -> dict[str, Tensor]:
    q = len(successor_indices(batch.target.shape[1]))
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
    "context": context,
}
