"""Inference-time search (hansprobe/measurements/inference.py, hansprobe/search.py): the three answers on
constructed models of known truth, the decoders against brute force, and the fused path against
the model's own forward."""
import itertools

import pytest
import torch

from hansprobe.measurements.inference import measure_inference
from hansprobe.questions.search_recovers import search_verdict
from hansprobe.constructed import RuleModel, goal_signal, wrong_favourite
from hansprobe.objectives import get_objective
from hansprobe.search import _Scorer, beam_search, majority, most_likely, sample, Samples
from hansprobe.tasks.pathstar import PathStar

from helpers import tiny_model, tiny_task

TF = get_objective("teacher-forcing")


def answer(model, task, n=500, seed=0):
    r = measure_inference(model, TF, task.generate(n, 1000 + seed), seed=seed)
    return search_verdict(r.summary()), r


def test_a_model_at_chance_that_ignores_the_goal_searches_no_better_than_a_guesser():
    task = PathStar(2, 5, 50)
    v, r = answer(RuleModel(task, TF, goal_signal(0.0, 0.0, 2)), task)
    assert v["answer"] == "no", v["evidence"]
    passes = [row for row in r.rows if row["family"] == "pass@k"]
    # pass@k follows the uniform guesser's 1 - (1 - 1/d)^k inside its interval
    assert all(row["accuracy_ci"][0] <= row["uniform_accuracy"] <= row["accuracy_ci"][1] for row in passes)


def test_a_planner_needs_no_search():
    task = PathStar(2, 5, 50)
    v, _ = answer(RuleModel(task, TF, goal_signal(4.0, 0.38, 2)), task)
    assert v["answer"] == "not needed", v["evidence"]


def test_a_wrong_favourite_with_more_than_chance_on_the_goal_is_recovered_by_search_not_greedy():
    task = PathStar(5, 5, 50)
    v, r = answer(RuleModel(task, TF, wrong_favourite(0.3, 0.4, 5)), task)
    by = {row["strategy"]: row for row in r.rows}
    assert by["greedy"]["accuracy"] == 0.0 and not by["greedy"]["beats_uniform"]  # the favourite is always wrong
    assert by["pass@8"]["beats_uniform"] and by["pass@8"]["accuracy"] > by["pass@8"]["uniform_accuracy"]
    assert by["vote of 1 at T=1.0"]["beats_uniform"]  # one sample is right 0.3 of the time, a guess 0.2
    assert v["answer"] == "yes" and "pass@8" in v["values"]["beating"], v["evidence"]
    assert v["values"]["gain_over_greedy"] == pytest.approx(by[v["values"]["best"]]["accuracy"])


def test_the_json_contract_and_the_family_wise_level():
    task = PathStar(2, 5, 50)
    _, r = answer(RuleModel(task, TF, goal_signal(0.0, 0.0, 2)), task, n=200)
    s = r.summary()
    m = len(s["rows"])
    assert s["ci_level"] == pytest.approx(1 - 2 * 0.01 / m)
    for row in s["rows"]:
        assert {"accuracy", "accuracy_ci", "uniform_accuracy", "beats_uniform", "exact_match"} <= set(row)
        assert row["beats_uniform"] == (row["accuracy_ci"][0] > row["uniform_accuracy"])
    widths = sorted(row["width"] for row in s["rows"] if row["family"] == "beam")
    assert widths == [2, 4]  # 2, d and 2d at d = 2, each once


def brute_force_best(model, objective, batch):
    """The most likely answer of every graph by enumerating all V^L label sequences."""
    length, v = batch.target.shape[1], batch.task.d_vocab
    seqs = torch.tensor(list(itertools.product(range(v), repeat=length)))  # (V^L, L)
    score = _Scorer(model, objective, batch)
    best = []
    for g in range(len(batch)):
        rows = torch.full((len(seqs),), g)
        ll = sum(score(rows, seqs, i).gather(1, seqs[:, i:i + 1])[:, 0] for i in range(length))
        best.append(seqs[ll.argmax()])
    return torch.stack(best)


def test_a_wide_enough_beam_finds_the_most_likely_answer():
    task = PathStar(2, 3, 6)  # 9 tokens, 3 labels: 729 sequences per graph
    model = tiny_model(task, seed=3)
    b = task.generate(4, 0)
    want = brute_force_best(model, TF, b)
    assert torch.equal(beam_search(model, TF, b, task.d_vocab ** 2), want)


def test_samples_follow_the_model_at_temperature_one_and_sharpen_below_it():
    task = tiny_task(path_len=3, n_nodes=8)
    model = tiny_model(task, seed=1)
    b = task.generate(2, 0)
    hot, cold = sample(model, TF, b, 4000, (1.0, 0.5), torch.rand(2, 8000, 3, generator=torch.Generator().manual_seed(0)))
    logp = _Scorer(model, TF, b)(torch.arange(2), torch.zeros(2, 1, dtype=torch.long), 0)  # label 0's distribution
    freq = torch.stack([torch.bincount(hot.tokens[g, :, 0], minlength=task.d_vocab) for g in range(2)]).float() / 4000
    assert (freq - logp.exp()).abs().max() < 0.03  # ~4 sd of a share from 4,000 draws
    top = logp.argmax(-1)
    assert all((cold.tokens[g, :, 0] == top[g]).float().mean() > (hot.tokens[g, :, 0] == top[g]).float().mean()
               for g in range(2))
    # log-likelihoods are the model's own (temperature 1) whatever temperature drew them
    s = _Scorer(model, TF, b)
    rows = torch.arange(2).repeat_interleave(4000)
    toks = cold.tokens.reshape(-1, 3)
    ll = sum(s(rows, toks, i).gather(1, toks[:, i:i + 1])[:, 0] for i in range(3))
    assert torch.allclose(ll.view(2, 4000), cold.loglik, atol=1e-4)


def test_the_fused_path_scores_as_the_models_own_forward():
    task = tiny_task(path_len=5, n_nodes=20)
    model = tiny_model(task, seed=2)
    b = task.generate(6, 0)
    chosen = torch.randint(0, task.d_vocab, (18, 5))
    rows = torch.arange(6).repeat_interleave(3)
    fused = _Scorer(model, TF, b)
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: x)]):  # a hook: the model's own forward
        plain = _Scorer(model, TF, b)
        for i in range(5):
            want = plain(rows, chosen, i)
            assert torch.allclose(fused(rows, chosen, i), want, atol=1e-5)
            assert torch.allclose(fused(rows, chosen, i, per_graph=3), want, atol=1e-5)


def test_majority_and_best_of_pick_as_they_say():
    t = torch.tensor([[[1, 2], [3, 4], [3, 4], [1, 2]], [[5, 5], [6, 6], [7, 7], [6, 6]]])  # (2, 4, 2)
    assert majority(t).tolist() == [[1, 2], [6, 6]]  # a tie goes to the answer drawn first
    s = Samples(t, torch.tensor([[-3.0, -1.0, -2.0, -0.5], [-1.0, -2.0, -0.1, -5.0]]))
    assert most_likely(s, 2).tolist() == [[3, 4], [5, 5]] and most_likely(s, 4).tolist() == [[1, 2], [7, 7]]


@pytest.mark.parametrize("name", ["teacherless", "reverse"])
def test_every_objective_is_searched_through_its_own_input(name):
    """Teacherless answers from the dummies (its samples need no fed-back prefix); reverse decodes the
    reversed labels: a wide beam still finds the most likely answer of each."""
    obj = get_objective(name)
    task = PathStar(2, 3, 6)
    model = tiny_model(task, seed=4)
    b = task.generate(3, 1)
    assert torch.equal(beam_search(model, obj, b, task.d_vocab ** 2), brute_force_best(model, obj, b))


def test_the_decoded_answers_do_not_depend_on_the_batch_size():
    """--batch-size bounds the rows decoded at once (memory); the draws are taken per graph, so every
    strategy's answers are the same in chunks of one graph as in one chunk of all."""
    from hansprobe.measurements.inference import decode_all

    task = tiny_task(path_len=3, n_nodes=8)
    model = tiny_model(task, seed=2)
    b = task.generate(6, 0)
    whole, one = decode_all(model, TF, b, seed=5, batch_size=1000), decode_all(model, TF, b, seed=5, batch_size=1)
    assert whole.keys() == one.keys()
    assert all(torch.equal(whole[k], one[k]) for k in whole), [k for k in whole if not torch.equal(whole[k], one[k])]
    other = decode_all(model, TF, b, seed=6, batch_size=1000)
    assert any(not torch.equal(whole[k], other[k]) for k in whole if k.startswith(("pass", "vote")))  # the seed matters
