"""Settings that are also command-line options: each default, range and help text lives once, on
the dataclass field (`option(...)`), and `hansprobe.cli` builds the parser's option groups from the
fields (`dataclasses.fields` + `metadata`), so the parser cannot disagree with the library. Depends
on nothing else in hansprobe."""
from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

ANALYSIS_SEED = 1234  # the graph seed of every analysis and the report; training never uses it
PARSES = ("positive", "count", "positive_float", "non_negative_float", "steps", "flag", "text", "seed",
          "ints", "texts", "heads")


def option(help: str, parse: str, default=MISSING, default_factory=MISSING, flag: str | None = None,
           metavar: str | None = None, choices: tuple | None = None) -> Field:
    """A dataclass field that is a command-line option. parse: how the CLI reads the text
    (PARSES: positive = an integer >= 1, count = >= 0, steps = a comma-separated list of steps,
    flag = present or not, seed = 0..2^63-1, ints / texts = a comma-separated list, heads = layer.head
    pairs like 1.0,1.2). flag: the option's name (default --field-name)."""
    if parse not in PARSES:
        raise ValueError(f"parse must be one of {PARSES}, got {parse!r}")
    md = {"help": help, "parse": parse, "flag": flag, "metavar": metavar, "choices": choices}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=md)
    return field(default=default, metadata=md)


def option_fields(cls) -> list[Field]:
    """The fields of dataclass `cls` that are command-line options, in declaration order."""
    return [f for f in fields(cls) if "parse" in f.metadata]


def default_of(f: Field):
    return f.default_factory() if f.default is MISSING else f.default


@dataclass(frozen=True)
class CommandOption:
    """An option of one analysis's command (`hansprobe heads --ablate 1.0,1.2`, `hansprobe analyse
    heads --ablate ...`), declared on its AnalysisSpec: the analysis reads `ctx.options[dest]`, and
    the report runs it with `default`. parse: as `option`'s. repeat: the flag may be given several
    times (a list of values; `default` when never given). choices: the allowed values."""

    flag: str
    help: str
    parse: str = "text"
    default: Any = None
    choices: tuple | None = None
    repeat: bool = False
    metavar: str | None = None

    def __post_init__(self):
        if self.parse not in PARSES:
            raise ValueError(f"parse must be one of {PARSES}, got {self.parse!r}")

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")
