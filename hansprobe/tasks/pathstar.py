"""Path-star graphs G(degree, path_len, n_nodes) in the Next-Token-Failures token format.

Everything is generated as tensors for the whole batch at once; a Python loop per graph made
training several times slower in a trial.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from hansprobe.errors import TaskError
from hansprobe.tasks.base import Batch, EdgeListTokens, other_arm
from hansprobe.tasks.ntf_format import format_ntf_lines, read_ntf
from hansprobe.tasks.registry import GOAL_FIRST, TaskArg, TaskSpec, register_task

# Label cues for control runs (`--cue`): a rule on the labels alone that picks the goal arm, so a
# model can be right on the decision without reading the goal. Off by default; documented as a
# control in docs/controls.md.
CUES = {
    "larger-first-node": "the goal is on the arm whose first node has the largest label",
}


@dataclass(frozen=True)
class PathStar(EdgeListTokens):
    """G(degree, path_len, n_nodes): a start node with `degree` arms of `path_len - 1` further nodes
    each (path_len counts the start), labels drawn without replacement from 0..n_nodes-1.

    Tokens: nodes 0..N-1, then `|`=N, `=`=N+1, `/`=N+2 and the teacherless dummy `$`=N+3.

    cue: a control, None by default. With a name from CUES, generated graphs put the goal where the
    cue says (e.g. always on the arm of the largest candidate), so the goal arm can be read off the
    labels without the goal; every other random draw is the same as without the cue."""

    degree: int = 2
    path_len: int = 5
    n_nodes: int = 50
    name: str = "pathstar"
    cue: str | None = None
    goal_first: bool = False

    def __post_init__(self):
        for field in ("degree", "path_len", "n_nodes"):
            if not isinstance(getattr(self, field), int) or isinstance(getattr(self, field), bool):
                raise TaskError(f"pathstar {field} must be an integer, got {getattr(self, field)!r}")
        if self.degree < 1:
            raise TaskError(f"pathstar degree must be at least 1, got {self.degree}")
        if self.path_len < 2:
            raise TaskError(f"pathstar path_len must be at least 2 (start + one node), got {self.path_len}")
        if not isinstance(self.goal_first, bool):
            raise TaskError(f"pathstar goal_first must be true or false, got {self.goal_first!r}")
        if self.cue is not None and (not isinstance(self.cue, str) or self.cue not in CUES):
            raise TaskError(f"unknown label cue {self.cue!r}; valid cues: {', '.join(CUES)} (or none)")
        if self.n_nodes < self.min_nodes:
            raise TaskError(
                f"pathstar G({self.degree},{self.path_len}) needs at least "
                f"degree*(path_len-1)+1 = {self.min_nodes} nodes, got n_nodes={self.n_nodes}"
            )

    # --- sizes and special tokens -------------------------------------------------------------
    @property
    def min_nodes(self) -> int:
        return self.degree * (self.path_len - 1) + 1

    @property
    def n_edges(self) -> int:
        return self.degree * (self.path_len - 1)

    @property
    def target_len(self) -> int:
        return self.path_len

    # --- structure (tasks/registry.py) ---------------------------------------------------------
    @property
    def decision_indices(self) -> list[int]:
        """The start's child (label 1) is the one choice; every later node is its parent's only child."""
        return [1] if self.degree > 1 else []

    @property
    def lookup_indices(self) -> list[int]:
        """Labels 2..l-1 are the previous node's only child (l-1 is the goal, also in the prompt)."""
        return list(range(2, self.path_len))

    @property
    def no_lookup_reason(self) -> str:
        return ("the path is too short for a lookup index (path_len < 4: after the decision only the goal is left, "
                "copied from the prompt)") if self.path_len < 4 else ""

    @property
    def counterfactuals(self) -> dict:
        out = {"goal_swap": goal_swap}
        if self.path_len >= 3:
            out["arm_rewire"] = arm_rewire
        return out if self.degree >= 2 else {}

    def placebo(self, batch: Batch, seed: int = 0) -> Batch:
        return edge_reorder(batch, seed)

    def goal_variants(self, batch: Batch, k: int, seed: int = 0) -> Batch:
        """Every graph k times in a row (same edges, same order) with the goal at the end of k
        different arms: the graph's own goal arm, then the next ones (training's --structured-samples)."""
        if not 1 <= k <= self.degree:
            raise TaskError(f"--structured-samples {k}: a G({self.degree},{self.path_len}) graph has only {self.degree} goals")
        rep = batch[torch.arange(len(batch)).repeat_interleave(k)]
        arm = (rep.goal_arm + torch.arange(k).repeat(len(batch))) % self.degree
        return build_batch(self, rep.start, arm, rep.arms, rep.edge_parent, rep.edge_child)

    def from_arms(self, start: Tensor, goal_arm: Tensor, arms: Tensor, edge_parent: Tensor, edge_child: Tensor) -> Batch:
        """Tokens and structure from a graph's parts (the NTF reader's entry point)."""
        return build_batch(self, start, goal_arm, arms, edge_parent, edge_child)

    @property
    def bytes_per_graph(self) -> int:
        """Peak bytes per graph while generating a batch: the per-row label permutation (float key +
        int64 order, 3 copies at the argsort), the label->arm map, and ~20 int64 rows of edge length."""
        return 28 * self.n_nodes + 8 * self.n_nodes + 8 * (20 * self.n_edges + 20)

    @property
    def chance(self) -> float:
        return 1.0 / self.degree

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["cue"] is None:
            d.pop("cue")  # configs written before cues existed stay identical
        if not d["goal_first"]:
            d.pop("goal_first")  # likewise for the prompt layout
        return d

    def describe(self) -> str:
        cue = f", label cue: {CUES[self.cue]}" if self.cue else ""
        first = ", goal first" if self.goal_first else ""
        return f"G({self.degree},{self.path_len}) on {self.n_nodes} nodes{cue}{first}"

    # --- generation ---------------------------------------------------------------------------
    def generate(self, n: int, seed: int) -> Batch:
        """`n` fresh graphs; the same seed gives the same graphs on every machine (CPU generator)."""
        g = self._generator(n, seed)
        d, l = self.degree, self.path_len
        n_used = 1 + d * (l - 1)
        # A random permutation per row, cut to the labels used: distinct labels by construction.
        labels = torch.rand(n, self.n_nodes, generator=g).argsort(dim=1)[:, :n_used]  # (B, n_used)
        start = labels[:, 0]
        arms = labels[:, 1:].reshape(n, d, l - 1)
        arms = arms.gather(1, arms[:, :, :1].argsort(dim=1).expand(-1, -1, l - 1))  # sort arms by candidate
        goal_arm = torch.randint(0, d, (n,), generator=g)
        if self.cue == "larger-first-node":
            goal_arm = torch.full_like(goal_arm, d - 1)  # arms are sorted by their first node
        parents = torch.cat([start[:, None, None].expand(n, d, 1), arms[:, :, :-1]], dim=2).reshape(n, -1)
        children = arms.reshape(n, -1)
        order = torch.rand(n, self.n_edges, generator=g).argsort(dim=1)  # shuffle edge order per graph
        return build_batch(self, start, goal_arm, arms, parents.gather(1, order), children.gather(1, order))


def build_batch(
    task: PathStar,
    start: Int[Tensor, " B"],
    goal_arm: Int[Tensor, " B"],
    arms: Int[Tensor, "B D Lm1"],
    edge_parent: Int[Tensor, "B E"],
    edge_child: Int[Tensor, "B E"],
) -> Batch:
    """Tokens and structure from a graph's parts; shared by the generator and the NTF reader."""
    n, d, _ = arms.shape
    rows = torch.arange(n)
    goal = arms[rows, goal_arm, -1]
    prefix, parent_pos, child_pos, sep_pos = task.edge_list_prefix(edge_parent, edge_child, start, goal)  # (B, P)
    target = torch.cat([start[:, None], arms[rows, goal_arm]], dim=1)  # (B, L)
    node_arm = torch.full((n, task.n_nodes), -2, dtype=torch.long)
    node_arm.scatter_(1, arms.reshape(n, -1), torch.arange(d).repeat_interleave(arms.shape[2]).expand(n, -1))
    node_arm[rows, start] = -1
    return Batch(
        task=task,
        prefix=prefix,
        target=target,
        start=start,
        goal=goal,
        goal_arm=goal_arm,
        candidates=arms[:, :, 0].clone(),
        arms=arms,
        node_arm=node_arm,
        edge_parent=edge_parent,
        edge_child=edge_child,
        edge_parent_pos=parent_pos,
        edge_child_pos=child_pos,
        edge_sep_pos=sep_pos,
    )


# --- counterfactual pairs: the same graph with only the goal's place changed ------------------------

def goal_swap(batch: Batch, seed: int = 0) -> Batch:
    """The same graph (same edges in the same order) with the goal moved to the leaf of another arm:
    only the goal token of the prompt and the answer change."""
    if batch.candidates.shape[1] < 2:
        raise TaskError("goal-swap pairs need degree >= 2")
    return build_batch(batch.task, batch.start, other_arm(batch, seed), batch.arms, batch.edge_parent, batch.edge_child)


def arm_rewire(batch: Batch, seed: int = 0) -> Batch:
    """The same tokens and the same goal label, but the goal reached through another first node: the
    tails (depth 2 on) of the goal arm and of another arm are exchanged, which changes only the two
    edges leaving the first nodes (a1, a2) -> (a1, b2) and (b1, b2) -> (b1, a2). Every token keeps its
    position except those two children, which trade places; the decision flips from a1 to b1. A model
    keyed on any label cue (the goal's value, the candidates' values) gives the same answer on both."""
    n, d, depth = batch.arms.shape
    if d < 2 or depth < 2:
        raise TaskError("arm-rewire pairs need degree >= 2 and path_len >= 3 (arms of two nodes or more)")
    rows = torch.arange(n)
    a, b = batch.goal_arm, other_arm(batch, seed)
    arms = batch.arms.clone()
    arms[rows, a, 1:], arms[rows, b, 1:] = batch.arms[rows, b, 1:], batch.arms[rows, a, 1:]
    a1, b1 = batch.arms[rows, a, 0], batch.arms[rows, b, 0]
    a2, b2 = batch.arms[rows, a, 1], batch.arms[rows, b, 1]
    child = batch.edge_child.clone()
    child = torch.where((batch.edge_parent == a1[:, None]) & (batch.edge_child == a2[:, None]), b2[:, None], child)
    child = torch.where((batch.edge_parent == b1[:, None]) & (batch.edge_child == b2[:, None]), a2[:, None], child)
    return build_batch(batch.task, batch.start, b, arms, batch.edge_parent, child)


def edge_reorder(batch: Batch, seed: int = 0) -> Batch:
    """The placebo: the same graph and goal with the edges listed in another (seeded) order. The
    answer does not change; many token positions do."""
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(batch.edge_parent.shape, generator=g).argsort(1)
    return build_batch(batch.task, batch.start, batch.goal_arm, batch.arms, batch.edge_parent.gather(1, order),
                       batch.edge_child.gather(1, order))


COUNTERFACTUALS = {"goal_swap": goal_swap, "arm_rewire": arm_rewire}


def _read_text(path, task, limit=None) -> Batch:
    return read_ntf(path, task=task, limit=limit)


register_task(TaskSpec(
    name="pathstar", cls=PathStar, help="path-star graph G(d, l): a start with d arms of l-1 nodes",
    args=(TaskArg("--degree", "degree", help="arms of the star (d)"),
          TaskArg("--path-len", "path_len", help="nodes on the path, start included (l)"),
          TaskArg("--nodes", "n_nodes", help="label range 0..N-1 (N >= d(l-1)+1)"),
          TaskArg("--cue", "cue", str, choices=tuple(CUES), required=False,
                  help="CONTROL ONLY, off by default: put the goal on the arm a label rule picks (larger-first-node: "
                       "the arm of the largest candidate), so the decision can be right without reading the goal"),
          GOAL_FIRST),
    format_lines=format_ntf_lines, read_text=_read_text,
))
