"""Tree path-finding T(branching, depth, n_nodes): a full tree, given as a shuffled edge list plus a
goal leaf; the answer is the path from the root to the goal.

Token format, the same as path-star's (Next-Token-Failures style): `u,v|u,v|...|u,v/root,goal=`
then the path `root,n1,...,goal`. Nodes 0..N-1, `|`=N, `=`=N+1, `/`=N+2, `$`=N+3 (teacherless
dummy). Every node on the path has `branching` children, so every answer token after the root is a
decision: r_i is one of the children of r_(i-1) (its candidate set is one lookup away under teacher
forcing), and only the goal's ancestry tells which. There is no index whose token can be read off
the previous one alone, so the lookup question does not apply; the first decision (label 1) is
measured as path-star's is, among the root's children.

Everything is generated as tensors for the whole batch; the structure (path, candidates, the
first-decision branch of every label) is recomputed from the edge list by `tree_batch`, which the
counterfactual builders share.
"""
from __future__ import annotations

import math

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from hansprobe.errors import TaskError
from hansprobe.tasks.base import Batch, EdgeListTokens, other_arm
from hansprobe.tasks.ntf_format import format_ntf_lines, max_line_bytes, parse_rows, read_lines
from hansprobe.tasks.registry import GOAL_FIRST, TaskArg, TaskSpec, register_task


MAX_TREE_NODES = 10**9  # a tree beyond this cannot be generated in any memory this runs in


@dataclass(frozen=True)
class Tree(EdgeListTokens):
    """A full tree: the root has `branching` children, each of those `branching` children, down to
    `depth` edges below the root (the leaves). Labels drawn without replacement from 0..n_nodes-1;
    the goal is a leaf drawn uniformly. Defaults: T(2, 3) on 50 nodes (15 tree nodes, 14 edges)."""

    branching: int = 2
    depth: int = 3
    n_nodes: int = 50
    name: str = "tree"
    goal_first: bool = False  # the root,goal query before the edge list (tasks/base.py)

    def __post_init__(self):
        for f in ("branching", "depth", "n_nodes"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TaskError(f"tree {f} must be an integer, got {v!r}")
        if not isinstance(self.goal_first, bool):
            raise TaskError(f"tree goal_first must be true or false, got {self.goal_first!r}")
        if self.branching < 2:
            raise TaskError(f"tree branching must be at least 2 (with 1 the tree is a chain), got {self.branching}")
        if self.depth < 2:
            raise TaskError(f"tree depth must be at least 2 (root, a decision, the goal leaf), got {self.depth}")
        # Bounded before any big-integer arithmetic: b ** (h + 1) of a huge depth has millions of digits.
        if (self.depth + 1) * math.log(self.branching) > math.log(MAX_TREE_NODES):
            raise TaskError(f"tree T({self.branching},{self.depth}) would have more than {MAX_TREE_NODES:.0e} nodes, more "
                            "than fits in memory; choose a smaller --depth or --branching")
        if self.n_nodes < self.tree_nodes:
            raise TaskError(f"tree T({self.branching},{self.depth}) has {self.tree_nodes} nodes; n_nodes must be at "
                            f"least that, got {self.n_nodes}")

    # --- sizes ----------------------------------------------------------------------------------
    @property
    def tree_nodes(self) -> int:
        return (self.branching ** (self.depth + 1) - 1) // (self.branching - 1)

    @property
    def n_edges(self) -> int:
        return self.tree_nodes - 1

    @property
    def target_len(self) -> int:
        return self.depth + 1

    @property
    def chance(self) -> float:
        return 1.0 / self.branching

    @property
    def bytes_per_graph(self) -> int:
        """Peak bytes per graph while generating: the label permutation (3 copies), the parent and
        branch maps over all labels, ~20 int64 rows of edge length."""
        return 36 * self.n_nodes + 24 * self.n_nodes + 8 * (20 * self.n_edges + 20)

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["goal_first"]:
            d.pop("goal_first")
        return d

    def describe(self) -> str:
        return f"T({self.branching},{self.depth}) on {self.n_nodes} nodes" + (", goal first" if self.goal_first else "")

    # --- structure (tasks/registry.py) ------------------------------------------------------------
    @property
    def decision_indices(self) -> list[int]:
        """Labels 1..depth-1: each a choice among the previous node's children (the goal, label
        depth, is a choice too but can be copied from the prompt)."""
        return list(range(1, self.depth))

    @property
    def lookup_indices(self) -> list[int]:
        return []

    @property
    def no_lookup_reason(self) -> str:
        return (f"every node on a tree path has {self.branching} children: no later token can be read off the previous "
                "one alone (each is a decision)")

    @property
    def counterfactuals(self) -> dict:
        return {"goal_swap": goal_swap, "arm_rewire": arm_rewire}

    def placebo(self, batch: Batch, seed: int = 0) -> Batch:
        g = torch.Generator().manual_seed(seed)
        order = torch.rand(batch.edge_parent.shape, generator=g).argsort(1)
        return tree_batch(self, batch.start, batch.goal, batch.edge_parent.gather(1, order),
                          batch.edge_child.gather(1, order))

    def goal_variants(self, batch: Batch, k: int, seed: int = 0) -> Batch:
        """Every tree k times in a row (same edges, same order) with k different goal leaves: its own
        goal, then k-1 other leaves drawn without replacement (training's --structured-samples)."""
        n_leaves = self.branching ** self.depth
        if not 1 <= k <= n_leaves:
            raise TaskError(f"--structured-samples {k}: a {self.describe()} tree has only {n_leaves} leaves")
        n = len(batch)
        has_child = torch.zeros(n, self.n_nodes + 1, dtype=torch.bool).scatter_(1, batch.edge_parent, True)[:, : self.n_nodes]
        leaf = (batch.node_arm >= 0) & ~has_child  # (B, N)
        g = torch.Generator().manual_seed(seed)
        key = torch.rand(leaf.shape, generator=g) + 2.0 * (torch.arange(self.n_nodes) == batch.goal[:, None])
        order = (key * leaf).argsort(1, descending=True)[:, :k]  # own goal first, then random other leaves
        rep = batch[torch.arange(n).repeat_interleave(k)]
        return tree_batch(self, rep.start, order.reshape(-1), rep.edge_parent, rep.edge_child)

    # --- generation -------------------------------------------------------------------------------
    def generate(self, n: int, seed: int) -> Batch:
        """`n` fresh trees; the same seed gives the same trees on every machine (CPU generator)."""
        g = self._generator(n, seed)
        m, b = self.tree_nodes, self.branching
        labels = torch.rand(n, self.n_nodes, generator=g).argsort(dim=1)[:, :m]  # (B, M): label of heap slot j
        slots = torch.arange(1, m)
        parents = labels[:, (slots - 1) // b]  # heap layout: slot j's parent is (j-1)//b
        children = labels[:, 1:]
        first_leaf = m - b ** self.depth
        goal = labels[torch.arange(n), first_leaf + torch.randint(0, b ** self.depth, (n,), generator=g)]
        order = torch.rand(n, self.n_edges, generator=g).argsort(dim=1)  # shuffle edge order per graph
        return tree_batch(self, labels[:, 0], goal, parents.gather(1, order), children.gather(1, order))


def tree_batch(task: Tree, root: Tensor, goal: Tensor, edge_parent: Tensor, edge_child: Tensor) -> Batch:
    """Tokens and structure of trees given as (root, goal leaf, edge list in prompt order)."""
    n = edge_parent.shape[0]
    big = task.n_nodes  # sentinel: "no parent" / "not a candidate"
    rows = torch.arange(n)
    parent_of = torch.full((n, big + 1), big, dtype=torch.long).scatter_(1, edge_child, edge_parent)  # (B, N+1)
    path = [goal]
    for _ in range(task.depth):
        path.append(parent_of.gather(1, path[-1][:, None])[:, 0])
    target = torch.stack(path[::-1], 1)  # (B, depth+1): root .. goal
    if (target[:, 0] != root).any():
        raise TaskError("the goal is not a leaf at the tree's depth below the root")
    from_root = edge_parent == root[:, None]
    candidates = torch.where(from_root, edge_child, big).sort(dim=1).values[:, : task.branching]  # (B, b) ascending
    goal_arm = (candidates == target[:, 1:2]).long().argmax(1)
    # first-decision branch of every label: climb until the parent is the root
    anc = torch.arange(big + 1).expand(n, -1).clone()  # (B, N+1)
    for _ in range(task.depth - 1):
        up = parent_of.gather(1, anc)
        anc = torch.where((up != root[:, None]) & (up != big), up, anc)
    in_tree = (parent_of != big)[:, :big]  # labels with a parent: every tree node but the root
    branch = (anc[:, :big, None] == candidates[:, None, :]).long().argmax(-1)  # (B, N)
    node_arm = torch.where(in_tree, branch, torch.full_like(branch, -2))
    node_arm[rows, root] = -1
    prefix, parent_pos, child_pos, sep_pos = task.edge_list_prefix(edge_parent, edge_child, root, goal)
    return Batch(task=task, prefix=prefix, target=target, start=root, goal=goal, goal_arm=goal_arm,
                 candidates=candidates, arms=None, node_arm=node_arm, edge_parent=edge_parent, edge_child=edge_child,
                 edge_parent_pos=parent_pos, edge_child_pos=child_pos, edge_sep_pos=sep_pos)


def goal_swap(batch: Batch, seed: int = 0) -> Batch:
    """The same tree (same edges, same order) with the goal moved to a random leaf under another of
    the root's children: only the goal token of the prompt and the answer change."""
    return goal_swap_at(batch, 1, seed)


def arm_rewire(batch: Batch, seed: int = 0) -> Batch:
    """The same tokens except the parents of the edges leaving two first nodes: the children of the
    goal's first node a1 and of another first node b1 trade parents, so the same goal label is now
    reached through b1 and the decision flips. A model keyed on any label cue answers both alike."""
    other = other_arm(batch, seed)
    rows = torch.arange(len(batch))
    a1, b1 = batch.candidates[rows, batch.goal_arm], batch.candidates[rows, other]
    parent = batch.edge_parent
    parent = torch.where(batch.edge_parent == a1[:, None], b1[:, None], parent)
    parent = torch.where(batch.edge_parent == b1[:, None], a1[:, None], parent)
    return tree_batch(batch.task, batch.start, batch.goal, parent, batch.edge_child)


def decision_view(batch: Batch, k: int) -> Batch:
    """The batch as decision k sees it: the candidates are the children of r_(k-1) (ascending) and
    the goal arm is r_k's index among them (label k's choice; k = 1 is the batch itself)."""
    import dataclasses

    parent = batch.target[:, k - 1]
    big = batch.task.n_nodes
    cands = torch.where(batch.edge_parent == parent[:, None], batch.edge_child, big).sort(1).values[:, : batch.task.branching]
    return dataclasses.replace(batch, candidates=cands, goal_arm=(cands == batch.target[:, k:k + 1]).long().argmax(1))


def goal_swap_at(batch: Batch, k: int, seed: int = 0) -> Batch:
    """The same tree (same edges, same order) with the goal moved to a random leaf under another child
    of r_(k-1): r_0..r_(k-1) stay, so the input before decision k is unchanged and decision k flips."""
    task = batch.task
    n, big = len(batch), task.n_nodes
    view = decision_view(batch, k)
    other = view.candidates[torch.arange(n), other_arm(view, seed)]  # (B,) a sibling of r_k
    parent_of = torch.full((n, big + 1), big, dtype=torch.long).scatter_(1, batch.edge_child, batch.edge_parent)
    has_child = torch.zeros(n, big + 1, dtype=torch.bool).scatter_(1, batch.edge_parent, True)[:, :big]
    anc = torch.arange(big).expand(n, -1).clone()  # (B, N): each label's ancestor at depth k (for leaves)
    for _ in range(task.depth - k):
        anc = parent_of.gather(1, anc)
    leaf = (batch.node_arm >= 0) & ~has_child & (anc == other[:, None])
    g = torch.Generator().manual_seed(seed + 1)
    pick = (torch.rand(leaf.shape, generator=g) * leaf).argmax(1)
    return tree_batch(task, batch.start, pick, batch.edge_parent, batch.edge_child)


def parse_tree_lines(lines: list[str], task: Tree, first_line_no: int = 1) -> Batch:
    """Parse text lines (`u,v|...|u,v/root,goal=root,...,goal`) of `task`'s shape into a Batch,
    checking on tensors that each is a full `branching`-ary tree of `depth` with the root-to-goal path."""
    b, h, n_nodes = task.branching, task.depth, task.n_nodes
    E, Q, T, fail = parse_rows(lines, task.n_edges, h + 1, n_nodes, first_line_no,
                               f"{task.describe()} has {task.n_edges} (a full tree of branching {b} and depth {h}; "
                               "pass --branching/--depth to match the file)",
                               f"{task.describe()} paths have depth + 1 = {h + 1}")
    B, rows = E.shape[0], torch.arange(E.shape[0])
    parent, child = E[..., 0], E[..., 1]
    root, goal = Q[:, 0], Q[:, 1]
    ones = torch.ones_like(child)
    in_deg = torch.zeros(B, n_nodes, dtype=torch.long).scatter_add_(1, child, ones)
    fail((in_deg > 1).any(1) | (child == root[:, None]).any(1), "a node has two parents (or the root has a parent): not a tree")
    out_deg = torch.zeros(B, n_nodes, dtype=torch.long).scatter_add_(1, parent, ones)
    fail(((out_deg != 0) & (out_deg != b)).any(1), f"a node has children but not exactly branching = {b} of them")
    # climb from every node: a tree node reaches the root in at most `depth` steps, a leaf in exactly that many
    parent_of = torch.full((B, n_nodes + 1), n_nodes, dtype=torch.long).scatter_(1, child, parent)  # (B, N+1)
    node, steps = child, torch.zeros_like(child)
    for _ in range(h):
        up = node != root[:, None]
        node = torch.where(up, parent_of.gather(1, node), node)
        steps = steps + up.long()
    fail((node != root[:, None]).any(1), f"a node does not reach the root within depth = {h} edges (a cycle, a second "
                                         "component, or a deeper tree)")
    is_leaf = out_deg.gather(1, child) == 0
    fail((is_leaf & (steps != h)).any(1), f"a leaf is not at depth {h}: not a full tree of depth {h}")
    walk = [goal]
    for _ in range(h):
        walk.append(parent_of.gather(1, walk[-1][:, None])[:, 0])
    fail((torch.stack(walk[::-1], 1) != T).any(1), "the path is not the path from the root to the goal leaf")
    fail(out_deg[rows, goal] != 0, "the goal is not a leaf")
    return tree_batch(task, root, goal, parent, child)


def _read_text(path, task: Tree, limit: int | None = None) -> Batch:
    return parse_tree_lines(read_lines(path, limit, max_line_bytes(task)), task)


register_task(TaskSpec(
    name="tree", cls=Tree, help="tree path-finding T(b, h): a full tree of branching b and depth h, root to a goal leaf",
    args=(TaskArg("--branching", "branching", help="children of every inner node (b, default 2)"),
          TaskArg("--depth", "depth", help="edges from the root to a leaf (h, default 3)"),
          TaskArg("--nodes", "n_nodes", help="label range 0..N-1 (default 50)"), GOAL_FIRST),
    format_lines=format_ntf_lines, read_text=_read_text, defaults={"branching": 2, "depth": 3, "n_nodes": 50},
))
