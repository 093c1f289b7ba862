"""The failure verdict says what it ruled out (issue 23, part 5): the learning order (snapshots),
capacity and training length (a capacity witness: hansprobe/measurements/witness.py). Without them a yes is the
signature, its cause not separated from those, in the evidence and in `values.ruled_out`."""

import pytest

from hansprobe.questions.failure import failure_verdict
from hansprobe.measurements.witness import measure_witness
from hansprobe.checkpoint import read_config

from helpers import REPO, run_cli

CHECKPOINTS = REPO / "checkpoints"
PLANNER = CHECKPOINTS / "controls" / "pathstar-d2-l3-n50-teacher-forcing"  # decides from the goal: 0.92
FAILURE = CHECKPOINTS / "pathstar-d2-l5-n50-teacher-forcing"


def _v(answer):
    return {"answer": answer, "evidence": "e", "values": {}}


SIGNATURE = {"lookup": _v("yes"), "indecipherable": _v("yes"), "decision_computed": _v("no")}


def _dynamics(above=(), steps=(100, 500, 900), lookup_at=500):
    """Snapshots at `steps`; r0 and the last index learned at the first, the lookup (2, 3) at `lookup_at`, r1 never."""
    return {"steps": list(steps), "learned_at": [steps[0], None, lookup_at, lookup_at, steps[0]],
            "decision_above_chance_at": list(above)}


def test_at_chance_throughout_is_tested_over_all_snapshots_together():
    """8 snapshots at 1,000 graphs: one at 0.539 (a 95% CI that excludes 1/2 alone) is no rise once the
    snapshots are tested together (Bonferroni); 0.56 is."""
    from hansprobe.measurements.dynamics import DynamicsResult

    def dyn(accs):
        n = len(accs)
        return DynamicsResult(objective="teacher-forcing", n_graphs=1000, steps=list(range(n)), forced_accuracy=[[0.0]] * n,
                              decision_accuracy=accs, candidate_entropy_frac=[1.0] * n, information_nats=[0.0] * n,
                              learned_at=[None], learning_order=[0], candidate_accuracy=accs, chance=0.5)
    assert dyn([0.5] * 7 + [0.539]).decision_above_chance_at == []
    assert dyn([0.5] * 7 + [0.56]).decision_above_chance_at == [7]


def _witness(**kw):
    w = {"path": "w", "objective": "multi-token", "steps": 1000, "n_graphs": 2000, "decision_accuracy": 0.99,
         "decision_accuracy_ci": [0.985, 0.995], "learned": True, "rules_out_capacity": True, "same_task": True,
         "same_shape": True, "same_layout": True, "differences": [], "batch_size": 256, "steps_of_checkpoint": 3000,
         "batch_size_of_checkpoint": 256, "graphs_seen": 256_000, "graphs_seen_of_checkpoint": 768_000,
         "within_budget": True, "schedule_differences": []}
    return {**w, **kw}


def test_a_bare_signature_says_its_cause_is_not_separated():
    v = failure_verdict("teacher-forcing", SIGNATURE, None)
    assert v["answer"] == "yes"
    assert "its cause not separated from learning order / capacity / training length" in v["evidence"]
    assert v["values"]["ruled_out"] == {"learning_order": False, "capacity": False, "training_length": False}


def test_snapshots_at_chance_throughout_rule_out_the_learning_order_only():
    v = failure_verdict("teacher-forcing", SIGNATURE, _dynamics())
    assert v["values"]["ruled_out"] == {"learning_order": True, "capacity": False, "training_length": False}
    assert "not separated from capacity / training length" in v["evidence"]
    rose = failure_verdict("teacher-forcing", SIGNATURE, _dynamics(above=[500]))  # r1 above chance once, never learned
    assert rose["answer"] == "yes" and rose["values"]["ruled_out"]["learning_order"] is False
    assert "rose above chance at step(s) 500" in rose["evidence"]


@pytest.mark.parametrize("steps,lookup_at", [((3000,), 3000), ((1000, 2000, 3000), 1000)])
def test_no_order_is_seen_without_a_snapshot_before_the_lookup_is_learned(steps, lookup_at):
    """Issue 36 item 4: a single snapshot at the final step, or snapshots taken only once the lookup was
    learned, passed "later tokens learned first, r1 never" without any order observed."""
    v = failure_verdict("teacher-forcing", SIGNATURE, _dynamics(steps=steps, lookup_at=lookup_at))
    assert v["answer"] == "yes" and v["values"]["ruled_out"]["learning_order"] is False
    assert "not checked" in v["evidence"] and "before the lookup" in v["evidence"]


def test_training_length_is_ruled_out_by_this_models_own_plateau_not_by_a_witness():
    """Issue 36 item 3: a witness trained with another objective says nothing about how long this
    objective needs. A plateau does: r1 at chance from the lookup's step to twice it and beyond."""
    plateau = _dynamics(steps=(100, 250, 500, 1000, 6000), lookup_at=250)
    v = failure_verdict("teacher-forcing", SIGNATURE, plateau)
    assert v["values"]["ruled_out"] == {"learning_order": True, "capacity": False, "training_length": True}
    assert "a plateau" in v["evidence"] and "250" in v["evidence"]
    witness_only = failure_verdict("teacher-forcing", SIGNATURE, _dynamics(), _witness())
    assert witness_only["values"]["ruled_out"] == {"learning_order": True, "capacity": True, "training_length": False}
    assert "no plateau shown" in witness_only["evidence"]


def test_a_witness_of_the_same_shape_and_layout_rules_out_capacity_under_its_objective():
    v = failure_verdict("teacher-forcing", SIGNATURE, _dynamics(), {"skipped": "none"})
    assert v["values"]["ruled_out"]["capacity"] is False
    plateau = _dynamics(steps=(100, 250, 500, 1000, 6000), lookup_at=250)
    v = failure_verdict("teacher-forcing", SIGNATURE, plateau, _witness())
    assert v["values"]["ruled_out"] == {"learning_order": True, "capacity": True, "training_length": True}
    assert "not separated" not in v["evidence"] and "ruled out" in v["evidence"]
    assert "this shape can learn the decision under multi-token, within this model's budget (256,000 graphs" in v["evidence"]
    sharded = failure_verdict("teacher-forcing", SIGNATURE, plateau, _witness(within_budget=False, graphs_seen=2_048_000))
    assert "beyond this model's budget (2,048,000 graphs seen" in sharded["evidence"]
    other_shape = _witness(rules_out_capacity=False, same_shape=False, differences=["model.n_layers: 2 here, 4 in the witness"])
    v = failure_verdict("teacher-forcing", SIGNATURE, None, other_shape)
    assert v["values"]["ruled_out"]["capacity"] is False and "model.n_layers" in v["evidence"]


def test_a_witness_in_another_prompt_layout_shows_capacity_for_that_layout_only():
    """Issue 36 item 2: a goal-first witness ruled out capacity for a standard-layout checkpoint, yet
    goal first is exactly the route that makes planning easy."""
    goal_first = _witness(rules_out_capacity=False, same_layout=False,
                          layout_differences=["task.goal_first: False here, True in the witness"])
    v = failure_verdict("teacher-forcing", SIGNATURE, _dynamics(), goal_first)
    assert v["values"]["ruled_out"]["capacity"] is False
    assert "capacity is shown for that layout, not this one" in v["evidence"] and "goal_first" in v["evidence"]


def _shipped(*paths):
    for p in paths:
        if not (p / "config.json").is_file():
            pytest.skip(f"{p.name} is not shipped in this clone")


def test_measure_witness_compares_task_and_shape_and_measures_the_decision():
    _shipped(PLANNER, FAILURE)
    cfg = read_config(PLANNER)
    same = measure_witness(cfg, PLANNER, n_graphs=1000, seed=1234)  # itself: same task, layout, shape, budget
    assert same.same_task and same.same_shape and same.same_layout and same.within_budget and same.forward
    assert same.graphs_seen == same.graphs_seen_of_checkpoint == cfg["step"] * cfg["train"]["batch_size"]
    assert same.learned == (same.decision_accuracy_ci[0] >= 0.9)
    assert same.rules_out_capacity == same.learned
    other = measure_witness(read_config(FAILURE), PLANNER, n_graphs=200, seed=1234)  # G(2,3) is not G(2,5)
    assert not other.same_task and any("task.path_len" in d for d in other.differences)
    assert not other.rules_out_capacity
    sharded = {**cfg, "train": {**cfg["train"], "data_shards": 8}}  # a checkpoint that saw 8x the graphs per step ...
    assert measure_witness(sharded, PLANNER, n_graphs=100, seed=1234).within_budget  # ... has the witness within its budget
    slower = {**cfg, "train": {**cfg["train"], "lr": cfg["train"]["lr"] / 2}}
    w = measure_witness(slower, PLANNER, n_graphs=100, seed=1234)
    assert not w.within_budget and any("train.lr" in d for d in w.schedule_differences)
    goal_first = {**cfg, "task": {**cfg["task"], "goal_first": True}}
    w = measure_witness(goal_first, PLANNER, n_graphs=100, seed=1234)
    assert w.same_task and not w.same_layout and not w.rules_out_capacity and w.layout_differences
    failing = measure_witness(cfg, FAILURE, n_graphs=500, seed=1234)  # a witness that does not decide
    assert not failing.learned and not failing.rules_out_capacity


def test_report_takes_a_witness_and_refuses_one_that_is_no_checkpoint(tmp_path, capsys):
    _shipped(PLANNER)
    code, out, err = run_cli(["report", str(PLANNER), "--witness", str(tmp_path / "nope"), "-n", "20",
                              "--mechanism-graphs", "20", "--patch-pairs", "4", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nope" in err
    assert not (tmp_path / "r" / "report.json").exists()


def test_the_shipped_witness_rules_out_capacity_for_the_shipped_failure():
    """Issue 24: the 4-layer teacher-forcing failure and the multi-token model of the same shape and
    budget that decides forwards (docs/study-depth.md)."""
    failure = CHECKPOINTS / "pathstar-d2-l5-n50-teacher-forcing-4layers-6000steps"
    witness = CHECKPOINTS / "pathstar-d2-l5-n50-multi-token-4layers-6000steps"
    _shipped(failure, witness)
    w = measure_witness(read_config(failure), witness, n_graphs=1000, seed=1234)
    assert w.same_task and w.same_shape and w.forward and w.within_budget, w.differences
    assert w.decision_accuracy_ci[0] >= 0.9 and w.rules_out_capacity and w.same_layout
    two_layers = measure_witness(read_config(FAILURE), witness, n_graphs=100, seed=1234)  # not the 2-layer model's shape
    assert not two_layers.same_shape and not two_layers.rules_out_capacity
    assert any("model.n_layers" in d for d in two_layers.differences)
