"""Read and write the Next-Token-Failures text format: `u,v|u,v|...|u,v/s,g=s,n1,...,g`.

Lines are split in Python (text is per line by nature); every structural check then runs on
tensors for the whole file, and the first failing row is reported with its 1-based line number.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from hansprobe.errors import TaskError
from hansprobe.tasks.base import Batch
from hansprobe.tasks.registry import get_task_spec


LABEL_LIMIT = 2**62  # any real label is far below; anything beyond would overflow int64 tensors


def _ints(text: str, what: str, line_no: int) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise TaskError(f"line {line_no}: {what} {text!r} is not comma-separated integers") from None
    big = [v for v in values if not -LABEL_LIMIT < v < LABEL_LIMIT]
    if big:  # before torch.tensor, which cannot hold them (int64)
        raise TaskError(f"line {line_no}: node label {big[0]} in the {what} is out of range; labels are 0..N-1")
    return values


def split_line(line: str, line_no: int) -> tuple[list[list[int]], list[int], list[int]]:
    if "=" not in line:
        raise TaskError(f"line {line_no}: no '=' between the prompt and the path (expected u,v|...|u,v/s,g=s,...,g)")
    left, path = line.split("=", 1)
    if "/" not in left:
        raise TaskError(f"line {line_no}: no '/' before the start,goal query (expected u,v|...|u,v/s,g=s,...,g)")
    edge_text, query = left.rsplit("/", 1)
    edges = [_ints(e, "edge", line_no) for e in edge_text.split("|")]
    if any(len(e) != 2 for e in edges):
        raise TaskError(f"line {line_no}: every edge must be two nodes 'u,v'")
    q = _ints(query, "query", line_no)
    if len(q) != 2:
        raise TaskError(f"line {line_no}: the query must be 'start,goal', got {query!r}")
    return edges, q, _ints(path, "path", line_no)


def parse_rows(lines: list[str], n_edges: int, path_len: int, n_nodes: int, first_line_no: int,
               edges_expected: str, path_expected: str):
    """Text lines as tensors (B, E, 2), (B, 2), (B, L), with the checks every edge-list task shares
    (edge and path counts, label range, the path's two ends), and `fail(bad_rows, why)`, which raises
    one error naming the first bad row's line. `*_expected` finish the count errors ("..., but X")."""
    if not lines:
        raise TaskError("no graphs to read: the input is empty")
    edges, queries, paths = [], [], []
    for i, line in enumerate(lines):
        no = first_line_no + i
        e, q, p = split_line(line, no)
        if len(e) != n_edges:
            raise TaskError(f"line {no}: {len(e)} edges, but {edges_expected}")
        if len(p) != path_len:
            raise TaskError(f"line {no}: path of {len(p)} nodes, but {path_expected}")
        edges.append(e)
        queries.append(q)
        paths.append(p)
    E, Q, T = torch.tensor(edges), torch.tensor(queries), torch.tensor(paths)  # (B,E,2) (B,2) (B,L)

    def fail(bad: torch.Tensor, why: str):
        if bad.any():
            raise TaskError(f"line {first_line_no + int(bad.nonzero()[0, 0])}: {why}")

    every = torch.cat([E.reshape(len(E), -1), Q, T], dim=1)
    fail(((every < 0) | (every >= n_nodes)).any(1), f"a node label outside 0..{n_nodes - 1} (the task has {n_nodes} nodes; pass --nodes to change it)")
    fail(T[:, 0] != Q[:, 0], "the path does not begin at the start node of the query")
    fail(T[:, -1] != Q[:, 1], "the path does not end at the goal node of the query")
    return E, Q, T, fail


def parse_ntf_lines(lines: list[str], task, first_line_no: int = 1) -> Batch:
    """Parse NTF lines of `task`'s shape into a Batch, checking each is a path-star graph with its path."""
    d, l, n_nodes = task.degree, task.path_len, task.n_nodes
    E, Q, T, fail = parse_rows(lines, task.n_edges, l, n_nodes, first_line_no,
                               f"{task.describe()} has degree*(path_len-1) = {task.n_edges}",
                               f"{task.describe()} paths have path_len = {l}")
    B = E.shape[0]
    parent, child = E[..., 0], E[..., 1]
    start, goal = Q[:, 0], Q[:, 1]
    from_start = parent == start[:, None]  # (B, E)
    fail(from_start.sum(1) != d, f"the start node does not have exactly degree = {d} children")
    ones = torch.ones_like(child)
    in_deg = torch.zeros(B, n_nodes, dtype=torch.long).scatter_add_(1, child, ones)
    fail((in_deg > 1).any(1) | (child == start[:, None]).any(1), "a node has two parents (or the start has a parent): not a path-star graph")
    inner_parent = torch.where(from_start, n_nodes, parent)  # start edges go to a spare column
    out_deg = torch.zeros(B, n_nodes + 1, dtype=torch.long).scatter_add_(1, inner_parent, ones)[:, :n_nodes]
    fail((out_deg > 1).any(1), "a node other than the start has two children: not a path-star graph")
    child_of = torch.full((B, n_nodes + 1), n_nodes, dtype=torch.long).scatter_(1, inner_parent, child)
    child_of[:, n_nodes] = n_nodes  # no node is the child of the spare column
    candidates = torch.where(from_start, child, n_nodes).sort(dim=1).values[:, :d]  # (B, D)
    steps = [candidates]
    for _ in range(l - 2):
        steps.append(child_of.gather(1, steps[-1]))
        fail((steps[-1] == n_nodes).any(1), f"an arm is shorter than path_len = {l}")
    arms = torch.stack(steps, dim=2)  # (B, D, L-1)
    fail((child_of.gather(1, arms[:, :, -1]) != n_nodes).any(1), f"an arm is longer than path_len = {l}")
    at_goal = arms[:, :, -1] == goal[:, None]
    fail(~at_goal.any(1), "the goal is not the last node of an arm")
    goal_arm = at_goal.long().argmax(1)
    fail((arms[torch.arange(B), goal_arm] != T[:, 1:]).any(1), "the path is not the path from the start to the goal")
    return task.from_arms(start, goal_arm, arms, parent, child)


def format_ntf_lines(batch: Batch) -> list[str]:
    """The NTF text line of every graph (no newline); inverse of `parse_ntf_lines`."""
    lines = []
    for edges_p, edges_c, q, path in zip(
        batch.edge_parent.tolist(), batch.edge_child.tolist(),
        torch.stack([batch.start, batch.goal], 1).tolist(), batch.target.tolist(),
    ):
        edges = "|".join(f"{u},{v}" for u, v in zip(edges_p, edges_c))
        lines.append(f"{edges}/{q[0]},{q[1]}=" + ",".join(map(str, path)))
    return lines


def infer_task(first_line: str, n_nodes: int | None, source: str = ""):
    """The task a file holds: degree and path length from its first line, nodes from the caller or
    the file name (`..._nodes_50_...`, as the public data is named)."""
    edges, _, path = split_line(first_line, 1)
    l = len(path)
    if l < 2 or len(edges) % (l - 1):
        raise TaskError(f"line 1: {len(edges)} edges do not make arms of path_len-1 = {l - 1} nodes")
    if n_nodes is None:
        m = re.search(r"nodes_(\d+)", Path(source).name)
        if not m:
            raise TaskError(f"cannot tell the number of nodes of {source or 'the input'}; pass --nodes N")
        n_nodes = int(m.group(1))
    return get_task_spec("pathstar").cls(degree=len(edges) // (l - 1), path_len=l, n_nodes=n_nodes)


MAX_LINE_BYTES = 16 << 20  # a line longer than this is refused where the task is not known (a stated cap)


def max_line_bytes(task) -> int:
    """The longest valid text line of `task`'s graphs, with room to spare: every token of the prompt
    and the answer as its longest label plus a separator (pathstar and tree lines alike)."""
    tokens = 3 * task.n_edges + 3 + task.target_len
    return tokens * (len(str(max(task.n_nodes - 1, 0))) + 1) + 64


def read_lines(path: str | Path, limit: int | None = None, max_line: int = MAX_LINE_BYTES) -> list[str]:
    """The text lines of a graph file (the first `limit`), or a one-line error saying what is wrong.
    Read a line at a time, each bounded by `max_line` bytes, so that a file without newlines (or a
    device such as /dev/zero, or a FIFO that never ends a line) is refused instead of read whole."""
    path = Path(path)
    lines: list[str] = []
    try:
        with open(path, "rb") as f:
            while limit is None or len(lines) < limit:
                raw = f.readline(max_line + 1)
                if not raw:
                    break
                if len(raw) > max_line and not raw.endswith(b"\n"):
                    raise TaskError(f"{path} line {len(lines) + 1} is longer than {max_line} bytes, longer than any "
                                    "graph of this task; NTF files are text lines like u,v|...|u,v/s,g=s,...,g")
                try:
                    lines.append(raw.decode("utf-8").rstrip("\r\n"))
                except UnicodeDecodeError as e:
                    raise TaskError(f"{path} line {len(lines) + 1}: byte 0x{raw[e.start]:02x} is not UTF-8 text; NTF files "
                                    "are plain text lines like u,v|...|u,v/s,g=s,...,g") from None
    except OSError as e:
        raise TaskError(f"cannot read NTF file {path}: {e.strerror}") from None
    if not lines:
        raise TaskError(f"{path} holds no graphs")
    return lines


def read_ntf(path: str | Path, task=None, n_nodes: int | None = None,
             limit: int | None = None) -> Batch:
    """Read an NTF text file. With `task` the file must hold that task's graphs (a checkpoint's);
    without it the task is inferred (`infer_task`). `limit` reads only the first graphs."""
    path = Path(path)
    lines = read_lines(path, limit, max_line_bytes(task) if task is not None else MAX_LINE_BYTES)
    found = infer_task(lines[0], task.n_nodes if task is not None else n_nodes, str(path))
    if task is not None and (found.degree, found.path_len) != (task.degree, task.path_len):
        raise TaskError(
            f"{path} holds G({found.degree},{found.path_len}) graphs but the model was trained on "
            f"G({task.degree},{task.path_len}); use a file of the model's task"
        )
    return parse_ntf_lines(lines, task or found)


def write_ntf(path: str | Path, batch: Batch) -> None:
    """Write graphs as NTF lines, one per line with a final newline (the public files' layout)."""
    Path(path).write_text("".join(line + "\n" for line in format_ntf_lines(batch)))
