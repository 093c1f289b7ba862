"""The tree task: structure invariants, counterfactual pairs, and the CLI from data to report."""
import json

import pytest
import torch

from hansprobe.cli import main
from hansprobe.errors import TaskError
from hansprobe.objectives import get_objective
from hansprobe.tasks import Tree, task_from_dict
from hansprobe.tasks.ntf_format import format_ntf_lines
from hansprobe.tasks.tree import parse_tree_lines
from helpers import REPO


def edges_of(batch):
    return {(int(u), int(v)) for u, v in zip(batch.edge_parent[0], batch.edge_child[0])}


@pytest.mark.parametrize("b,h", [(2, 2), (2, 3), (3, 2), (2, 4), (3, 3)])
@pytest.mark.parametrize("seed", [0, 7])
def test_tree_structure(b, h, seed):
    task = Tree(branching=b, depth=h, n_nodes=task_nodes(b, h) + 5)
    batch = task.generate(64, seed)
    n = len(batch)
    assert batch.prefix.shape == (n, task.prefix_len) and batch.target.shape == (n, h + 1)
    assert batch.edge_parent.shape[1] == task.n_edges == task.tree_nodes - 1
    for g in range(n):
        one = batch[g]
        edges = edges_of(one)
        path = one.target[0].tolist()
        assert path[0] == int(one.start) and path[-1] == int(one.goal)
        assert all((u, v) in edges for u, v in zip(path, path[1:]))  # the path follows the edges
        children = sorted(v for u, v in edges if u == path[0])
        assert one.candidates[0].tolist() == children and children[int(one.goal_arm)] == path[1]
        assert not any(u == path[-1] for u, _ in edges)  # the goal is a leaf
        parents = [u for u, _ in edges]
        assert all(parents.count(u) == b for u in set(parents))  # every inner node has b children
        arm = one.node_arm[0]
        assert int(arm[path[0]]) == -1 and all(int(arm[v]) == int(one.goal_arm) for v in path[1:])
        assert (arm >= 0).sum() == task.n_edges and torch.bincount(arm[arm >= 0], minlength=b).tolist() == [task.n_edges // b] * b
    # the goal leaf and the edge order are uniform-ish, and the same seed gives the same trees
    assert 0.3 < batch.goal_arm.float().mean() * b / (b - 1) or b > 2
    assert torch.equal(task.generate(64, seed).prefix, batch.prefix)
    assert not torch.equal(task.generate(64, seed + 1).prefix, batch.prefix)


def task_nodes(b, h):
    return (b ** (h + 1) - 1) // (b - 1)


def test_goal_swap_moves_only_the_goal():
    task = Tree()
    batch = task.generate(200, 1)
    swap = task.counterfactuals["goal_swap"](batch, 5)
    assert torch.equal(swap.edge_parent, batch.edge_parent) and torch.equal(swap.edge_child, batch.edge_child)
    assert (swap.goal_arm != batch.goal_arm).all()
    differs = (swap.prefix != batch.prefix)
    assert differs[:, task.prefix_len - 2].all() and differs.sum(1).eq(1).all()  # the goal token, nothing else
    is_parent = (swap.edge_parent == swap.goal[:, None]).any(1)
    assert not is_parent.any()  # still a leaf


def test_arm_rewire_keeps_the_goal_and_flips_the_decision():
    task = Tree(branching=3, depth=3, n_nodes=60)
    batch = task.generate(200, 2)
    rew = task.counterfactuals["arm_rewire"](batch, 3)
    assert torch.equal(rew.goal, batch.goal) and torch.equal(rew.edge_child, batch.edge_child)
    assert (rew.goal_arm != batch.goal_arm).all()
    changed = (rew.prefix != batch.prefix).sum(1)
    assert changed.eq(2 * task.branching).all()  # the parent tokens of the two first nodes' child edges
    assert torch.equal(rew.target[:, 2:], batch.target[:, 2:])  # below the first node the path is the same


def test_placebo_relists_edges_and_keeps_the_answer():
    task = Tree()
    batch = task.generate(100, 3)
    pl = task.placebo(batch, 4)
    assert torch.equal(pl.target, batch.target) and torch.equal(pl.goal_arm, batch.goal_arm)
    assert not torch.equal(pl.prefix, batch.prefix)


@pytest.mark.parametrize("kw,needle", [({"branching": 1}, "branching must be at least 2"),
                                       ({"depth": 1}, "depth must be at least 2"),
                                       ({"n_nodes": 10}, "has 15 nodes"), ({"depth": 2.0}, "must be an integer")])
def test_bad_tree_parameters(kw, needle):
    with pytest.raises(TaskError, match=needle):
        Tree(**kw)
    with pytest.raises(TaskError, match=needle):
        task_from_dict({"name": "tree", **kw})


def test_data_train_and_report_on_trees(tmp_path, capsys):
    assert main(["data", "--task", "tree", "-n", "50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 50 and all(line.count("|") == 13 for line in lines)  # T(2, 3): 14 edges
    run = tmp_path / "tree"
    assert main(["train", "--task", "tree", "--depth", "2", "--nodes", "12", "--n-layers", "1", "--d-model", "32",
                 "--n-heads", "2", "--steps", "6", "--batch-size", "16", "--eval-every", "3", "--eval-graphs", "32",
                 "--checkpoint-every", "3", "--out", str(run), "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["task"] == {"branching": 2, "depth": 2, "n_nodes": 12, "name": "tree"}
    assert main(["eval", str(run), "-n", "20", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["forced_accuracy"]) == 3
    code = main(["report", str(run), "-n", "30", "--patch-pairs", "10", "--out", str(tmp_path / "r")])
    _, err = capsys.readouterr()
    assert code == 0, err
    c = json.loads((tmp_path / "r" / "report.json").read_text())["checkpoints"][0]
    assert c["verdicts"]["lookup"]["answer"] == "not applicable"
    assert "every node on a tree path has 2 children" in c["verdicts"]["lookup"]["evidence"]
    assert c["analyses"]["heads"] == {"skipped": c["verdicts"]["lookup"]["evidence"]}
    assert set(c["analyses"]["entropy"]["goal_dependence"]["kinds"]) == {"goal_swap", "arm_rewire"}
    # text files: `data` writes them, `--data` reads them back for the checkpoint's task
    assert main(["data", "--task", "tree", "--depth", "2", "--nodes", "12", "-n", "20", "--out", str(tmp_path / "x.txt")]) == 0
    assert main(["eval", str(run), "--data", str(tmp_path / "x.txt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_graphs"] == 20
    assert main(["data", "--task", "tree", "--branching", "3", "--depth", "2", "--nodes", "40", "-n", "5", "--out", str(tmp_path / "d3.txt")]) == 0
    code = main(["eval", str(run), "--data", str(tmp_path / "d3.txt")])
    assert code == 2 and "line 1: 12 edges, but" in capsys.readouterr().err


@pytest.mark.parametrize("b,h,goal_first", [(2, 3, False), (3, 2, True), (4, 2, False)])
def test_tree_text_round_trip(b, h, goal_first):
    task = Tree(b, h, 40, goal_first=goal_first)
    batch = task.generate(64, 5)
    back = parse_tree_lines(format_ntf_lines(batch), task)
    for name in ("prefix", "target", "start", "goal", "goal_arm", "candidates", "node_arm", "edge_parent", "edge_child"):
        assert torch.equal(getattr(back, name), getattr(batch, name)), name


def _edit(line: str, fn) -> str:
    """Apply fn to the (edges, query, path) of one text line and write it back."""
    left, path = line.split("=")
    edge_text, query = left.rsplit("/", 1)
    edges = [list(map(int, e.split(","))) for e in edge_text.split("|")]
    q, p = list(map(int, query.split(","))), list(map(int, path.split(",")))
    fn(edges, q, p)
    return "|".join(f"{u},{v}" for u, v in edges) + f"/{q[0]},{q[1]}=" + ",".join(map(str, p))


def _leaf_edge(edges, q):
    parents = {u for u, _ in edges}
    return next(i for i, (u, v) in enumerate(edges) if v not in parents)


def _drop_edge(e, q, p):
    del e[0]


def _label_out_of_range(e, q, p):
    e[0][1] = 99


def _wrong_path(e, q, p):
    p[1] = next(v for u, v in e if u == q[0] and v != p[1])  # the root's other child


def _two_parents(e, q, p):
    e[_leaf_edge(e, q)][1] = p[1]  # a leaf edge now points at the root's child on the path


def _one_child(e, q, p):
    i = _leaf_edge(e, q)
    leaves = [v for u, v in e if v not in {u2 for u2, _ in e}]
    e[i][0] = next(v for v in leaves if v != e[i][1])  # hang a leaf under another leaf


def _goal_not_on_path(e, q, p):
    q[1] = p[-1] = next(v for u, v in e if v not in p)  # the goal moved, the path did not


@pytest.mark.parametrize("edit,needle", [
    (_drop_edge, "edges, but"), (_label_out_of_range, "outside 0..39"), (_wrong_path, "not the path from the root"),
    (_two_parents, "two parents"), (_one_child, "not exactly branching = 2"), (_goal_not_on_path, "root to the goal"),
])
def test_a_damaged_tree_line_is_one_error_with_its_line_number(edit, needle):
    task = Tree(2, 3, 40)
    lines = format_ntf_lines(task.generate(3, 1))
    lines[1] = _edit(lines[1], edit)
    with pytest.raises(TaskError, match="^line 2: ") as e:
        parse_tree_lines(lines, task)
    assert needle in str(e.value)


# --- issue 23 part 6: every decision of a tree ---------------------------------------------------------
class SecondDecisionModel(torch.nn.Module):
    """A hand-made tree model: at the first decision uniform over everything (at chance); at the second
    decision (label 2, after r1) `nats` above the rest on the goal's ancestor at depth 2, read from
    the prompt's edges and goal: it decides the later choice from the goal and not the first."""

    def __init__(self, task, nats=4.0):
        super().__init__()
        self.task, self.nats = task, nats
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, tokens):
        t, p = self.task, self.task.prefix_len
        parent, child = tokens[:, 0:3 * t.n_edges:3], tokens[:, 1:3 * t.n_edges:3]
        goal = tokens[:, p - 2]
        parent_of = torch.full((len(tokens), t.n_nodes + 1), t.n_nodes).scatter_(1, child, parent)
        node = goal
        for _ in range(t.depth - 2):
            node = parent_of.gather(1, node[:, None])[:, 0]  # the goal's ancestor at depth 2
        out = torch.zeros(len(tokens), tokens.shape[1], t.d_vocab)
        out[torch.arange(len(tokens)), p + 1, node] = self.nats  # label 2 is predicted at P-1+2
        return out.log_softmax(-1)


def test_every_decision_of_a_tree_is_measured_and_a_later_one_can_be_decided_alone():
    from hansprobe.measurements.decisions import measure_decisions
    from hansprobe.tasks.tree import decision_view, goal_swap_at

    task = Tree(2, 3, 20)
    b = task.generate(2000, 0)
    v2 = decision_view(b, 2)
    assert (v2.candidates[torch.arange(len(b)), v2.goal_arm] == b.target[:, 2]).all()
    s2 = goal_swap_at(b, 2, seed=1)
    assert (s2.target[:, :2] == b.target[:, :2]).all() and (s2.target[:, 2] != b.target[:, 2]).all()
    r = measure_decisions(SecondDecisionModel(task), get_objective("teacher-forcing"), b, seed=0)
    first, second = r.decisions
    assert first["index"] == 1 and second["index"] == 2
    assert first["outcome"] in ("not learned", "indecipherable", "inconclusive") and first["goal_swap"]["status"] == "absent"
    assert second["outcome"] == "decided" and second["candidate_accuracy"] > 0.95
    assert second["goal_swap"]["status"] == "present" and second["goal_swap"]["delta_mean"] > 1
    assert "decisions_by_index" in r.figures()
    lines = r.text().splitlines()  # what `hansprobe analyse decisions` prints: one line per decision
    assert len(lines) == 2 and "r1 (2 backward hops" in lines[0] and lines[1].startswith("  r2 (1 backward hop from")
    assert lines[1].endswith("decided") and "goal swap present" in lines[1]


TREE_CONTROL = REPO / "checkpoints" / "controls" / "tree-b2-h3-n50-goal-first-4layers"


@pytest.mark.slow
@pytest.mark.skipif(not (TREE_CONTROL / "config.json").is_file(), reason="the T(2,3) goal-first control is not shipped in this clone")
def test_the_shipped_tree_control_learns_the_decision_nearer_the_goal_and_not_the_first():
    """Issue 23 part 6, the tree question: on T(2,3) at 4 layers, teacher forcing with the goal first
    decides label 2 (one backward hop from the goal) from the goal, while label 1 (two hops) stays at
    chance; its snapshots show label 2 learned during training and label 1 never, with the gradient
    going to label 1 afterwards (docs/study-objectives.md)."""
    import hansprobe
    from hansprobe.measurements.decisions import measure_decisions
    from hansprobe.measurements.dynamics import measure_dynamics

    model, task, obj = hansprobe.load(TREE_CONTROL)
    batch = task.generate(600, 1234)
    first, second = measure_decisions(model, obj, batch, seed=0).decisions
    assert second["outcome"] == "decided" and second["candidate_accuracy_ci"][0] > 0.95
    assert second["goal_swap"]["status"] == "present"
    assert first["outcome"] in ("indecipherable", "inconclusive") and first["goal_swap"]["status"] == "absent"
    dyn = measure_dynamics(TREE_CONTROL, task.generate(200, 1234))
    assert dyn.learned_at[2] is not None and dyn.learned_at[1] is None
    assert dyn.grad_share[-1][1] > 0.9  # once label 2 is fitted, label 1 carries the supervision
