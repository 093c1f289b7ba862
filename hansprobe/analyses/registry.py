"""The analysis registry: the report runs every registered analysis in order, stores its summary in
report.json under its name, and draws its figures on the page under its title with its captions.
An analysis is one module that registers an `AnalysisSpec` (docs/add-an-analysis.md).

The report's verdicts are the report's own rules over several analyses (report.py); a new
analysis adds evidence to report.json and the page without changing them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class AnalysisContext:
    """What an analysis of a checkpoint gets: the model and its task, objective and config, the
    graphs (all of them; the prefix for the costly mechanism analyses; the prefix of patching
    pairs), the seed and batch size, the untrained model of the same config (built on demand) and a
    capacity witness checkpoint when one is given."""

    path: Path
    config: dict
    model: Any
    objective: Any
    task: Any
    batch: Any
    mechanism_batch: Any
    pairs: Any
    seed: int
    batch_size: int
    device: str
    untrained_model: Callable[[], Any] | None = None
    witness: Path | None = None  # a capacity witness checkpoint (analyses/witness.py), or None


def _always(ctx: AnalysisContext) -> str | None:
    return None


def _summary(result) -> dict:
    return result.summary() if hasattr(result, "summary") else result.to_dict()


@dataclass(frozen=True)
class AnalysisSpec:
    """name: its key in report.json ("analyses") and on the page.  title: the page section's heading.
    measure(ctx) -> Result.  skip(ctx) -> a reason when it does not apply to this checkpoint (then
    report.json holds {"skipped": reason}), else None.  captions: figure name -> what to look for.
    summarise(result) -> the JSON stored in the report (default: `summary()` or `to_dict()`)."""

    name: str
    title: str
    measure: Callable[[AnalysisContext], Any]
    skip: Callable[[AnalysisContext], str | None] = _always
    captions: dict[str, str] = field(default_factory=dict)
    summarise: Callable[[Any], dict] = _summary
    order: int = 100  # place in the report; the built-in ones use 10..60


ANALYSES: dict[str, AnalysisSpec] = {}


def register_analysis(spec: AnalysisSpec) -> AnalysisSpec:
    """Add an analysis to the report (idempotent by name)."""
    ANALYSES[spec.name] = spec
    return spec


def registered() -> list[AnalysisSpec]:
    """The analyses in report order."""
    return sorted(ANALYSES.values(), key=lambda s: s.order)


def unregister_analysis(name: str) -> None:
    ANALYSES.pop(name, None)
