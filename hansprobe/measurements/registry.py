"""The analysis registry: the report runs every registered analysis in order, stores its summary in
report.json under its name, and draws its figures on the page under its title with its captions.
An analysis is one module that registers an `AnalysisSpec` (docs/add-an-analysis.md).

The report's verdicts are the questions' rules over several analyses (hansprobe/questions/registry.py); a new
analysis adds evidence to report.json and the page without changing them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from hansprobe.errors import ConfigError
from hansprobe.options import CommandOption


FORCED_CACHE_FLOATS = 50_000_000  # 200 MB of float32: 2,000 graphs x 5 labels x a 5,000-token vocabulary


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
    witness: Path | None = None  # a capacity witness checkpoint (hansprobe/measurements/witness.py), or None
    options: dict = field(default_factory=dict)  # the running analysis's own options (AnalysisSpec.options)
    progress: bool | str = False  # a bar / "lines" for one analysis run from the CLI; inside the report, a heartbeat or a bar (report/run.py)
    cache: dict = field(default_factory=dict)  # shared by every copy of this context (run_analysis copies it)

    def forced_logprobs(self):
        """log q(. | forced input) at every label position of `batch`, (B, L, V) on CPU: one forced
        pass that behaviour, entropy and decisions share instead of running it each. None where it
        would take more than FORCED_CACHE_FLOATS (a large vocabulary): each analysis then runs its own."""
        if "forced_logp" not in self.cache:
            b, length = self.batch.target.shape
            if b * length * self.model.cfg.d_vocab > FORCED_CACHE_FLOATS:
                self.cache["forced_logp"] = None
            else:
                from hansprobe.mechanics.forward import label_logprobs

                self.cache["forced_logp"] = label_logprobs(self.model, self.objective, self.batch, self.batch_size,
                                                           progress=self.progress)
        return self.cache["forced_logp"]

    def correctness(self):
        """(forced, free): per graph and label position whether the forced-input argmax and the
        objective's greedy decoding are right, (B, L) bool on CPU (`Objective.correctness`): one
        decoding of `batch` that behaviour and compounding share."""
        if "correctness" not in self.cache:
            from hansprobe.mechanics.forward import chunks

            logp = self.forced_logprobs()
            self.cache["correctness"] = self.objective.correctness(
                self.model, self.batch, chunks=chunks(self.batch, self.batch_size, "decoding", self.progress),
                guesses=None if logp is None else logp.argmax(-1))
        return self.cache["correctness"]


def _always(ctx: AnalysisContext) -> str | None:
    return None


def _summary(result) -> dict:
    return result.summary() if hasattr(result, "summary") else result.to_dict()


@dataclass(frozen=True)
class AnalysisSpec:
    """name: its key in report.json ("analyses") and on the page.  title: the page section's heading.
    measure(ctx) -> Result.  skip(ctx) -> a reason when it does not apply to this checkpoint (then
    report.json holds {"skipped": reason}), else None.  captions: figure name -> what to look for.
    summarise(result) -> the JSON stored in the report (default: `summary()` or `to_dict()`).
    command: the CLI command that is an alias of `hansprobe analyse NAME` (e.g. "heads"), with
    `command_help`; options: its own options (hansprobe.options.CommandOption), read by measure as
    ctx.options[dest] — the report runs it with their defaults.  in_report: False for an analysis
    only its command runs (the logistic-regression probes)."""

    name: str
    title: str
    measure: Callable[[AnalysisContext], Any]
    skip: Callable[[AnalysisContext], str | None] = _always
    captions: dict[str, str] = field(default_factory=dict)
    summarise: Callable[[Any], dict] = _summary
    order: int = 100  # place in the report; the built-in ones use 10..60
    command: str | None = None
    command_help: str = ""
    options: tuple[CommandOption, ...] = ()
    in_report: bool = True


ANALYSES: dict[str, AnalysisSpec] = {}


def register_analysis(spec: AnalysisSpec, replace: bool = False) -> AnalysisSpec:
    """Add an analysis to the report. A name already registered is refused unless `replace`: two
    analyses under one name would overwrite each other's report.json entry."""
    if spec.name in ANALYSES and not replace:
        raise ConfigError(f"analysis {spec.name!r} is already registered; pass replace=True to redefine it")
    ANALYSES[spec.name] = spec
    return spec


def registered() -> list[AnalysisSpec]:
    """The analyses the report runs, in report order."""
    return sorted((s for s in ANALYSES.values() if s.in_report), key=lambda s: s.order)


def option_values(spec: AnalysisSpec, options: dict | None = None) -> dict:
    """spec's options: each given value (None = not given) over its default. An option that is
    not spec's own is a ConfigError that names the analysis it belongs to."""
    own = {o.dest: o for o in spec.options}
    given = {k: v for k, v in (options or {}).items() if v is not None}
    for k in given:
        if k not in own:
            owner = next((s.name for s in ANALYSES.values() if any(o.dest == k for o in s.options)), None)
            raise ConfigError(f"--{k.replace('_', '-')} is an option of {owner or 'no analysis'}, not of {spec.name}; "
                              f"drop it or run that analysis")
    return {d: o.default for d, o in own.items()} | given


def run_analysis(spec: AnalysisSpec, ctx: AnalysisContext, options: dict | None = None):
    """spec.measure on `ctx` with its options (option_values)."""
    return spec.measure(replace(ctx, options=option_values(spec, options)))


def unregister_analysis(name: str) -> None:
    ANALYSES.pop(name, None)
