"""The failure verdict says what it ruled out (issue 23, part 5): the learning order (snapshots),
capacity and training length (a capacity witness: analyses/witness.py). Without them a yes is the
signature, its cause not separated from those, in the evidence and in `values.ruled_out`."""
from pathlib import Path

import pytest

from hansprobe.analyses.failure import failure_verdict
from hansprobe.analyses.witness import measure_witness
from hansprobe.checkpoint import read_config

from helpers import run_cli

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
PLANNER = CHECKPOINTS / "controls" / "pathstar-d2-l3-n50-teacher-forcing"  # decides from the goal: 0.92
FAILURE = CHECKPOINTS / "pathstar-d2-l5-n50-teacher-forcing"


def _v(answer):
    return {"answer": answer, "evidence": "e", "values": {}}


SIGNATURE = {"lookup": _v("yes"), "indecipherable": _v("yes"), "decision_computed": _v("no")}


def _dynamics(above=()):
    return {"steps": [100, 500, 1000], "learned_at": [100, None, 500, 500, 100], "decision_above_chance_at": list(above)}


def test_at_chance_throughout_is_tested_over_all_snapshots_together():
    """8 snapshots at 1,000 graphs: one at 0.539 (a 95% CI that excludes 1/2 alone) is no rise once the
    snapshots are tested together (Bonferroni); 0.56 is."""
    from hansprobe.analyses.dynamics import DynamicsResult

    def dyn(accs):
        n = len(accs)
        return DynamicsResult(objective="teacher-forcing", n_graphs=1000, steps=list(range(n)), forced_accuracy=[[0.0]] * n,
                              decision_accuracy=accs, candidate_entropy_frac=[1.0] * n, information_nats=[0.0] * n,
                              learned_at=[None], learning_order=[0], candidate_accuracy=accs, chance=0.5)
    assert dyn([0.5] * 7 + [0.539]).decision_above_chance_at == []
    assert dyn([0.5] * 7 + [0.56]).decision_above_chance_at == [7]


def _witness(**kw):
    w = {"path": "w", "objective": "reverse", "steps": 1000, "n_graphs": 2000, "decision_accuracy": 0.99,
         "decision_accuracy_ci": [0.985, 0.995], "learned": True, "rules_out_capacity": True,
         "rules_out_training_length": True, "differences": [], "batch_size": 256, "steps_of_checkpoint": 3000,
         "batch_size_of_checkpoint": 256}
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


def test_a_witness_of_the_same_shape_and_budget_rules_out_capacity_and_training_length():
    v = failure_verdict("teacher-forcing", SIGNATURE, _dynamics(), {"skipped": "none"})
    assert v["values"]["ruled_out"]["capacity"] is False
    v = failure_verdict("teacher-forcing", SIGNATURE, _dynamics(), _witness())
    assert v["values"]["ruled_out"] == {"learning_order": True, "capacity": True, "training_length": True}
    assert "not separated" not in v["evidence"] and "ruled out" in v["evidence"]
    longer = failure_verdict("teacher-forcing", SIGNATURE, _dynamics(), _witness(rules_out_training_length=False,
                                                                                  steps=9000))
    assert longer["values"]["ruled_out"] == {"learning_order": True, "capacity": True, "training_length": False}
    assert "not within this model's budget" in longer["evidence"]
    other_shape = _witness(rules_out_capacity=False, rules_out_training_length=False,
                           differences=["model.n_layers: 2 here, 4 in the witness"])
    v = failure_verdict("teacher-forcing", SIGNATURE, None, other_shape)
    assert v["values"]["ruled_out"]["capacity"] is False and "model.n_layers" in v["evidence"]


def _shipped(*paths):
    for p in paths:
        if not (p / "config.json").is_file():
            pytest.skip(f"{p.name} is not shipped in this clone")


def test_measure_witness_compares_task_and_shape_and_measures_the_decision():
    _shipped(PLANNER, FAILURE)
    cfg = read_config(PLANNER)
    same = measure_witness(cfg, PLANNER, n_graphs=1000, seed=1234)  # itself: same task, shape, budget
    assert same.same_task and same.same_shape and same.within_budget and same.forward
    assert same.learned == (same.decision_accuracy_ci[0] >= 0.9)
    assert same.rules_out_capacity == same.learned and same.rules_out_training_length == same.learned
    other = measure_witness(read_config(FAILURE), PLANNER, n_graphs=200, seed=1234)  # G(2,3) is not G(2,5)
    assert not other.same_task and any("task.path_len" in d for d in other.differences)
    assert not other.rules_out_capacity and not other.rules_out_training_length
    failing = measure_witness(cfg, FAILURE, n_graphs=500, seed=1234)  # a witness that does not decide
    assert not failing.learned and not failing.rules_out_capacity


def test_report_takes_a_witness_and_refuses_one_that_is_no_checkpoint(tmp_path, capsys):
    _shipped(PLANNER)
    code, out, err = run_cli(["report", str(PLANNER), "--witness", str(tmp_path / "nope"), "-n", "20",
                              "--mechanism-graphs", "20", "--patch-pairs", "4", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nope" in err
    assert not (tmp_path / "r" / "report.json").exists()


def test_the_shipped_witness_rules_out_capacity_and_training_length_for_the_shipped_failure():
    """Issue 24: the 4-layer teacher-forcing failure and the multi-token model of the same shape and
    budget that decides forwards (docs/study-depth.md)."""
    failure = CHECKPOINTS / "pathstar-d2-l5-n50-teacher-forcing-4layers-6000steps"
    witness = CHECKPOINTS / "pathstar-d2-l5-n50-multi-token-4layers-6000steps"
    _shipped(failure, witness)
    w = measure_witness(read_config(failure), witness, n_graphs=1000, seed=1234)
    assert w.same_task and w.same_shape and w.forward and w.within_budget, w.differences
    assert w.decision_accuracy_ci[0] >= 0.9 and w.rules_out_capacity and w.rules_out_training_length
    two_layers = measure_witness(read_config(FAILURE), witness, n_graphs=100, seed=1234)  # not the 2-layer model's shape
    assert not two_layers.same_shape and not two_layers.rules_out_capacity
    assert any("model.n_layers" in d for d in two_layers.differences)
