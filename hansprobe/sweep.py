"""Sweeps: a grid of training runs (tasks × objectives × model sizes × seeds) from a TOML spec, run
here one or K at a time, or written out as one launch script per run plus a Slurm array script, then
gathered into one table (CSV + JSON) and one plotly figure.

    # sweep.toml
    steps = 1500                      # every run's --steps
    seeds = [0, 1, 2]
    [train]                           # training flags shared by every run (the CLI's names, no dashes)
    batch-size = 256
    [[tasks]]                         # each axis: a list of tables; `name` labels it, the rest are flags
    name = "G(2,3)"
    task = "pathstar"
    degree = 2
    path-len = 3
    nodes = 50
    [[objectives]]
    name = "teacher-forcing"
    objective = "teacher-forcing"
    [[models]]                        # optional (default: the train command's defaults)
    name = "2x128"
    n-layers = 2

Every run is an ordinary run directory, OUT/runs/<task>__<objective>__<model>__seed<k> (flat, so
`hansprobe report OUT/runs` reads them all). A finished run (config.json at the sweep's steps) is
skipped and an interrupted one continued with `train --resume`, so a sweep can be stopped and
started again; the table is rebuilt from whatever has finished.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hansprobe.errors import ConfigError, HansprobeError
from hansprobe.validation import read_json_bounded, read_text_bounded

AXES = ("tasks", "objectives", "models")
MAX_RUNS = 1000  # a larger grid is refused before anything is written unless --max-runs allows it
OWNED = ("out", "overwrite", "resume", "json", "steps", "seed", "debug")  # the sweep sets these itself


def _check_text(text: str, where: str) -> None:
    """Every string of a spec may reach a shell script (quoted) or a comment line: control characters
    (a newline would start a new shell line), line separators and invisible format characters (which
    can make a script read otherwise than it runs) are refused."""
    import unicodedata

    bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if bad:
        raise ConfigError(f"{where}: {text!r} holds a control character ({bad[0]!r}); use printable text")


@dataclass(frozen=True)
class Run:
    task: str
    objective: str
    model: str
    seed: int
    args: tuple[str, ...]  # the train command's arguments, without --out

    @property
    def name(self) -> str:
        return "__".join(_slug(x) for x in (self.task, self.objective, self.model)) + f"__seed{self.seed}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in str(text)).strip("-") or "x"


def _flags(table: dict, where: str) -> list[str]:
    out = []
    for key, value in table.items():
        _check_text(str(key), where)
        if isinstance(value, str):
            _check_text(value, f"{where}: {key}")
        if key == "name":
            continue
        if key in OWNED:
            raise ConfigError(f"{where}: {key!r} is set by the sweep itself (steps and seeds at the top, --out by the "
                              "sweep); remove it")
        if isinstance(value, bool):
            if value:
                out.append(f"--{key}")
        elif isinstance(value, (int, float, str)):
            out += [f"--{key}", str(value)]
        else:
            raise ConfigError(f"{where}: {key} = {value!r} is not a number, string or true/false")
    return out


def load_spec(path: str | Path) -> dict:
    path = Path(path)
    try:
        spec = tomllib.loads(read_text_bounded(path, "sweep spec", 1 << 20))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML ({e})") from None
    unknown = set(spec) - {"steps", "seeds", "train", *AXES}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; a sweep has steps, seeds, [train], [[tasks]], "
                          "[[objectives]] and [[models]]")
    steps, seeds = spec.get("steps"), spec.get("seeds", [0])
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"{path}: steps must be a positive integer, got {steps!r}")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                           for s in seeds):
        raise ConfigError(f"{path}: seeds must be a list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: seeds {seeds} repeat a seed: two runs would share one directory; list each seed once")
    for axis in ("tasks", "objectives"):
        if not isinstance(spec.get(axis), list) or not spec[axis]:
            raise ConfigError(f"{path}: give at least one [[{axis}]] table")
    spec.setdefault("models", [{"name": "default"}])
    for axis in AXES:
        for i, table in enumerate(spec[axis]):
            if not isinstance(table, dict) or "name" not in table:
                raise ConfigError(f"{path}: every [[{axis}]] table needs a name (entry {i + 1} has none)")
        names = [t["name"] for t in spec[axis]]
        for name in names:
            _check_text(str(name), f"{path}: [[{axis}]] name")
        if len(set(map(_slug, names))) != len(names):
            raise ConfigError(f"{path}: two [[{axis}]] tables share a name ({', '.join(map(str, names))})")
    return spec


def count_runs(spec: dict) -> int:
    return len(spec["seeds"]) * len(spec["tasks"]) * len(spec["objectives"]) * len(spec["models"])


def check_runs(spec: dict, check_arguments, max_runs: int = MAX_RUNS) -> list[Run]:
    """Refuse a grid larger than `max_runs` (counted before anything is built), then check every run's
    command line with `check_arguments(argv)` (the train parser, from the CLI): a run that would fail
    on its arguments fails here, before anything runs or is written."""
    n = count_runs(spec)
    if n > max_runs:
        raise ConfigError(f"the grid has {n} runs, more than {max_runs}; pass --max-runs {n} if you mean it")
    runs = expand(spec)
    for run in runs:
        try:
            check_arguments(list(run.args))
        except ConfigError as e:
            raise ConfigError(f"run {run.name}: {e}") from None
    return runs


def expand(spec: dict) -> list[Run]:
    """Every run of the grid, seed-major (one seed of everything first: a stopped sweep has a complete
    first seed before it has a second)."""
    shared = _flags(spec.get("train", {}), "[train]") + ["--steps", str(spec["steps"])]
    runs = []
    for seed in spec["seeds"]:
        for t in spec["tasks"]:
            for o in spec["objectives"]:
                for m in spec["models"]:
                    args = ("train", *_flags(t, f"task {t['name']}"), *_flags(o, f"objective {o['name']}"),
                            *_flags(m, f"model {m['name']}"), *shared, "--seed", str(seed))
                    runs.append(Run(str(t["name"]), str(o["name"]), str(m["name"]), seed, args))
    return runs


def finished(run_dir: Path, steps: int) -> bool:
    try:
        cfg = read_json_bounded(run_dir / "config.json", "checkpoint config")
    except HansprobeError:
        return False
    return isinstance(cfg, dict) and cfg.get("step") == steps


def train_command(run: Run, run_dir: Path) -> list[str]:
    """`hansprobe train ...` for a new run, or `train --resume` where an interrupted one left its state."""
    if (run_dir / "resume.safetensors").is_file():  # to the sweep's steps: a longer sweep extends its runs
        return ["train", "--resume", "--out", str(run_dir), "--steps", run.args[run.args.index("--steps") + 1], "--json"]
    return [*run.args, "--out", str(run_dir), "--overwrite", "--json"]


def run_local(spec: dict, out: Path, jobs: int = 1, log=print) -> list[str]:
    """Train every unfinished run here, `jobs` at a time (each a process with one thread per job)."""
    runs = expand(spec)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))}
    t0 = time.perf_counter()

    def one(run: Run) -> str:
        run_dir = out / "runs" / run.name
        if finished(run_dir, spec["steps"]):
            return f"{run.name}: finished before"
        proc = subprocess.run([sys.executable, "-m", "hansprobe", *train_command(run, run_dir)], env=env,
                              capture_output=True, text=True, preexec_fn=_end_with_parent)
        if proc.returncode < 0:
            return f"{run.name}: FAILED (killed by signal {-proc.returncode}; `hansprobe sweep` again resumes it)"
        if proc.returncode:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            return f"{run.name}: FAILED ({last})"
        return f"{run.name}: trained"

    lines = []
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for i, line in enumerate(pool.map(one, runs), 1):
            lines.append(line)
            log(f"sweep: {i}/{len(runs)} {line} ({time.perf_counter() - t0:.0f} s elapsed)")
    return lines


def _end_with_parent() -> None:
    """In the child, before exec: be sent SIGTERM when the sweep process dies (Linux), so that a
    killed sweep leaves no orphan training run holding its lock."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child may outlive a killed sweep
        pass


def emit_slurm(spec: dict, out: Path, spec_path: Path) -> Path:
    """One launch script per run (OUT/launch/<run>.sh: train or resume, then exit) and a Slurm array
    script OUT/sweep.slurm whose task i runs the i-th of them. Nothing is run. The launch directory
    is written beside and switched in whole: a failure leaves the old one (or none), never a part.
    Every value in a script is quoted for the shell (and a spec's strings hold no control characters)."""
    import shutil
    import tempfile

    runs = expand(spec)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".launch-*"):  # what a killed earlier emit left
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".launch-", dir=out))
    staging.chmod(0o755)
    try:
        slurm_text = _write_launch(runs, staging, out, spec, spec_path)
        launch, old = out / "launch", out / f".launch-old-{os.getpid()}"
        if launch.exists():
            os.replace(launch, old)
        os.replace(staging, launch)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (out / "runs").mkdir(exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    slurm = out / "sweep.slurm"
    tmp = out / ".sweep.slurm.tmp"
    tmp.write_text(slurm_text)
    os.replace(tmp, slurm)
    return slurm


def _write_launch(runs: list[Run], launch: Path, out: Path, spec: dict, spec_path: Path) -> str:
    """The launch scripts into `launch`, runs.txt beside them; returns the Slurm array script's text."""
    names = []
    for run in runs:
        run_dir = (out / "runs" / run.name).resolve()
        new = " ".join(shlex.quote(a) for a in [*run.args, "--out", str(run_dir), "--overwrite", "--json"])
        about = " / ".join(shlex.quote(str(x)) for x in (run.task, run.objective, run.model, f"seed {run.seed}"))
        _check_text(f"{about} {spec_path}", "a launch script's comment")
        script = (f"#!/usr/bin/env bash\n# {about} (from {shlex.quote(str(spec_path))})\nset -euo pipefail\n"
                  f"if [ -f {shlex.quote(str(run_dir / 'resume.safetensors'))} ]; then\n"
                  f"  exec python -m hansprobe train --resume --out {shlex.quote(str(run_dir))} --steps {spec['steps']} --json\n"
                  f"fi\nexec python -m hansprobe {new}\n")
        path = launch / f"{run.name}.sh"
        path.write_text(script)
        path.chmod(0o755)
        names.append(path.name)
    (launch / "runs.txt").write_text("".join(n + "\n" for n in names))
    return (
        "#!/usr/bin/env bash\n"
        f"#SBATCH --job-name=hansprobe-sweep\n#SBATCH --array=0-{len(names) - 1}\n"
        "#SBATCH --cpus-per-task=2\n#SBATCH --time=12:00:00\n"
        f"#SBATCH --output={shlex.quote(str((out / 'logs').resolve()) + '/%A_%a.log')}\n"
        "# Submit with: sbatch sweep.slurm (from a shell where `python -m hansprobe` works). A run that a\n"
        "# time limit stops is continued by submitting again: finished runs only re-check their config.\n"
        "set -euo pipefail\n"
        f"cd {shlex.quote(str(out.resolve()))}\n"
        "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}\n"
        "script=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" launch/runs.txt)\n"
        "exec bash \"launch/$script\"\n")


def gather(spec: dict, out: Path) -> list[dict]:
    """Every run's final evaluation (config.json "metrics") with Wilson CIs; unfinished runs listed
    as such. Writes OUT/sweep.csv, OUT/sweep.json and OUT/sweep.html."""
    import csv

    from hansprobe.mechanics.results import wilson_ci

    rows = []
    for run in expand(spec):
        run_dir = out / "runs" / run.name
        row = {"run": run.name, "task": run.task, "objective": run.objective, "model": run.model, "seed": run.seed}
        try:
            cfg = read_json_bounded(run_dir / "config.json", "checkpoint config")
        except HansprobeError:
            cfg = None
        if not isinstance(cfg, dict):
            rows.append({**row, "status": "not started"})
            continue
        m, n = cfg.get("metrics") or {}, (cfg.get("metrics") or {}).get("eval_graphs")
        row["status"] = "finished" if cfg.get("step") == spec["steps"] else f"at step {cfg.get('step')}"
        row["step"] = m.get("step", cfg.get("step"))  # the step of the evaluation the figures come from
        for key in ("exact_match", "decision_accuracy"):
            if key in m and n:
                row[key], row[f"{key}_ci"] = m[key], list(wilson_ci(round(m[key] * n), n))
        row["eval_graphs"] = n
        rows.append(row)
    (out / "sweep.json").write_text(json.dumps({"steps": spec["steps"], "rows": rows}, indent=1, sort_keys=True) + "\n")
    keys = ["run", "task", "objective", "model", "seed", "status", "step", "eval_graphs", "exact_match", "exact_match_ci",
            "decision_accuracy", "decision_accuracy_ci"]
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    figure(rows).write_html(out / "sweep.html", include_plotlyjs=True)
    return rows


def figure(rows: list[dict]):
    """Exact match and decision accuracy per objective, one panel per task, one point per seed and
    model with its 95% CI."""
    from plotly.subplots import make_subplots

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig = make_subplots(rows=len(tasks), cols=1, subplot_titles=tasks, vertical_spacing=0.25 / max(1, len(tasks)))
    for i, task in enumerate(tasks, 1):
        for key, symbol in (("decision_accuracy", "circle"), ("exact_match", "diamond")):
            rs = [r for r in rows if r["task"] == task and key in r]
            fig.add_scatter(x=[f"{r['objective']} ({r['model']})" for r in rs], y=[r[key] for r in rs], mode="markers",
                            name=key.replace("_", " "), legendgroup=key, showlegend=i == 1, marker_symbol=symbol,
                            text=[f"seed {r['seed']}" for r in rs],
                            error_y=dict(type="data", symmetric=False, array=[r[f"{key}_ci"][1] - r[key] for r in rs],
                                         arrayminus=[r[key] - r[f"{key}_ci"][0] for r in rs]), row=i, col=1)
        fig.update_yaxes(range=[-0.02, 1.02], row=i, col=1)
    fig.update_layout(height=320 * len(tasks) + 120, title="Sweep: final held-out accuracy per run (95% Wilson CIs)")
    return fig
