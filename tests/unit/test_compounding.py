"""Error compounding (hansprobe/measurements/compounding.py): where wrong answers first go wrong, against what
independent per-position errors would give, on hand-made correctness and on a shipped failure."""

import pytest
import torch

from hansprobe.measurements.compounding import measure_compounding
from hansprobe.objectives import get_objective
from helpers import REPO

TF = get_objective("teacher-forcing")
FAILURE = REPO / "checkpoints" / "pathstar-d2-l5-n50-teacher-forcing"


def test_a_clever_hans_failure_errs_only_at_the_decision_and_nothing_compounds():
    g = torch.Generator().manual_seed(0)
    n, length = 400, 5
    right = torch.rand(n, generator=g) < 0.5  # the decision, a coin
    forced = torch.ones(n, length, dtype=torch.bool)
    forced[:, 1] = right
    free = forced.clone()
    free[:, 1:4] = right[:, None]  # a wrong decision walks down the wrong arm: r2, r3 wrong too, the goal right
    r = measure_compounding(TF, forced, free)
    assert r.wrong == int((~right).sum()) and r.first_error_counts[1] == r.wrong
    assert r.first_error_at_decision_share == 1.0 and r.first_error_at_decision_ci[0] > 0.98
    assert r.forced_error[2:] == [0.0, 0.0, 0.0]
    assert r.independent_exact_match == pytest.approx(r.exact_match)  # one error, nothing to compound
    assert r.errors_after_first == 2.0


def test_snowballing_errors_start_anywhere_and_exact_match_falls_below_the_independent_product():
    """Execution errors: each position wrong with rate 0.1 given a true prefix, and after a first
    error every later token is wrong (the prefix is off the graph)."""
    g = torch.Generator().manual_seed(1)
    n, length = 2000, 5
    forced = torch.rand(n, length, generator=g) > 0.1
    free = forced.cumprod(1).bool()  # right only while every earlier token was
    r = measure_compounding(TF, forced, free)
    assert r.first_error_at_decision_share < 0.5
    assert sum(r.first_error_counts) == r.wrong
    assert r.independent_exact_match == pytest.approx(0.9 ** 5, abs=0.03)
    assert r.free_error[4] > r.forced_error[4] + 0.2  # errors compound along the free decoding


def test_no_wrong_answer_leaves_the_share_undefined():
    ok = torch.ones(10, 5, dtype=torch.bool)
    r = measure_compounding(TF, ok, ok)
    assert r.wrong == 0 and r.first_error_at_decision_share is None and "nothing to compound" in r.line()


def test_the_shipped_teacher_forced_failure_fails_at_the_decision_only():
    if not (FAILURE / "config.json").is_file():
        pytest.skip("the reference failure is not shipped in this clone")
    from hansprobe.checkpoint import load

    model, task, obj = load(FAILURE)
    forced, free = obj.correctness(model, task.generate(400, 7))
    r = measure_compounding(obj, forced, free)
    assert r.wrong > 100  # at chance: about half the answers are wrong
    assert r.first_error_at_decision_ci[0] > 0.95 and max(r.forced_error[2:]) < 0.02
    assert "wrong answers first err at the decision token r1" in r.line()
