"""Goal dependence (hansprobe/measurements/goal_dependence.py) on hand-made models whose use of the goal is known:
the signed change of the candidate log-odds when the goal moves decides present / opposite / absent
(decision 38); reversed targets make nothing to move. The verdict built on it: tests/unit/test_verdicts.py."""
import pytest
import torch

from hansprobe.measurements.goal_dependence import DELTA_MIN, measure_goal_dependence
from hansprobe.objectives import get_objective
from hansprobe.tasks import PathStar

from helpers import RuleModel

TF = get_objective("teacher-forcing")


def toward_goal(nats):
    """Logit `nats` on the goal's arm, 0 on the other: toward the goal (> 0) or away from it (< 0)."""
    return lambda s: torch.nn.functional.one_hot(s["goal_arm"], 2).float() * nats


@pytest.mark.parametrize("nats,status", [(2.0, "present"), (-2.0, "opposite"), (0.0, "absent")])
def test_the_signed_change_says_toward_away_or_not_at_all(nats, status):
    task = PathStar(2, 5, 50)
    gd = measure_goal_dependence(RuleModel(task, TF, toward_goal(nats)), TF, task.generate(300, 0), seed=0)
    assert gd.applicable and set(gd.kinds) == {"goal_swap", "arm_rewire"}
    for kind, v in gd.kinds.items():
        assert v["status"] == status, kind
        # the log-odds of the goal's arm over the partner's: +nats before the move, -nats after
        assert v["delta_mean"] == pytest.approx(2 * nats, abs=1e-3)
        assert v["placebo_abs_delta_mean"] == pytest.approx(0.0, abs=1e-3)  # the edges relisted: same answer
        assert v["follow_share"] == (1.0 if nats > 0 else 0.0) and v["anti_follow_share"] == (1.0 if nats < 0 else 0.0)
    assert "goal" in " ".join(gd.figures())


def test_a_change_inside_the_band_is_absent_and_one_just_outside_is_not():
    task = PathStar(2, 5, 50)
    b = task.generate(300, 1)
    small = measure_goal_dependence(RuleModel(task, TF, toward_goal(0.2 * DELTA_MIN)), TF, b, seed=0)
    assert small.kinds["goal_swap"]["status"] == "absent"
    big = measure_goal_dependence(RuleModel(task, TF, toward_goal(2 * DELTA_MIN)), TF, b, seed=0)
    assert big.kinds["goal_swap"]["status"] == "present"


def test_reversed_targets_have_no_decision_to_move():
    task, rev = PathStar(2, 5, 50), get_objective("reverse")
    gd = measure_goal_dependence(RuleModel(task, TF, toward_goal(2.0)), rev, task.generate(20, 0))
    assert not gd.applicable and "reversed targets" in gd.reason
