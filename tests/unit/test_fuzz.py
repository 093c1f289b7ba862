"""Property-based tests (hypothesis) of the generator invariants and the NTF round trip."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hansprobe.tasks import PathStar, format_ntf_lines, parse_ntf_lines


@st.composite
def tasks(draw):
    d = draw(st.integers(1, 6))
    l = draw(st.integers(2, 7))
    n = d * (l - 1) + 1 + draw(st.integers(0, 30))
    return PathStar(d, l, n)


@settings(max_examples=60, deadline=None)
@given(task=tasks(), seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40))
def test_generator_invariants(task, seed, n):
    b = task.generate(n, seed)
    d, l = task.degree, task.path_len
    rows = torch.arange(n)
    used = torch.cat([b.start[:, None], b.arms.reshape(n, -1)], 1)
    assert ((used >= 0) & (used < task.n_nodes)).all()
    assert (used.sort(1).values.diff(dim=1) > 0).all()  # distinct labels
    assert b.prefix.shape == (n, task.prefix_len) and b.target.shape == (n, l)
    # every edge in the prompt is parent->child along an arm; the target follows edges to the goal
    child_of = {}
    for row in range(n):
        edges = set(zip(b.edge_parent[row].tolist(), b.edge_child[row].tolist()))
        assert len(edges) == task.n_edges
        assert sum(u == b.start[row] for u, _ in edges) == d
        path = b.target[row].tolist()
        assert all((u, v) in edges for u, v in zip(path, path[1:]))
        child_of[row] = edges
    assert (b.target[:, -1] == b.goal).all() and (b.target[:, 0] == b.start).all()
    assert (b.target[:, 1:] == b.arms[rows, b.goal_arm]).all() if l > 1 else True
    assert (b.prefix[rows[:, None], b.edge_sep_pos[:, :-1]] == task.pipe).all()
    assert (b.prefix[:, -1] == task.equals).all()
    assert torch.equal(task.generate(n, seed).prefix, b.prefix)  # seeded


@settings(max_examples=60, deadline=None)
@given(task=tasks(), seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40))
def test_ntf_round_trip(task, seed, n):
    b = task.generate(n, seed)
    lines = format_ntf_lines(b)
    back = parse_ntf_lines(lines, task)
    assert format_ntf_lines(back) == lines
    for field in ("prefix", "target", "goal_arm", "candidates", "arms", "node_arm", "edge_child_pos"):
        assert torch.equal(getattr(b, field), getattr(back, field)), field
