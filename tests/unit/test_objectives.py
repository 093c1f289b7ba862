import pytest
import torch

from hansprobe.errors import ConfigError
from hansprobe.objectives import OBJECTIVES, get_objective

from helpers import OracleModel, tiny_task


def oracle_for(objective, batch, p=1.0):
    """Answers the objective's labels at the label positions (and the true next token elsewhere)."""
    full = torch.cat([batch.prefix, objective.labels(batch)], 1)  # (B, P+L)
    return OracleModel(full[:, 1:], batch.task.d_vocab, p)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_inputs_and_labels_follow_the_design_table(name):
    obj = get_objective(name)
    b = tiny_task().generate(16, 0)
    P, L = b.prefix.shape[1], b.target.shape[1]
    x, y = obj.inputs(b), obj.labels(b)
    assert x.shape == (16, P + L - 1) and y.shape == (16, L)
    assert torch.equal(x[:, :P], b.prefix)
    assert torch.equal(y, b.target.flip(1) if "reverse" in name else b.target)
    if obj.teacherless:  # partial-teacherless evaluates on the true prefix (its masks are for training)
        assert (x[:, P:] == b.task.dummy).all()
    else:
        assert torch.equal(x[:, P:], y[:, :-1])
    assert obj.label_slice(b) == slice(P - 1, P + L - 1)
    k = obj.decision_index(L)
    assert torch.equal(y[:, k], b.candidates[torch.arange(16), b.goal_arm])


@pytest.mark.parametrize("name", OBJECTIVES)
def test_label_names_say_which_path_token_each_label_holds(name):
    """Figures of reversed labels name the tokens (r4 first), not the label positions."""
    obj = get_objective(name)
    b = tiny_task().generate(8, 0)
    names = obj.label_names(b.target.shape[1])
    assert sorted(names) == [f"r{i}" for i in range(b.target.shape[1])]
    for i, n in enumerate(names):
        assert torch.equal(obj.labels(b)[:, i], b.target[:, int(n[1:])])


@pytest.mark.parametrize("name", OBJECTIVES)
def test_greedy_decoding_recovers_what_an_oracle_model_predicts(name):
    obj = get_objective(name)
    b = tiny_task().generate(32, 1)
    assert torch.equal(obj.decode(oracle_for(obj, b, p=0.6), b), obj.labels(b))
    # forced logits score exactly the label positions
    assert torch.equal(obj.forced_logits(oracle_for(obj, b), b).argmax(-1), obj.labels(b))


def test_teacher_forced_decoding_feeds_back_its_own_predictions():
    obj = get_objective("teacher-forcing")
    b = tiny_task().generate(8, 2)
    full = torch.cat([b.prefix, b.target], 1)[:, 1:].clone()
    P = b.prefix.shape[1]
    full[:, P - 1 + 1] = b.task.pipe  # the model answers a wrong token at the decision position
    pred = obj.decode(OracleModel(full, b.task.d_vocab), b)
    assert (pred[:, 1] == b.task.pipe).all() and torch.equal(pred[:, 2:], b.target[:, 2:])


def test_loss_is_cross_entropy_on_the_target_positions_only():
    obj = get_objective("teacher-forcing")
    b = tiny_task().generate(8, 3)
    logits = oracle_for(obj, b, p=0.9)(obj.inputs(b))
    ref = obj.loss(logits, b)
    assert torch.isclose(ref, -torch.log(torch.tensor(0.9)), atol=1e-5)
    logits[:, : b.prefix.shape[1] - 1] = torch.randn_like(logits[:, : b.prefix.shape[1] - 1])  # prefix positions
    assert torch.equal(obj.loss(logits, b), ref)


def test_unknown_objective_lists_the_valid_ones_and_aliases_work():
    with pytest.raises(ConfigError, match="valid objectives: teacher-forcing, teacherless, reverse, reverse-teacherless"):
        get_objective("teacher_forcing")
    assert get_objective("reverse+teacherless").name == "reverse-teacherless"


@pytest.mark.parametrize("name", ["teacher-forcing", "reverse", "partial-teacherless", "multi-token"])
def test_fixed_point_decoding_equals_token_by_token_greedy_decoding(name):
    """On a random model (predictions change from token to token), the fixed-point decoder gives
    exactly what feeding back one token at a time gives."""
    from helpers import tiny_model

    obj, task = get_objective(name), tiny_task(3, 6, 30)
    batch = task.generate(200, 4)
    model = tiny_model(task, seed=5)
    seq = batch.prefix
    with torch.no_grad():
        for _ in range(batch.target.shape[1]):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    slow = seq[:, batch.prefix.shape[1]:]
    assert torch.equal(obj.decode(model, batch), slow)
    assert (slow != obj.forced_logits(model, batch).argmax(-1)).any()  # the feedback matters on this model


@pytest.mark.parametrize("name", ["teacher-forcing", "reverse", "multi-token"])
def test_decoding_skips_the_rows_right_on_the_true_prefix_and_still_equals_token_by_token(name):
    """Rows whose forced argmax is the answer need no decoding pass (their input would be the forced
    one again); the others are decoded as before. A model that is an oracle on even rows and random
    on odd ones: the decoder equals feeding back one token at a time, and feeds only odd rows."""
    from helpers import match_rows, tiny_model

    obj, task = get_objective(name), tiny_task(3, 6, 30)
    batch = task.generate(200, 4)
    full = torch.cat([batch.prefix, obj.labels(batch)], 1)
    oracle, rand = OracleModel(full[:, 1:], task.d_vocab, prefixes=batch.prefix), tiny_model(task, seed=5)
    fed = []

    class Mixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(()))

        def forward(self, tokens):
            rows = match_rows(tokens, batch.prefix)
            fed.append(rows)
            out = rand(tokens).log_softmax(-1)
            even = rows % 2 == 0
            out[even] = oracle(tokens)[even]
            return out

    model = Mixed()
    seq = batch.prefix
    with torch.no_grad():
        for _ in range(batch.target.shape[1]):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    slow = seq[:, batch.prefix.shape[1]:]
    fed.clear()
    pred = obj.decode(model, batch)
    assert torch.equal(pred, slow)
    assert torch.equal(pred[::2], obj.labels(batch)[::2])
    assert all((rows % 2 == 1).all() for rows in fed[1:])  # after the forced pass, only the odd rows


def test_decision_only_scores_the_start_and_the_decision_and_nothing_else():
    """The loss of `decision-only` moves with the logits of r0 and r1 only: a wrong answer at any
    later label costs nothing, where teacher forcing pays for it."""
    b = tiny_task(path_len=5).generate(16, 3)
    only, tf = get_objective("decision-only"), get_objective("teacher-forcing")
    assert only.scored_indices(5) == [0, 1] and tf.scored_indices(5) == list(range(5))
    full = torch.cat([b.prefix, b.target], 1)[:, 1:].clone()
    right = OracleModel(full, b.task.d_vocab, 0.9)(only.inputs(b))
    wrong_later = full.clone()
    wrong_later[:, b.prefix.shape[1] + 2] = b.task.pipe  # label 3 (r3) answered wrong
    later = OracleModel(wrong_later, b.task.d_vocab, 0.9)(only.inputs(b))
    assert torch.allclose(only.loss(right, b), only.loss(later, b)) and tf.loss(later, b) > tf.loss(right, b) + 0.1
    wrong_decision = full.clone()
    wrong_decision[:, b.prefix.shape[1]] = b.task.pipe  # label 1 (the decision) answered wrong
    assert only.loss(OracleModel(wrong_decision, b.task.d_vocab, 0.9)(only.inputs(b)), b) > only.loss(right, b) + 0.1


def test_an_objective_spec_refuses_an_unknown_scored_set():
    from hansprobe.objectives import ObjectiveSpec

    with pytest.raises(ConfigError, match="scored must be one of all, decision"):
        ObjectiveSpec("toy", "a toy", scored="r2")
