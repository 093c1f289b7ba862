"""The report's questions: each is a registered object in its own module of this package (its key,
the question as the page asks it, the analyses it reads, its rule and the thresholds the rule uses,
and `decide`), apart from the measurements it reads, so that the report only composes them and the page, the terminal, report.json and
the docs render the rule from the one place it is written (docs/add-a-question.md).

A question's `decide(ctx)` gets the analyses' summaries (report.json's "analyses") and the
checkpoint's objective, and returns a verdict (`verdict()`): {"answer", "summary", "evidence", "values"}. A question that
`combines` others (the Clever-Hans failure) is decided after them and also gets their verdicts.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Callable

from hansprobe.mechanics.results import ci_text  # noqa: F401  (every rule formats its figures with it)
from hansprobe.storage import jsonable

# "before the answer" / "at the answer position": where the plan question locates the decision (hansprobe/questions/plan.py)
ANSWERS = ("yes", "no", "inconclusive", "not applicable", "not learned", "before the answer", "at the answer position",
           "not needed")  # "not needed": inference-time search where greedy decoding already decides (hansprobe/questions/search_recovers.py)


@dataclass
class QuestionContext:
    """What a question's rule reads: the checkpoint's objective, every analysis's summary (an
    analysis that did not apply is {"skipped": reason}) and the verdicts decided before it."""

    objective: Any
    analyses: dict
    verdicts: dict = field(default_factory=dict)
    thresholds: Mapping = field(default_factory=dict)  # the deciding question's own (QuestionSpec.thresholds)

    def analysis(self, name: str) -> dict | None:
        """The summary of `name`, or None where it was skipped or not run."""
        a = self.analyses.get(name)
        return None if a is None or "skipped" in a else a

    def skipped(self, name: str) -> str | None:
        return (self.analyses.get(name) or {}).get("skipped")


@dataclass(frozen=True)
class QuestionSpec:
    """key: its key in report.json ("verdicts") and the page's row.  text: the question as asked.
    needs: the analyses its rule reads (docs).  decide(ctx) -> verdict dict.  rule: one sentence,
    formatted with `thresholds` (str.format), shown beside the question on the page and in the docs.
    thresholds: name -> value, stored in report.json's "thresholds" and handed to `decide` as
    `ctx.thresholds`, so that the value recorded is the value the rule applies.  applied_by: the
    thresholds among them that a measurement applies before the rule reads its result (a search's
    bar, an interval's level): name -> where that measurement records the value it used
    ("analysis.key.key" in its summary); a question whose measurement used another value is refused
    (`check_applied`), so these too are recorded as used.  combines: questions whose
    verdicts it reads (decided after them).  order: the row's place on the page (the combined
    failure verdict leads with 0; the built-in ones use 10..40).  describes: analyses it reads
    only for the evidence's wording (the answer is the same without them: the calibration harness
    leaves them out)."""

    key: str
    text: str
    needs: tuple[str, ...]
    decide: Callable[[QuestionContext], dict]
    rule: str
    thresholds: dict = field(default_factory=dict)
    combines: tuple[str, ...] = ()
    order: int = 100
    describes: tuple[str, ...] = ()
    applied_by: dict = field(default_factory=dict)

    def __post_init__(self):
        stray = set(self.applied_by) - set(self.thresholds)
        if stray:
            from hansprobe.errors import ConfigError

            raise ConfigError(f"question {self.key!r}: applied_by names {', '.join(sorted(stray))}, which are not among its "
                              "thresholds; add them to thresholds")

    def rule_text(self) -> str:
        return self.rule.format(**self.thresholds)

    def check_applied(self, analyses: dict) -> None:
        """Refuse to decide on a summary whose measurement applied another value than this question
        records (report.json's "thresholds" would then say one thing and the answer rest on another)."""
        for name, path in self.applied_by.items():
            analysis, *keys = path.split(".")
            used = analyses.get(analysis)
            for k in keys:
                used = used.get(k) if isinstance(used, dict) else None
            if used is not None and used != self.thresholds[name]:
                from hansprobe.errors import ConfigError

                raise ConfigError(f"the {analysis} analysis applied {'.'.join(keys)} = {used} but question {self.key!r} "
                                  f"records {name} = {self.thresholds[name]}: register the question with the value its "
                                  "measurement uses (register_question(..., replace=True))")

    def decide_in(self, ctx: QuestionContext) -> dict:
        """This question's verdict in `ctx`, its own thresholds handed to its rule."""
        self.check_applied(ctx.analyses)
        return self.decide(replace(ctx, thresholds=MappingProxyType(dict(self.thresholds))))


_QUESTIONS: dict[str, QuestionSpec] = {}


def _add(registry: dict, what: str, spec, replace: bool):
    """Put `spec` under its key, refusing a key already taken unless `replace`."""
    if spec.key in registry and not replace:
        from hansprobe.errors import ConfigError

        raise ConfigError(f"{what} {spec.key!r} is already registered; pass replace=True to redefine it")
    registry[spec.key] = spec
    return spec


def register_question(spec: QuestionSpec, replace: bool = False) -> QuestionSpec:
    """Add a question to the report. A key already registered is refused unless `replace`."""
    return _add(_QUESTIONS, "question", spec, replace)


def unregister_question(key: str) -> None:
    _QUESTIONS.pop(key, None)


def registered_questions() -> list[QuestionSpec]:
    """The questions in page order."""
    return sorted(_QUESTIONS.values(), key=lambda q: q.order)


def decide_all(objective, analyses: dict) -> dict:
    """Every question's verdict, in page order (decided plain questions first, then those that combine them)."""
    verdicts = decide_some(objective, analyses, [q.key for q in registered_questions()])
    return {q.key: verdicts[q.key] for q in registered_questions()}


def answer_needs(keys) -> tuple[list[str], list[str]]:
    """(the questions to decide, the analyses their answers read) for question `keys` and every
    question they combine, in registry order."""
    todo, seen = list(keys), []
    while todo:
        k = todo.pop()
        if k not in _QUESTIONS:
            raise KeyError(f"no question {k!r}: the questions are {', '.join(_QUESTIONS)}")
        if k not in seen:
            seen.append(k)
            todo += list(_QUESTIONS[k].combines)
    qs = [q for q in registered_questions() if q.key in seen]
    analyses = []
    for q in qs:
        analyses += [a for a in q.needs if a not in analyses]
    return [q.key for q in qs], analyses


def decide_some(objective, analyses: dict, keys) -> dict:
    """The verdicts of question `keys` (and the questions they combine) from the analyses' summaries."""
    ctx = QuestionContext(objective, analyses)
    for q in sorted((_QUESTIONS[k] for k in keys), key=lambda q: bool(q.combines)):
        ctx.verdicts[q.key] = q.decide_in(ctx)
    return ctx.verdicts


def registered_thresholds(key: str) -> Mapping:
    """Question `key`'s thresholds as registered: what its rule applies when called outside a report
    (a verdict function's default)."""
    return MappingProxyType(dict(_QUESTIONS[key].thresholds))


def thresholds() -> dict:
    """Every registered question's thresholds (report.json's "thresholds")."""
    out = {}
    for q in registered_questions():
        out.update(q.thresholds)
    return out


class _QuestionTexts(Mapping):
    """key -> question text, live over the registry in page order (report.QUESTIONS)."""

    def __getitem__(self, key):
        return _QUESTIONS[key].text

    def __iter__(self):
        return iter([q.key for q in registered_questions()])

    def __len__(self):
        return len(_QUESTIONS)

    def __repr__(self):
        return repr(dict(self))


QUESTIONS = _QuestionTexts()


# --- notes on answers read together ---------------------------------------------------------------
@dataclass(frozen=True)
class NoteSpec:
    """A sentence the report adds under a checkpoint where two answers could be read as contradicting
    each other. key: its name.  reads: the questions and analyses `applies` looks at (docs).
    applies(ctx) -> bool, on the verdicts decided and the analyses' summaries.  text: the sentence."""

    key: str
    reads: tuple[str, ...]
    applies: Callable[[QuestionContext], bool]
    text: str


_NOTES: dict[str, NoteSpec] = {}


def register_note(spec: NoteSpec, replace: bool = False) -> NoteSpec:
    """Add a note to the report. A key already registered is refused unless `replace`."""
    return _add(_NOTES, "note", spec, replace)


def notes_for(objective, analyses: dict, verdicts: dict) -> list[str]:
    """The registered notes that apply to these verdicts and analyses, in registration order."""
    ctx = QuestionContext(objective, analyses, verdicts)
    return [n.text for n in _NOTES.values() if n.applies(ctx)]


# --- what every rule writes -----------------------------------------------------------------------
SUMMARY_WORDS = 15  # the page's and the terminal's short form: the clause that decided, at most this many words


def summary_clause(evidence: str, max_words: int = SUMMARY_WORDS) -> str:
    """The clause that decided, from evidence written clause first: the text before the first " — ",
    "; " or " (", cut to `max_words` words (with "…" where it was cut)."""
    cut = len(evidence)
    for sep in (" — ", "; ", " ("):
        i = evidence.find(sep)
        if 0 < i < cut:
            cut = i
    words = evidence[:cut].split()
    return " ".join(words[:max_words]) + (" …" if len(words) > max_words else "")


def verdict(answer: str, evidence: str, summary: str | None = None, **values) -> dict:
    """{"answer", "summary" (one clause, <= SUMMARY_WORDS words: what decided), "evidence" (in full), "values"}."""
    if answer not in ANSWERS:
        raise ValueError(f"a verdict answers one of {ANSWERS}, not {answer!r}")
    return {"answer": answer, "summary": summary or summary_clause(evidence), "evidence": evidence,
            "values": jsonable(values)}
