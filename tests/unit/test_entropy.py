import math

import pytest
import torch

from hansprobe.measurements import measure_entropy
from hansprobe.objectives import get_objective
from hansprobe.tasks import PathStar

from helpers import DecisionModel, RuleModel


def probs_on_candidates(batch, weights_fn):
    """(B, V) probabilities putting weights_fn(batch) (B, D) on the candidates, 0 elsewhere."""
    w = weights_fn(batch)
    p = torch.zeros(len(batch), batch.task.d_vocab)
    return p.scatter(1, batch.candidates, w / w.sum(1, keepdim=True))


@pytest.mark.parametrize("d", [2, 5])
def test_uniform_over_candidates_is_log_d_and_indecipherable(d):
    task, obj = PathStar(d, 4, 40), get_objective("teacher-forcing")
    b = task.generate(1500, 0)
    model = RuleModel(task, obj, lambda s: torch.zeros(len(s["goal"]), d))  # the same logits for every candidate
    r = measure_entropy(model, obj, b, batch_size=500)
    assert r.candidate_entropy_nats == pytest.approx(math.log(d), abs=1e-5)
    assert r.entropy_nats == pytest.approx(math.log(d), abs=1e-5) and r.candidate_entropy_frac == pytest.approx(1, abs=1e-5)
    assert r.information_nats == pytest.approx(0, abs=1e-5) and r.mass_outside_candidates == pytest.approx(0, abs=1e-5)
    # ties go to the first candidate: accuracy = the share of goals on arm 0, equivalent to 1/d
    assert r.candidate_accuracy == pytest.approx(float((b.goal_arm == 0).float().mean()))
    assert r.indecipherable and r.outcome == "indecipherable"
    assert all(v["abs_delta_mean"] == 0.0 for v in r.goal_dependence["kinds"].values())


def test_one_hot_on_the_answer_is_zero_entropy_and_certain():
    task, obj = PathStar(2, 5, 50), get_objective("teacher-forcing")
    b = task.generate(800, 1)
    model = DecisionModel(b, obj, probs_on_candidates(b, lambda b: torch.nn.functional.one_hot(b.goal_arm, 2).float()))
    r = measure_entropy(model, obj, b)
    assert r.candidate_entropy_nats == pytest.approx(0, abs=1e-4) and r.decision_accuracy == 1.0
    assert r.information_nats == pytest.approx(math.log(2), abs=1e-4)
    assert not r.indecipherable


def test_confident_guess_not_tied_to_the_goal_has_negative_information_and_is_indecipherable():
    """The design's trial case: low candidate entropy, chance accuracy, negative information."""
    task, obj = PathStar(2, 5, 50), get_objective("teacher-forcing")
    b = task.generate(2000, 2)
    w = lambda s: torch.tensor([[0.9, 0.1]]).log().expand(len(s["goal"]), 2)  # always prefer the lower label  # noqa: E731
    r = measure_entropy(RuleModel(task, obj, w), obj, b)
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert r.candidate_entropy_nats == pytest.approx(h, abs=1e-4)
    assert r.information_nats < 0 and r.information_nats_ci[1] < 0
    assert r.indecipherable
    assert r.preference["lowest label"]["rate"] == 1.0 and r.preference["lowest label"]["follows"]
    assert not r.preference["edge listed first"]["follows"] or abs(r.preference["edge listed first"]["rate"] - 0.5) < 0.1


def test_mass_outside_candidates_and_the_reverse_decision_position():
    task, obj = PathStar(2, 4, 30), get_objective("reverse")
    b = task.generate(300, 3)
    p = probs_on_candidates(b, lambda b: torch.nn.functional.one_hot(b.goal_arm, 2).float()) * 0.7
    p[:, task.pipe] = 0.3
    r = measure_entropy(DecisionModel(b, obj, p), obj, b)
    assert r.decision_index == 2 and r.mass_outside_candidates == pytest.approx(0.3, abs=1e-5)
    assert r.candidate_entropy_nats == pytest.approx(0, abs=1e-4) and r.decision_accuracy == 1.0


def test_partial_information_is_not_indecipherable():
    task, obj = PathStar(2, 5, 50), get_objective("teacherless")
    b = task.generate(2000, 4)
    w = lambda s: (torch.nn.functional.one_hot(s["goal_arm"], 2).float() * 0.4 + 0.3).log()  # 0.7 on the answer  # noqa: E731
    r = measure_entropy(RuleModel(task, obj, w), obj, b)
    assert r.information_nats == pytest.approx(math.log(0.7) + math.log(2), abs=1e-4)
    assert r.decision_accuracy == 1.0 and not r.indecipherable and r.outcome == "decided"
    dz = 2 * math.log(0.7 / 0.3)  # the log-odds flip from +log(7/3) to -log(7/3) on every pair
    assert all(v["abs_delta_mean"] == pytest.approx(dz, abs=1e-4) for v in r.goal_dependence["kinds"].values())
    assert set(r.figures()) == {"decision_entropy_histogram", "goal_dependence"}
    assert "per_example_entropy_nats" not in r.summary()
