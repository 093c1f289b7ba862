import re

import pytest
import torch

from hansprobe.errors import TaskError
from hansprobe.tasks import PathStar

from helpers import tiny_task


@pytest.mark.parametrize("d,l,n", [(2, 5, 50), (5, 5, 50), (3, 2, 4), (1, 3, 3), (4, 3, 9)])
def test_generated_graphs_are_path_stars_with_their_path(d, l, n):
    task = PathStar(d, l, n)
    b = task.generate(500, seed=3)
    B = len(b)
    assert b.prefix.shape == (B, 3 * d * (l - 1) + 3) and b.target.shape == (B, l)
    used = torch.cat([b.start[:, None], b.arms.reshape(B, -1)], 1)
    assert (used.sort(1).values.diff(dim=1) > 0).all(), "labels must be distinct"
    assert ((used >= 0) & (used < n)).all()
    # every edge is parent->child along an arm, and all arms hang off the start
    parents = torch.cat([b.start[:, None, None].expand(B, d, 1), b.arms[:, :, :-1]], 2).reshape(B, -1)
    edges_true = set()
    for row in range(B):
        edges_true = set(zip(parents[row].tolist(), b.arms[row].reshape(-1).tolist()))
        assert set(zip(b.edge_parent[row].tolist(), b.edge_child[row].tolist())) == edges_true
        # the target walks edges of the graph from the start to the goal
        path = b.target[row].tolist()
        assert path[0] == b.start[row] and path[-1] == b.goal[row]
        assert all((u, v) in edges_true for u, v in zip(path, path[1:]))
    assert (b.candidates == b.arms[:, :, 0]).all() and (b.candidates.diff(dim=1) > 0).all()
    assert (b.target[:, 1] == b.candidates[torch.arange(B), b.goal_arm]).all()


def test_tokens_follow_the_ntf_layout_and_positions_point_at_them():
    task = PathStar(2, 5, 50)
    b = task.generate(64, seed=0)
    p = b.prefix
    rows = torch.arange(len(b))[:, None]
    assert (p[rows, b.edge_parent_pos] == b.edge_parent).all()
    assert (p[rows, b.edge_child_pos] == b.edge_child).all()
    assert (p[:, b.edge_sep_pos[0, :-1]] == task.pipe).all() and (p[:, b.edge_sep_pos[0, -1]] == task.slash).all()
    assert (p[:, -3] == b.start).all() and (p[:, -2] == b.goal).all() and (p[:, -1] == task.equals).all()
    assert task.prefix_len == 27 and task.n_ctx == 31 and task.d_vocab == 54


def test_node_arm_labels_every_node():
    b = PathStar(3, 4, 30).generate(50, seed=1)
    rows = torch.arange(len(b))
    assert (b.node_arm[rows, b.start] == -1).all()
    for a in range(3):
        assert (b.node_arm.gather(1, b.arms[:, a]) == a).all()
    assert ((b.node_arm == -2).sum(1) == 30 - 10).all()


def test_same_seed_same_graphs_other_seed_other_graphs_and_edges_are_shuffled():
    task = tiny_task()
    a, b, c = task.generate(200, 5), task.generate(200, 5), task.generate(200, 6)
    assert torch.equal(a.prefix, b.prefix) and torch.equal(a.target, b.target)
    assert not torch.equal(a.prefix, c.prefix)
    # shuffled: the first edge is not always from the start, and the goal arm is roughly balanced
    big = PathStar(2, 5, 50).generate(4000, 0)
    from_start = (big.edge_parent[:, 0] == big.start).float().mean().item()
    assert abs(from_start - 2 / 8) < 0.05  # 2 of the 8 edges leave the start
    assert abs(big.goal_arm.float().mean().item() - 0.5) < 0.05


@pytest.mark.parametrize("kw,needle", [
    (dict(degree=2, path_len=5, n_nodes=8), "at least degree*(path_len-1)+1 = 9"),
    (dict(degree=0, path_len=5, n_nodes=50), "degree must be at least 1"),
    (dict(degree=2, path_len=1, n_nodes=50), "path_len must be at least 2"),
])
def test_impossible_parameters_name_the_minimum(kw, needle):
    with pytest.raises(TaskError, match=re.escape(needle)):
        PathStar(**kw)


def test_batch_indexing_keeps_structure_aligned():
    b = tiny_task().generate(10, 0)
    sub = b[torch.tensor([3, 7])]
    assert torch.equal(sub.prefix, b.prefix[[3, 7]]) and torch.equal(sub.goal_arm, b.goal_arm[[3, 7]])
    parts = list(b.split(4))
    assert [len(x) for x in parts] == [4, 4, 2]
    assert torch.equal(type(b).cat(parts).arms, b.arms)
