"""Running the report: every registered analysis on each checkpoint (in this process or in worker
processes), every registered question answered with its evidence, and the report so far after each
checkpoint (`build_report`, a generator). Writing it: report/files.py; drawing it: report/html.py.

The report only composes: each question, its rule and its thresholds live beside the analysis that
answers it (hansprobe/questions/registry.py, docs/add-a-question.md).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from hansprobe import error_rates, progress as _progress
from hansprobe.questions import registry as _questions
from hansprobe.storage import jsonable as _jsonable
from hansprobe.errors import CheckpointError, ConfigError, shown
from hansprobe.progress import progress_bar
from hansprobe.report.settings import MIN_GRAPHS, ReportSettings
from hansprobe.tasks.registry import read_task_text

FORMAT = "hansprobe-report"
FORMAT_VERSION = 2  # 2: five questions (clever_hans_failure, lookup, ...), "not learned", notes

# The questions are registered in hansprobe/questions (registry.py), apart from the measurements; these
# are live views of that registry, in page order: the combined failure verdict first.
QUESTIONS = _questions.QUESTIONS
ANSWERS = _questions.ANSWERS


@dataclass
class CheckpointReport:
    name: str
    path: str
    config: dict
    provenance: dict
    training_curve: list
    verdicts: dict  # question key -> {"answer", "summary", "evidence", "values"}
    analyses: dict  # analysis name -> its Result.to_dict(), or {"skipped": reason}
    notes: list = field(default_factory=list)  # where two answers read together need a sentence (questions.register_note)
    figures: dict = field(default_factory=dict, repr=False)  # analysis -> {name: plotly Figure}; not serialised

    def to_dict(self) -> dict:
        # Not dataclasses.asdict: it would deep-copy every plotly figure only to drop them (1.6 s a
        # checkpoint); jsonable builds new dicts and lists anyway.
        return _jsonable({f.name: getattr(self, f.name) for f in fields(self) if f.name != "figures"})


# --- running it --------------------------------------------------------------------------------
def _graphs(settings: ReportSettings, task, n: int):
    if settings.data is not None:
        return read_task_text(settings.data, task, n)
    return task.generate(n, settings.seed)


def _first(batch, n: int):
    return batch if len(batch) <= n else next(iter(batch.split(n)))


def analysis_context(ck, batch, settings: ReportSettings):
    """The one AnalysisContext of a loaded checkpoint and its graphs, for the report and for
    `hansprobe analyse NAME` alike: the costly mechanism analyses take the first
    settings.mechanism_graphs of the same graphs, patching the first settings.patch_pairs."""
    from hansprobe.measurements import AnalysisContext
    from hansprobe.checkpoint import model_from_config

    device = str(next(ck.model.parameters()).device)
    return AnalysisContext(path=ck.path, config=ck.config, model=ck.model, objective=ck.objective, task=ck.task,
                           batch=batch, mechanism_batch=_first(batch, settings.mechanism_graphs),
                           pairs=_first(batch, settings.patch_pairs), seed=settings.seed, batch_size=settings.batch_size,
                           device=device, untrained_model=lambda: model_from_config(ck.config, device)[0],
                           witness=Path(settings.witness) if settings.witness else None)


def measure_checkpoint(path: str | Path, settings: ReportSettings = ReportSettings(), progress=None) -> CheckpointReport:
    """Every analysis on one checkpoint, then the four verdicts. `progress` is a tqdm bar to advance
    (one tick per analysis) or None."""
    from hansprobe.checkpoint import check_batch_memory, load_checkpoint, package_versions

    path = Path(path)
    ck = load_checkpoint(path, device=settings.device)
    check_batch_memory(ck.model, settings.batch_size, settings.device)
    obj = ck.objective
    ctx = analysis_context(ck, _graphs(settings, ck.task, settings.n_graphs), settings)
    ctx.progress = _inner_progress(progress)
    batch, mech, pairs = ctx.batch, ctx.mechanism_batch, ctx.pairs
    analyses, figures = run_analyses(ctx, progress=progress, label=shown(path.name))

    verdicts = _questions.decide_all(obj, analyses)  # every registered question, the combined failure verdict last
    error_rates.attach(verdicts, len(batch))  # each answer's measured false-answer rate (docs/calibration.md)
    notes = _questions.notes_for(obj, analyses, verdicts)  # registered beside the questions (hansprobe/questions/failure.py)
    cfg = ck.config
    provenance = {
        "trained_with": cfg.get("versions", {}), "measured_with": package_versions(), "training_seed": cfg.get("seed"),
        "steps": cfg.get("step"), "graphs": ({"data": settings.data} if settings.data else {"seed": settings.seed}),
        "n_graphs": len(batch), "mechanism_graphs": len(mech), "patch_pairs": len(pairs), "device": settings.device,
    }
    curve = ck.metrics
    figures["training"] = {"training_curve": training_curve_figure(curve, shown(path.name))} if curve else {}
    return CheckpointReport(name=shown(path.name), path=shown(path), config={k: v for k, v in cfg.items() if k != "metrics"},
                            provenance=provenance, training_curve=curve, verdicts=verdicts, analyses=analyses,
                            notes=notes, figures=figures)


def _inner_progress(bar) -> bool | str:
    """What an analysis inside the report shows of its own loops: under the report's plain lines a
    heartbeat (a line at most every progress.HEARTBEAT_S seconds: a long analysis is not silent),
    under its bar at a terminal a bar of its own that goes when done, else nothing."""
    if isinstance(bar, _progress.LineProgress):
        return "heartbeat"
    return bool(bar is not None and not getattr(bar, "disable", True))


def run_analyses(ctx, names=None, progress=None, label: str = "", figures: bool = True) -> tuple[dict, dict]:
    """(summaries, figures) of every registered analysis, in report order, or of those in `names`
    (the others are left out): an analysis that does not apply is {"skipped": reason}. `progress`:
    a tqdm bar ticked once per analysis."""
    from hansprobe.measurements import registered
    from hansprobe.measurements.registry import run_analysis

    analyses, figs = {}, {}
    for spec in registered():
        if names is not None and spec.name not in names:
            continue
        reason = spec.skip(ctx)
        if reason:
            analyses[spec.name] = {"skipped": reason}
        else:
            res = run_analysis(spec, ctx)  # with its options' defaults
            analyses[spec.name] = spec.summarise(res)
            if figures:
                figs[spec.name] = res.figures()
        if progress is not None:
            progress.set_postfix_str(f"{label}: {spec.name}")
            progress.update(1)
    return analyses, figs


def n_analyses() -> int:
    """Progress ticks per checkpoint: one per registered analysis."""
    from hansprobe.measurements import registered

    return len(registered())


def training_curve_figure(rows: list[dict], name: str):
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.22, subplot_titles=("training loss", "held-out accuracy (logged while training)"))
    steps = [r["step"] for r in rows]
    fig.add_scatter(x=steps, y=[r.get("train_loss") for r in rows], mode="lines+markers", name="train loss", row=1, col=1)
    fig.add_scatter(x=steps, y=[r.get("exact_match") for r in rows], mode="lines+markers", name="exact match", row=2, col=1)
    fig.add_scatter(x=steps, y=[r.get("decision_accuracy") for r in rows], mode="lines+markers", name="decision accuracy",
                    row=2, col=1)
    fig.update_xaxes(title_text="training step")
    fig.update_layout(title=f"Training curve of {name} (metrics.jsonl)")
    return fig


def expand_checkpoint_dirs(paths: list[str | Path]) -> list[Path]:
    """Checkpoint directories as given; a directory without config.json that holds checkpoint
    directories (e.g. checkpoints/controls/) stands for those, sorted by name."""
    out = []
    for p in map(Path, paths):
        if p.is_dir() and (p / "sweep.json").is_file() and (p / "runs").is_dir():  # a sweep directory: its runs
            p = p / "runs"
        inner = sorted(c for c in p.iterdir() if (c / "config.json").is_file()) if p.is_dir() and not (p / "config.json").exists() else []
        out += inner or [p]
    if not out:
        raise ConfigError("give at least one checkpoint directory")
    return out


def build_report(paths: list[str | Path], settings: ReportSettings = ReportSettings(),
                 progress: bool | str = False) -> Iterator[dict]:
    """Measure every checkpoint, yielding the report so far after each: {"json": the report.json
    dict (its "pending" lists the checkpoints still to measure), "checkpoints": [CheckpointReport]}.
    The last one yielded is the whole report. Every checkpoint (and a --data file, a witness) is
    checked before anything is measured."""
    from hansprobe import __version__

    paths = expand_checkpoint_dirs(paths)
    names = [Path(p).name for p in paths]
    if len(set(names)) != len(names):
        raise ConfigError(f"two checkpoints share a directory name ({', '.join(names)}); the report labels columns by it")
    from hansprobe.checkpoint import read_config
    from hansprobe.tasks import task_from_dict

    for p in paths:  # fail on a bad checkpoint or a --data file that does not fit before measuring anything
        task = task_from_dict(read_config(p)["task"])
        if settings.data is not None:
            held = len(read_task_text(settings.data, task, settings.n_graphs))
            if held < MIN_GRAPHS:
                raise ConfigError(f"--data {settings.data} holds {held} graph{'s' if held != 1 else ''}; the report needs "
                                  f"at least {MIN_GRAPHS}, as with -n")
    if settings.witness is not None:  # a witness that is no checkpoint, or whose weights do not load, fails here
        from hansprobe.checkpoint import load_checkpoint

        load_checkpoint(settings.witness, device="cpu")
    return _built(paths, names, settings, progress, __version__)


def witnesses_among(paths: list[Path]) -> dict[Path, Path]:
    """For each checkpoint, the first other checkpoint of the same report that could witness its
    capacity on configs alone (the same task, prompt layout and model shape, another objective,
    decoding forwards: analyses/witness.could_witness); the witness analysis measures whether it
    decides."""
    from hansprobe.measurements.witness import could_witness
    from hansprobe.checkpoint import read_config

    from hansprobe.objectives import objective_from_config

    configs = {p: read_config(p) for p in paths}
    out = {}
    for p in paths:
        obj = objective_from_config(configs[p])
        if obj.reverse or obj.teacherless:  # no failure verdict to inform: no witness to measure
            continue
        w = next((q for q in paths if q != p and could_witness(configs[p], configs[q])), None)
        if w is not None:
            out[p] = w
    return out


def _settings_for(paths: list[Path], settings: ReportSettings) -> dict[Path, ReportSettings]:
    """Each checkpoint's settings: the report's, with a witness found among the checkpoints where
    none was given (--witness applies to every checkpoint)."""
    if settings.witness is not None:
        return {p: settings for p in paths}
    found = witnesses_among(paths)
    return {p: replace(settings, witness=str(found[p])) if p in found else settings for p in paths}


def _built(paths, names, settings, progress, version) -> Iterator[dict]:
    bar = None
    if progress:  # a bar at a terminal; otherwise (nohup, CI, a log file) one plain line per analysis
        if progress == "lines":
            print(f"report: {n_analyses() * len(paths)} analyses to run ({n_analyses()} per checkpoint)",
                  file=sys.stderr, flush=True)
        bar = progress_bar(n_analyses() * len(paths), "report", progress, unit="analysis")
    reports, dicts = [], []
    try:
        for report in _measured(paths, settings, bar):
            reports.append(report)
            dicts.append(report.to_dict())  # once each: the report so far is rewritten after every checkpoint
            doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "hansprobe": version,
                   "settings": asdict(settings), "questions": dict(QUESTIONS),
                   "rules": {q.key: q.rule_text() for q in _questions.registered_questions()},
                   "answers": list(ANSWERS), "thresholds": _questions.thresholds(),
                   "checkpoints": list(dicts), "pending": names[len(reports):]}
            yield {"json": _jsonable(doc), "checkpoints": list(reports)}
    finally:
        if bar is not None:
            bar.close()


def _measure_in_worker(path: str, settings: ReportSettings, threads: int) -> CheckpointReport:
    """One checkpoint in a worker process, with its share of the CPU threads."""
    import torch

    torch.set_num_threads(threads)
    return measure_checkpoint(path, settings, None)


def _start_time(pid: int) -> str | None:
    """A process's start time (Linux /proc), so that a reused pid is not taken for the parent."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _die_with(parent: int, started: str | None) -> None:
    """Worker initializer: end this worker when the report's process is gone, however it ended
    (kill -9, the OOM killer): a thread polls it every 0.2 s. The worker's own parent is the fork
    server, not the report's process, so the kernel's parent-death signal cannot say it."""
    import time

    def watch():
        while True:
            time.sleep(0.2)
            try:
                os.kill(parent, 0)
                alive = started is None or _start_time(parent) == started
            except ProcessLookupError:
                alive = False
            except PermissionError:  # exists, owned by another user: a reused pid
                alive = False
            if not alive:
                os._exit(1)
    threading.Thread(target=watch, daemon=True, name="hansprobe-parent-watch").start()


def _worker_context():
    """Where the start method exists (Linux, macOS), workers forked from one server process that
    imported the analyses and TransformerLens once (~10 s a process on a small CPU machine), instead
    of each importing them anew; the server has run no torch work, so nothing half-initialised (a
    thread pool, CUDA) is inherited. Elsewhere, spawned processes."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # Read when the server starts (the first use in this process); a server already running keeps its own list.
    ctx.set_forkserver_preload(["hansprobe.report.run", "hansprobe.measurements", "hansprobe.questions", "hansprobe.checkpoint",
                                "transformer_lens.model_bridge"])
    return ctx


def _kill_workers(pool) -> None:
    """Kill the pool's worker processes at once (the executor has no public way to)."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.kill()


def _measured(paths: list[Path], settings: ReportSettings, bar):
    """Each checkpoint's report, in the order given: in this process one analysis at a time (the
    bar ticks per analysis), or in `settings.workers()` worker processes (it ticks per checkpoint)."""
    jobs = settings.workers(len(paths))
    each = _settings_for(paths, settings)
    if jobs == 1:
        for p in paths:
            yield measure_checkpoint(p, each[p], bar)
        return
    from concurrent.futures import ProcessPoolExecutor

    import torch

    threads = max(1, torch.get_num_threads() // jobs)
    if bar is not None:
        bar.set_postfix_str(f"{len(paths)} checkpoints, {jobs} at a time")
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(jobs, mp_context=_worker_context(), initializer=_die_with,
                               initargs=(os.getpid(), _start_time(os.getpid())))

    def interrupted(signum, frame):  # the process itself: kill the workers and leave at once (decisions.md 68)
        _kill_workers(pool)
        print(_progress.INTERRUPTED, file=sys.stderr)
        _progress.leave(130)

    # As the process, a Ctrl-C ends it from the handler itself: the pool's own shutdown can wait on locks
    # its manager thread holds while a killed worker's pipe blocks it (a hang past 30 s, 1 CI run in 4).
    own = _progress.PROCESS_ENTRY and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupted) if own else None
    try:  # the submissions too: a Ctrl-C while a worker starts (the server imports for ~10 s) must stop it
        futures = [pool.submit(_measure_in_worker, str(p), each[p], threads) for p in paths]
        for p, future in zip(paths, futures):
            try:
                report = future.result()
            except BrokenProcessPool:
                raise CheckpointError(f"the worker process measuring {Path(p).name} died (killed, or out of memory); the "
                                      "checkpoints before it are written; run the report again (--jobs 1 uses less "
                                      "memory)") from None
            if bar is not None:
                bar.set_postfix_str(f"{Path(p).name}: every analysis")
                bar.update(n_analyses())
            yield report
    except BaseException:  # Ctrl-C, an error, the consumer gone: stop now, not after the running checkpoints
        _kill_workers(pool)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        if own:
            signal.signal(signal.SIGINT, previous)
    pool.shutdown()
