import json

import pytest
import torch

from hansprobe.measurements import measure_behaviour
from hansprobe.objectives import get_objective

from helpers import OracleModel, match_rows, tiny_task


def shortcut_model(batch, objective, wrong_decision):
    """Answers every label right given the true prefix, except the decision token on `wrong_decision` rows
    (it names the other candidate): the Clever-Hans pattern — forced accuracy stays 1 after the decision,
    free decoding follows the wrong arm."""
    answers = torch.cat([batch.prefix, objective.labels(batch)], 1)[:, 1:].clone()
    P = batch.prefix.shape[1]
    other = batch.candidates[torch.arange(len(batch)), 1 - batch.goal_arm]
    answers[wrong_decision, P] = other[wrong_decision]

    class Shortcut(OracleModel):
        def forward(self, tokens):
            out = super().forward(tokens)
            # after a wrong decision token, continue down the wrong arm (the edge lookup)
            if tokens.shape[1] > P + 1:
                rows = match_rows(tokens, batch.prefix)
                went_wrong = tokens[:, P + 1] == other[rows]
                wrong_arm = batch.arms[rows, 1 - batch.goal_arm[rows]]
                for t in range(P + 1, tokens.shape[1]):
                    j = t - P  # label index being predicted is j+1 -> arm node j
                    if j < wrong_arm.shape[1]:
                        out[went_wrong, t] = torch.log(torch.nn.functional.one_hot(wrong_arm[went_wrong, j], out.shape[-1]).float() + 1e-9)
            return out

    return Shortcut(answers, batch.task.d_vocab, prefixes=batch.prefix)


def test_perfect_model_scores_one_everywhere():
    obj, b = get_objective("teacher-forcing"), tiny_task().generate(200, 0)
    answers = torch.cat([b.prefix, b.target], 1)[:, 1:]
    r = measure_behaviour(OracleModel(answers, b.task.d_vocab, prefixes=b.prefix), obj, b, batch_size=64)
    assert r.exact_match == 1.0 and r.decision_accuracy == 1.0
    assert r.forced_accuracy == [1.0] * 4 and r.free_accuracy == [1.0] * 4
    assert r.exact_match_ci[0] > 0.98 and r.exact_match_ci[1] == pytest.approx(1.0)


def test_shortcut_model_is_right_when_forced_and_wrong_when_free():
    obj, b = get_objective("teacher-forcing"), tiny_task().generate(400, 1)
    wrong = torch.arange(400) % 2 == 0  # half the decisions wrong
    r = measure_behaviour(shortcut_model(b, obj, wrong), obj, b, batch_size=128)
    assert r.decision_accuracy == 0.5 and r.exact_match == 0.5
    assert r.forced_accuracy[2:] == [1.0, 1.0]  # the shortcut: right given the true previous token
    assert r.free_accuracy[2] == 0.5  # free decoding follows its own wrong decision
    lo, hi = r.decision_accuracy_ci
    assert lo < 0.5 < hi and hi - lo < 0.11
    d = json.loads(r.to_json())
    assert d["chance"] == 0.5 and len(d["forced_accuracy_ci"]) == 4
    assert "per_position_accuracy" in r.figures()
