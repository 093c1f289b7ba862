"""Study (issue 15, part 4): which objective removes the Clever-Hans failure, on G(2,5), G(2,3) and
T(2,2) trees, 3 seeds each: decision accuracy, accuracy among the candidates, exact match and the
report's five verdicts, with 95% CIs.

    python analyses/study_objectives.py --out ../study-runs            # train + measure everything
    python analyses/study_objectives.py --out ../study-runs --jobs 2   # two runs at a time
    python analyses/study_objectives.py --out ../study-runs --gather   # only (re)build the table

Every run is a normal hansprobe run directory (OUT/<task>/<objective>/seed<k>); a finished run is
skipped, an interrupted one continued with `train --resume`, so the script can be stopped and
started again (a session is stopped after 3 hours; 63 runs of ~10 minutes each take several). Each
run is measured by `hansprobe report` on fresh graphs (seed 1234); the table gathers every run's
report.json into OUT/study.json, OUT/study.csv and OUT/study.html (plotly; one point per seed with its
CI). Settings: the shipped references' model (2 layers, d_model 128, 4 heads, batch 256, lr 1e-3)
for STEPS steps, CPU, one thread per run. The reference teacher-forced model had its shortcut by
step 500-750 and the reverse one had solved the task by 750, so 1,500 steps separate those; the
teacherless reference had not learned in 8,000, and what does not learn here is reported as such.
(A trial at d_model 64, batch 64-128 had not learned the shortcut after 1,000-1,750 steps.)
The figures in docs/study-objectives.md come from OUT/study.json (`--markdown` prints that table).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TASKS = {  # name -> task arguments
    "G(2,5)": ["--task", "pathstar", "--degree", "2", "--path-len", "5", "--nodes", "50"],
    "G(2,3)": ["--task", "pathstar", "--degree", "2", "--path-len", "3", "--nodes", "50"],
    "T(2,2)": ["--task", "tree", "--branching", "2", "--depth", "2", "--nodes", "50"],
}
OBJECTIVES = {  # name -> training arguments
    "teacher-forcing": ["--objective", "teacher-forcing"],
    "teacherless": ["--objective", "teacherless"],
    "reverse": ["--objective", "reverse"],
    "partial-teacherless p=0.5": ["--objective", "partial-teacherless", "--teacherless-p", "0.5"],
    "multi-token k=2": ["--objective", "multi-token", "--extra-heads", "2"],
    "structured samples K=2": ["--objective", "teacher-forcing", "--structured-samples", "2"],
    "goal first": ["--objective", "teacher-forcing", "--goal-first"],
}
COST = {"G(2,3)": 1, "T(2,2)": 2, "G(2,5)": 3}  # relative time per run (prompt length): the run order
SEEDS = (0, 1, 2)
STEPS = 1500
MODEL = ["--n-layers", "2", "--d-model", "128", "--n-heads", "4", "--batch-size", "256", "--lr", "1e-3",
         "--eval-every", "250", "--eval-graphs", "500", "--checkpoint-every", "250"]
REPORT = ["-n", "500", "--mechanism-graphs", "200", "--patch-pairs", "50"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def run_dir(out: Path, task: str, objective: str, seed: int) -> Path:
    return out / slug(task) / slug(objective) / f"seed{seed}"


def hansprobe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hansprobe", *args], env=ENV, capture_output=True, text=True)


def finished(run: Path) -> bool:
    try:
        return json.loads((run / "config.json").read_text()).get("step") == STEPS
    except (OSError, json.JSONDecodeError):
        return False


def one(out: Path, task: str, objective: str, seed: int) -> str:
    """Train (or continue) one run, then report on it; returns a log line."""
    run = run_dir(out, task, objective, seed)
    t0 = time.time()
    if not finished(run):
        if (run / "resume.safetensors").is_file():
            proc = hansprobe("train", "--resume", "--out", str(run), "--json")
        else:
            proc = hansprobe("train", *TASKS[task], *OBJECTIVES[objective], *MODEL, "--steps", str(STEPS),
                             "--seed", str(seed), "--out", str(run), "--overwrite", "--json")
        if proc.returncode:
            return f"{task} {objective} seed {seed}: training failed: {proc.stderr.strip().splitlines()[-1:]}"
    rep = run / "report"
    if not (rep / "report.json").is_file():
        proc = hansprobe("report", str(run), *REPORT, "--out", str(rep), "--json")
        if proc.returncode:
            return f"{task} {objective} seed {seed}: report failed: {proc.stderr.strip().splitlines()[-1:]}"
    return f"{task} {objective} seed {seed}: done in {time.time() - t0:.0f} s"


def gather(out: Path) -> list[dict]:
    rows = []
    for task in TASKS:
        for objective in OBJECTIVES:
            for seed in SEEDS:
                run = run_dir(out, task, objective, seed)
                path = run / "report" / "report.json"
                if not path.is_file():
                    rows.append({"task": task, "objective": objective, "seed": seed, "status": "missing"})
                    continue
                c = json.loads(path.read_text())["checkpoints"][0]
                b, e = c["analyses"]["behaviour"], c["analyses"]["entropy"]
                rows.append({
                    "task": task, "objective": objective, "seed": seed, "status": "measured",
                    "steps": c["provenance"]["steps"], "n_graphs": c["provenance"]["n_graphs"],
                    "exact_match": b["exact_match"], "exact_match_ci": b["exact_match_ci"],
                    "decision_accuracy": b["decision_accuracy"], "decision_accuracy_ci": b["decision_accuracy_ci"],
                    "candidate_accuracy": e.get("candidate_accuracy"), "candidate_accuracy_ci": e.get("candidate_accuracy_ci"),
                    "mass_outside_candidates": e.get("mass_outside_candidates"), "chance": b["chance"],
                    **{f"verdict_{k}": v["answer"] for k, v in c["verdicts"].items()},
                })
    return rows


def write_table(out: Path, rows: list[dict]) -> None:
    (out / "study.json").write_text(json.dumps({"steps": STEPS, "model": MODEL, "report": REPORT, "rows": rows},
                                               indent=1, sort_keys=True) + "\n")
    keys = sorted({k for r in rows for k in r})
    with open(out / "study.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    measured = [r for r in rows if r["status"] == "measured"]
    fig = make_subplots(rows=1, cols=len(TASKS), subplot_titles=list(TASKS), shared_yaxes=True)
    for col, task in enumerate(TASKS, 1):
        for metric, name, symbol in (("decision_accuracy", "decision accuracy", "circle"),
                                     ("candidate_accuracy", "accuracy among the candidates", "diamond")):
            rs = [r for r in measured if r["task"] == task and r.get(metric) is not None]
            fig.add_scatter(x=[r["objective"] for r in rs], y=[r[metric] for r in rs], mode="markers", name=name,
                            marker_symbol=symbol, showlegend=col == 1, legendgroup=name,
                            error_y=dict(type="data", symmetric=False,
                                         array=[r[f"{metric}_ci"][1] - r[metric] for r in rs],
                                         arrayminus=[r[metric] - r[f"{metric}_ci"][0] for r in rs]), row=1, col=col)
        fig.add_hline(y=0.5, line_dash="dot", row=1, col=col)
    fig.update_layout(title=f"First decision by objective ({STEPS} steps, 2 layers d_model 128; one point per seed, 95% CI; "
                            "dotted: chance 1/2)", height=520)
    fig.write_html(out / "study.html", include_plotlyjs="cdn")


def across(rs: list[dict], key: str) -> str:
    """Mean over seeds with a t interval across seeds (the seeds are the units; n = 3 makes it wide)."""
    from scipy import stats

    xs = [r[key] for r in rs if r.get(key) is not None]
    if not xs:
        return "n/a"
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return f"{m:.2f} (1 seed)"
    lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=m, scale=stats.sem(xs)) if len(set(xs)) > 1 else (m, m)
    return f"{m:.2f} [{max(0.0, lo):.2f}, {min(1.0, hi):.2f}]"


def markdown(rows: list[dict]) -> str:
    """Per task and objective: mean over seeds and the per-seed values with CIs, and the verdicts."""
    lines = ["| task | objective | seeds | decision accuracy: mean over seeds [95% t CI] | per seed [95% Wilson CI] | "
             "among the candidates: mean over seeds | per seed | exact match per seed | "
             "Clever-Hans failure | lookup | indecipherable | decision computed | plan |", "|" + "---|" * 13]
    for task in TASKS:
        for objective in OBJECTIVES:
            rs = [r for r in rows if r["task"] == task and r["objective"] == objective and r["status"] == "measured"]
            if not rs:
                lines.append(f"| {task} | {objective} | 0 | not measured | | | | | | | | | |")
                continue

            def cell(key):
                return "; ".join(f"{r[key]:.2f} [{r[key + '_ci'][0]:.2f}, {r[key + '_ci'][1]:.2f}]" if r.get(key) is not None
                                 else "n/a" for r in rs)

            def verdicts(key):
                answers = [r[f"verdict_{key}"] for r in rs]
                return ", ".join(f"{a} ×{answers.count(a)}" for a in dict.fromkeys(answers))
            lines.append(f"| {task} | {objective} | {len(rs)} | {across(rs, 'decision_accuracy')} | {cell('decision_accuracy')} | "
                         f"{across(rs, 'candidate_accuracy')} | {cell('candidate_accuracy')} | {cell('exact_match')} | {verdicts('clever_hans_failure')} | {verdicts('lookup')} | "
                         f"{verdicts('indecipherable')} | {verdicts('decision_computed')} | {verdicts('plan_represented')} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--gather", action="store_true", help="only gather the finished runs into the table")
    ap.add_argument("--markdown", action="store_true", help="print the table of OUT/study.json as markdown")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads((args.out / "study.json").read_text())["rows"]))
        return 0
    if not args.gather:
        # Cheapest tasks first, all seeds of one task before the next: a stopped study leaves whole tasks.
        todo = [(t, o, s) for t in sorted(TASKS, key=COST.get) for s in SEEDS for o in OBJECTIVES]
        print(f"study: {len(todo)} runs, {args.jobs} at a time", file=sys.stderr, flush=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            for i, line in enumerate(pool.map(lambda a: one(args.out, *a), todo), 1):
                print(f"study: {i}/{len(todo)} {line}", file=sys.stderr, flush=True)
    rows = gather(args.out)
    write_table(args.out, rows)
    print(f"study: {sum(r['status'] == 'measured' for r in rows)}/{len(rows)} runs measured; wrote {args.out}/study.json, "
          "study.csv, study.html", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
