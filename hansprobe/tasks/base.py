"""The Task protocol and the Batch every task produces: tokens plus the structure analyses read.

Analyses never re-parse tokens: every position they need (edge tokens, separators, the goal) and
every label they probe (goal arm, candidates) is a tensor here, built once when the batch is made.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Int
from torch import Tensor

from hansprobe.errors import TaskError


@runtime_checkable
class Task(Protocol):
    """What every task gives (docs/add-a-task.md has what each member means; `register_task` refuses
    a class that lacks one). Capabilities only some tasks have are protocols of their own below."""

    name: str
    n_nodes: int

    @property
    def d_vocab(self) -> int: ...

    @property
    def prefix_len(self) -> int: ...

    @property
    def target_len(self) -> int: ...

    @property
    def n_ctx(self) -> int: ...

    @property
    def n_edges(self) -> int: ...

    @property
    def chance(self) -> float: ...

    @property
    def bytes_per_graph(self) -> int: ...

    @property
    def decision_indices(self) -> list[int]: ...

    @property
    def lookup_indices(self) -> list[int]: ...

    @property
    def no_lookup_reason(self) -> str: ...

    @property
    def counterfactuals(self) -> dict: ...

    def generate(self, n: int, seed: int) -> "Batch": ...

    def placebo(self, batch: "Batch", seed: int) -> "Batch": ...

    def describe(self) -> str: ...

    def to_dict(self) -> dict: ...


TASK_MEMBERS = ("name", "n_nodes", "d_vocab", "prefix_len", "target_len", "n_ctx", "n_edges", "chance", "bytes_per_graph",
                "decision_indices", "lookup_indices", "no_lookup_reason", "counterfactuals", "generate", "placebo",
                "describe", "to_dict")


@runtime_checkable
class GoalVariants(Protocol):
    """A task that can give the same graphs with other goals (training's --structured-samples)."""

    def goal_variants(self, batch: "Batch", k: int, seed: int) -> "Batch": ...


@runtime_checkable
class TokenNames(Protocol):
    """A task whose tokens have names for figures (patching's position labels)."""

    def token_str(self, token: int) -> str: ...


def missing_members(cls: type) -> list[str]:
    """The Task members `cls` lacks (a dataclass field counts, with or without a default)."""
    fields_ = getattr(cls, "__dataclass_fields__", {})
    return [m for m in TASK_MEMBERS if not hasattr(cls, m) and m not in fields_]


@dataclass
class Batch:
    """B graphs of one task. Arm (branch) a is the one whose first node is the a-th smallest child of
    the start (so `goal_arm` is also the "which of the sorted candidates" label). Positions index
    the prefix."""

    task: Task
    prefix: Int[Tensor, "B P"]  # u v | u v | ... u v / s g =
    target: Int[Tensor, "B L"]  # s n1 ... g (forward order; objectives reorder it)
    start: Int[Tensor, " B"]
    goal: Int[Tensor, " B"]
    goal_arm: Int[Tensor, " B"]  # index into candidates / arms
    candidates: Int[Tensor, "B D"]  # children of the start, ascending = the decision token's options
    arms: Int[Tensor, "B D Lm1"] | None  # node ids along each arm, candidate first, leaf last; None where a branch is not a path (tree)
    node_arm: Int[Tensor, "B N"]  # first-decision branch (arm) of every label: -1 start, -2 not in the graph
    edge_parent: Int[Tensor, "B E"]  # edges in prefix order
    edge_child: Int[Tensor, "B E"]
    edge_parent_pos: Int[Tensor, "B E"]  # prefix position of the parent token
    edge_child_pos: Int[Tensor, "B E"]
    edge_sep_pos: Int[Tensor, "B E"]  # the `|` (or `/` for the last edge) right after the edge

    def __len__(self) -> int:
        return self.prefix.shape[0]

    def _map(self, fn) -> "Batch":
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{k: (fn(v) if isinstance(v, Tensor) else v) for k, v in kw.items()})

    def __getitem__(self, idx) -> "Batch":
        """Rows by slice, index tensor or mask; keeps the structure aligned with the tokens."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return self._map(lambda t: t[idx])

    def to(self, device: str | torch.device) -> "Batch":
        return self._map(lambda t: t.to(device))

    def split(self, size: int):
        """Yield consecutive sub-batches of at most `size` graphs (for batched forward passes)."""
        for i in range(0, len(self), size):
            yield self[i : i + size]

    @staticmethod
    def cat(batches: list["Batch"]) -> "Batch":
        first = batches[0]
        kw = {}
        for f in fields(first):
            v = getattr(first, f.name)
            kw[f.name] = torch.cat([getattr(b, f.name) for b in batches]) if isinstance(v, Tensor) else v
        return Batch(**kw)


def other_arm(batch: "Batch", seed: int) -> Tensor:
    """(B,) a seeded random arm (branch) that is not the goal's, as an index into the candidates
    (needs degree >= 2): the partner of every counterfactual pair of the edge-list tasks."""
    d = batch.candidates.shape[1]
    g = torch.Generator().manual_seed(seed)
    return (batch.goal_arm + torch.randint(1, d, (len(batch),), generator=g)) % d


def prompt_positions(batch: "Batch") -> dict[str, int]:
    """Prefix positions of the query tokens: start, goal and the `=` before the answer (the last
    prompt token). From the task's `start_pos`/`goal_pos` where it has them (goal-first layouts),
    else the standard layout's `... s g =`."""
    p = batch.prefix.shape[1]
    return {"start": getattr(batch.task, "start_pos", p - 3), "goal": getattr(batch.task, "goal_pos", p - 2), "=": p - 1}


class EdgeListTokens:
    """The token layout shared by the edge-list tasks (path-star, tree), as in Next-Token-Failures:
    `u v | u v | ... u v / s g =` then the answer (or, with a `goal_first` field set, `s g / u v |
    ... | u v =`). Nodes are 0..N-1, then `|`=N, `=`=N+1, `/`=N+2 and the teacherless dummy `$`=N+3.
    A subclass defines `n_nodes`, `n_edges` and `target_len`."""

    @property
    def prefix_len(self) -> int:
        return 3 * self.n_edges + 3

    @property
    def n_ctx(self) -> int:
        """Longest model input: the prefix plus all but the last target token."""
        return self.prefix_len + self.target_len - 1

    @property
    def d_vocab(self) -> int:
        return self.n_nodes + 4

    @property
    def pipe(self) -> int:
        return self.n_nodes

    @property
    def equals(self) -> int:
        return self.n_nodes + 1

    @property
    def slash(self) -> int:
        return self.n_nodes + 2

    @property
    def dummy(self) -> int:
        return self.n_nodes + 3

    def _generator(self, n: int, seed: int) -> torch.Generator:
        """The checks every `generate` starts with, then its seeded CPU generator (the same graphs on
        every machine)."""
        from hansprobe.resources import require_memory

        if n < 1:
            raise TaskError(f"number of graphs must be at least 1, got {n}")
        require_memory(n * self.bytes_per_graph, f"{n:,} graphs of {self.describe()}",
                       "ask for fewer graphs (-n, --batch-size, --eval-graphs) or a smaller task")
        return torch.Generator().manual_seed(int(seed))

    @property
    def start_pos(self) -> int:
        """Prefix position of the start token: `s g =` closes the prompt, or opens it with goal_first."""
        return 0 if getattr(self, "goal_first", False) else self.prefix_len - 3

    @property
    def goal_pos(self) -> int:
        return 1 if getattr(self, "goal_first", False) else self.prefix_len - 2

    def edge_list_prefix(self, parent: Tensor, child: Tensor, start: Tensor, goal: Tensor):
        """(prefix (B, P), parent_pos, child_pos, sep_pos (B, E) each) of graphs given as edge lists.

        Standard: `u v | u v | ... u v / s g =`. goal_first (the query first, reported to make
        path-star learnable): `s g / u v | ... | u v =`; the last edge's separator is then `=`."""
        n, e = parent.shape
        goal_first = getattr(self, "goal_first", False)
        sep = torch.full((n, e), self.pipe, dtype=torch.long)
        sep[:, -1] = self.equals if goal_first else self.slash
        edges = torch.stack([parent, child, sep], dim=2).reshape(n, 3 * e)  # (B, 3E)
        if goal_first:
            query = torch.stack([start, goal, torch.full_like(start, self.slash)], dim=1)
            prefix, offset = torch.cat([query, edges], 1), 3
        else:
            query = torch.stack([start, goal, torch.full_like(start, self.equals)], dim=1)
            prefix, offset = torch.cat([edges, query], 1), 0
        pos = torch.arange(e).expand(n, e) * 3 + offset
        return prefix, pos.clone(), pos + 1, pos + 2

    def token_str(self, token: int) -> str:
        """How a token reads in the NTF text (nodes as numbers; `|`, `=`, `/`, and `$` for the dummy)."""
        specials = {self.pipe: "|", self.equals: "=", self.slash: "/", self.dummy: "$"}
        return specials.get(int(token), str(int(token)))
