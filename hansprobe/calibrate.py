"""The calibration harness: how often each answer is given over independent graph draws.

Every answer of the report is a statistical decision on one sample of graphs. Here a question is
asked K times of one model, each time on a fresh, independent draw of graphs (seed + k), and the
answers are counted; where the right answer is known (a constructed model, hansprobe/constructed.py;
a shipped checkpoint's expected answers, checkpoints/expected_answers.json) the share of false
answers gets an exact (Clopper-Pearson) interval. docs/calibration.md holds the table that
`analyses/calibration.py` measures with it; the report states each answer's rate from that table
(hansprobe/error_rates.py).

Two kinds of draws, each loading the model once:
- `decision_draws`: the cheap questions (indecipherable, decision computed; on a constructed model
  also the Clever-Hans failure with its lookup part given), from the same functions as the report's
  entropy analysis, on one set of forward passes per draw of max(ns) graphs: the measurement at n
  graphs reads the first n of them, so each n sees K independent samples;
- `report_draws`: any question, through the report's own analyses (report/run.py) on fresh graphs
  of each draw, running only the analyses the answers read (QuestionSpec.needs).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from hansprobe.questions import registry as _questions
from hansprobe.mechanics.results import Result
from hansprobe.measurements.entropy import entropy_from_logprobs
from hansprobe.questions.indecipherable import indecipherable_verdict
from hansprobe.questions.failure import failure_verdict
from hansprobe.questions.decision_computed import decision_verdict
from hansprobe.measurements.goal_dependence import goal_dependence_from_logprobs, goal_dependence_logprobs
from hansprobe.error_rates import rate_ci
from hansprobe.progress import progress_iter
from hansprobe.report.settings import ReportSettings

CHEAP = ("indecipherable", "decision_computed")  # answered from the decision position's distributions alone
DEFAULT_NS = (1000, 2000)  # n = 1,000 and the report's default -n


def draw_seed(seed: int, k: int) -> int:
    """The k-th draw's graph seed: independent streams from one seed (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([seed, 7, k]).generate_state(1)[0])


@dataclass
class AnswerRates(Result):
    """One row of the table: `question` asked of `model` on `draws` independent draws of `n_graphs`
    graphs. counts: answer -> draws. false_answers: the answers that are wrong on this model (empty
    where the truth is not known); false_rate with its exact 95% interval. wording: counts of
    evidence features (e.g. the failure's "ignores the goal")."""

    model: str
    question: str
    n_graphs: int
    draws: int
    counts: dict
    false_answers: list = field(default_factory=list)
    false_count: int = 0
    false_rate: float = 0.0
    false_rate_ci: list = field(default_factory=list)
    seconds: float = 0.0
    source: str = ""  # "constructed" or "checkpoint"
    wording: dict = field(default_factory=dict)

    @classmethod
    def from_answers(cls, model: str, question: str, n_graphs: int, answers: list[str], false: tuple = (),
                     seconds: float = 0.0, source: str = "", wording: dict | None = None) -> "AnswerRates":
        counts = dict(Counter(answers))
        k = sum(counts.get(a, 0) for a in false)
        return cls(model=model, question=question, n_graphs=n_graphs, draws=len(answers), counts=counts,
                   false_answers=list(false), false_count=k, false_rate=k / len(answers) if answers else float("nan"),
                   false_rate_ci=rate_ci(k, len(answers)), seconds=seconds, source=source, wording=wording or {})


def _rows(logps: dict | None, n: int) -> dict | None:
    if logps is None:
        return None
    return {"clean": logps["clean"][:n], "placebo": logps["placebo"][:n],
            "partners": {k: (lp[:n], b[:n]) for k, (lp, b) in logps["partners"].items()}}


@torch.no_grad()
def decision_verdicts(model, objective, batch, seed: int, ns, batch_size: int = 1000, given: dict | None = None) -> dict:
    """{n: {question: verdict}} for the cheap questions on the first n graphs of `batch`, from one set
    of forward passes. `given`: verdicts of other questions to combine with them (a constructed
    model's lookup, known by construction), adding the Clever-Hans failure."""
    from hansprobe.mechanics.forward import decision_distribution

    clean = decision_distribution(model, objective, batch, batch_size)
    logps = goal_dependence_logprobs(model, objective, batch, seed, batch_size, clean_logp=clean)
    out = {}
    for n in ns:
        sub = batch[:n]
        gd = goal_dependence_from_logprobs(objective, sub, _rows(logps, n), seed)
        e = entropy_from_logprobs(clean[:n], objective, sub, seed, gd, describe=False).summary()
        v = {"indecipherable": indecipherable_verdict(e), "decision_computed": decision_verdict(e, None)}
        if given:
            v["clever_hans_failure"] = failure_verdict(objective, {**given, **v}, None, None)
        out[n] = v
    return out


def decision_draws(model, objective, task, ns=DEFAULT_NS, draws: int = 500, seed: int = 0, batch_size: int = 1000,
                   given: dict | None = None, progress: bool | str = False, desc: str = "calibration") -> dict:
    """{(n, question): [verdict per draw]} over `draws` independent draws of max(ns) graphs."""
    ns = sorted(ns)
    out: dict = {}
    for k in progress_iter(range(draws), draws, desc, progress, unit="draw"):
        s = draw_seed(seed, k)
        for n, v in decision_verdicts(model, objective, task.generate(ns[-1], s), s, ns, batch_size, given).items():
            for q, verdict in v.items():
                out.setdefault((n, q), []).append(verdict)
    return out


def report_draws(ck, keys, settings: ReportSettings, draws: int = 5, seed: int = 0, progress: bool | str = False,
                 desc: str = "calibration") -> list[dict]:
    """The verdicts of questions `keys` on `draws` independent draws of settings.n_graphs graphs
    (each draw's first settings.mechanism_graphs for the costly analyses, as in the report), through
    the report's own analyses: only those the answers read are run."""
    from hansprobe.report.run import analysis_context, run_analyses

    decide, names = _questions.answer_needs(keys)
    out = []
    for k in progress_iter(range(draws), draws, desc, progress, unit="draw"):
        s = draw_seed(seed, k)
        st = replace(settings, seed=s)
        ctx = analysis_context(ck, ck.task.generate(st.n_graphs, s), st)
        analyses, _ = run_analyses(ctx, names, figures=False)
        out.append(_questions.decide_some(ck.objective, analyses, decide))
    return out


def _wording(question: str, verdicts: list[dict]) -> dict:
    if question != "clever_hans_failure":
        return {}
    yes = [v for v in verdicts if v["answer"] == "yes"]
    return {"yes, saying it ignores the goal": sum("ignores the goal" in v["evidence"] for v in yes)}


def constructed_rates(names, ns=DEFAULT_NS, draws: int = 500, seed: int = 0, progress: bool | str = False) -> list[AnswerRates]:
    """The cheap questions (and the failure, its lookup part given as yes) on constructed models."""
    from hansprobe.constructed import CONSTRUCTED
    from hansprobe.objectives import get_objective

    tf = get_objective("teacher-forcing")
    rows = []
    for name in names:
        c = CONSTRUCTED[name]
        t0 = time.perf_counter()
        given = {"lookup": {"answer": "yes", "evidence": "given: a constructed model's lookup", "values": {}}}
        got = decision_draws(c.model(tf), tf, c.task(), ns, draws, seed, given=given, progress=progress, desc=name)
        secs = (time.perf_counter() - t0) / len(got)
        for (n, q), verdicts in sorted(got.items()):
            rows.append(AnswerRates.from_answers(name, q, n, [v["answer"] for v in verdicts], c.false.get(q, ()), secs,
                                                 "constructed", _wording(q, verdicts)))
    return rows


SEARCH_GRAPHS = ReportSettings().mechanism_graphs  # the graphs the report's inference-time search decodes


def search_rates(names, n: int = SEARCH_GRAPHS, draws: int = 200, seed: int = 0,
                 progress: bool | str = False) -> list[AnswerRates]:
    """"Can inference-time search recover the decision?" on constructed models (SEARCH_CONSTRUCTED),
    on `draws` independent draws of n graphs each."""
    from hansprobe.measurements.inference import measure_inference
    from hansprobe.questions.search_recovers import search_verdict
    from hansprobe.constructed import SEARCH_CONSTRUCTED
    from hansprobe.objectives import get_objective

    tf = get_objective("teacher-forcing")
    rows = []
    for name in names:
        c = SEARCH_CONSTRUCTED[name]
        model, task, t0 = c.model(tf), c.task(), time.perf_counter()
        answers = []
        for k in progress_iter(range(draws), draws, name, progress, unit="draw"):
            s = draw_seed(seed, k)
            r = measure_inference(model, tf, task.generate(n, s), seed=s)
            answers.append(search_verdict(r.summary())["answer"])
        rows.append(AnswerRates.from_answers(name, "search_recovers", n, answers, c.false["search_recovers"],
                                             (time.perf_counter() - t0) / draws, "search"))
    return rows


def checkpoint_rates(path: str | Path, expected: dict | None, ns=DEFAULT_NS, draws: int = 20, report_questions=(),
                     report_draws_: int = 5, seed: int = 0, settings: ReportSettings = ReportSettings(),
                     progress: bool | str = False) -> list[AnswerRates]:
    """A checkpoint's answers over graph draws, loading it once: the cheap questions on `draws` draws at
    each n in `ns`, `report_questions` on `report_draws_` draws at the report's defaults. `expected`:
    question -> the expected answer (any other counts as false), or None."""
    from hansprobe.checkpoint import load_checkpoint

    path = Path(path)
    ck = load_checkpoint(path, device=settings.device)
    name = path.name
    rows = []
    false = (lambda q: tuple(a for a in _questions.ANSWERS if expected and q in expected and a != expected[q]))
    t0 = time.perf_counter()
    got = decision_draws(ck.model, ck.objective, ck.task, ns, draws, seed, settings.batch_size, progress=progress,
                         desc=f"{name}: decision")
    secs = time.perf_counter() - t0
    for (n, q), verdicts in sorted(got.items()):
        rows.append(AnswerRates.from_answers(name, q, n, [v["answer"] for v in verdicts], false(q), secs / len(got),
                                             "checkpoint"))
    if report_questions and report_draws_:
        t0 = time.perf_counter()
        verdicts = report_draws(ck, report_questions, settings, report_draws_, seed, progress, f"{name}: mechanisms")
        secs = time.perf_counter() - t0
        for q in report_questions:
            vs = [v[q] for v in verdicts]
            rows.append(AnswerRates.from_answers(name, q, settings.n_graphs, [v["answer"] for v in vs], false(q), secs,
                                                 "checkpoint", _wording(q, vs)))
    return rows
