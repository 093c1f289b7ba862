"""Study (issue 38, parts 3 and 4): does the supervision that teacher forcing leaves grow with the
number of backward hops, and do placeholders (teacherless) restore learning at a depth that can plan?

    python analyses/study_supervision.py run [--group hops|teacherless] [--minutes M] [--root DIR]
    python analyses/study_supervision.py gather     # analyses/study_supervision_results.json
    python analyses/study_supervision.py render     # the tables of docs/study-supervision.md + its figure

**hops**: G(2, l) for l = 3, 4, 5, 6 (l - 2 = 1 to 4 backward hops from the goal to r1) under
teacher forcing, `decision-only` (the loss on r1 alone, with the start: the supervision teacher
forcing leaves once the lookup fits the later tokens) and reverse (a remedy that works: its r1 is one
lookup from r2), seeds 0 and 1, at the capacity witness's shape (4 layers, d_model 128, 4 heads, batch
256, lr 1e-3, 100 warmup steps, cosine to 0.1x over HORIZON steps). Steps to learn r1: the first
evaluation (every 100 steps, 1,000 held-out graphs, greedy decoding) whose decision accuracy has an
exact 95% CI with its lower end >= 0.9; a run that gets there stops at the end of that chunk, one
that does not is trained to HORIZON and reported as "not within HORIZON steps".

**teacherless**: G(2,5) teacherless at the same shape, 6,000 steps, seeds 0 and 1, with snapshots for
the per-position loss dynamics (`hansprobe dynamics RUN`), never stopped early.

Budget (stated before the runs, issue 38): at most 10 CPU-hours for both groups. Every run is a
normal hansprobe run directory under --root, trained in chunks of CHUNK steps with `train --until`
and continued with `train --resume` (bit-identical on CPU), one thread each, so the script can be
stopped at any moment and started again in a later session; after each chunk the results file is
rewritten, so what was measured is kept even when the run directories are not. Run the two groups as
two processes, one thread each.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from scipy import stats

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "study_supervision_results.json"
FIGURE = HERE / "study_supervision.html"
MODEL = ["--n-layers", "4", "--d-model", "128", "--n-heads", "4", "--batch-size", "256", "--lr", "1e-3"]
HORIZON, CHUNK, LEARNED_LO = 4000, 500, 0.9
TEACHERLESS_STEPS = 6000
LENGTHS, SEEDS = (3, 4, 5, 6), (0, 1)
HOPS_OBJECTIVES = ("teacher-forcing", "decision-only", "reverse")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def star(l: int) -> list[str]:
    return ["--task", "pathstar", "--degree", "2", "--path-len", str(l), "--nodes", "50"]


def runs() -> dict[str, dict]:
    """name -> {group, l, objective, seed, args, steps, stop_when_learned}, in the order they run:
    seed 0 of every cell before seed 1, short paths first (cheap and most informative first)."""
    out = {}
    for seed in SEEDS:
        for l in LENGTHS:
            for obj in HOPS_OBJECTIVES:
                out[f"hops-l{l}-{obj}-s{seed}"] = dict(
                    group="hops", l=l, objective=obj, seed=seed, steps=HORIZON, stop_when_learned=True,
                    args=[*star(l), "--objective", obj, *MODEL, "--steps", str(HORIZON), "--eval-every", "100",
                          "--checkpoint-every", "100", "--seed", str(seed)])
        out[f"teacherless-l5-s{seed}"] = dict(
            group="teacherless", l=5, objective="teacherless", seed=seed, steps=TEACHERLESS_STEPS,
            stop_when_learned=False,
            args=[*star(5), "--objective", "teacherless", *MODEL, "--steps", str(TEACHERLESS_STEPS),
                  "--eval-every", "250", "--checkpoint-every", "250",
                  "--snapshot-at", "100,250,500,1000,1500,2000,3000,4000,5000,6000", "--seed", str(seed)])
    return out


def exact_ci(k: int, n: int) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(method="exact")
    return float(ci.low), float(ci.high)


def read_rows(run: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except OSError:
        return []


def curve(rows: list[dict]) -> list[dict]:
    """Each logged evaluation: step, decision accuracy with its exact CI, per-position forced accuracy, loss."""
    out = []
    for r in rows:
        n = int(r["eval_graphs"])
        k = round(r["decision_accuracy"] * n)
        lo, hi = exact_ci(k, n)
        out.append({"step": r["step"], "decision_accuracy": r["decision_accuracy"], "ci": [lo, hi], "n": n,
                    "exact_match": r.get("exact_match"), "forced_accuracy": r.get("forced_accuracy"),
                    "train_loss": r.get("train_loss"), "elapsed_s": r.get("elapsed_s")})
    return out


def learned_at(points: list[dict]) -> int | None:
    return next((p["step"] for p in points if p["ci"][0] >= LEARNED_LO), None)


def state(root: Path, name: str, spec: dict) -> dict:
    run = root / name
    try:
        step = int(json.loads((run / "config.json").read_text()).get("step") or 0)
    except (OSError, ValueError):
        step = 0
    points = curve(read_rows(run))
    at = learned_at(points)
    done = step >= spec["steps"] or (spec["stop_when_learned"] and at is not None)
    return {"name": name, **{k: v for k, v in spec.items() if k != "args"}, "hops": spec["l"] - 2,
            "steps_trained": step, "learned_at": at, "done": done, "curve": points,
            "train_s": points[-1]["elapsed_s"] if points else None, "command": ["hansprobe", "train", *spec["args"]]}


def gather(root: Path) -> dict:
    """Merge what the run directories hold into the results file (runs absent here keep their record)."""
    old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": {}}
    recs = dict(old.get("runs", {}))
    for name, spec in runs().items():
        if (root / name / "metrics.jsonl").is_file():
            new = state(root, name, spec)
            if new["steps_trained"] >= recs.get(name, {}).get("steps_trained", 0):
                recs[name] = new
    result = {"settings": {"horizon": HORIZON, "chunk": CHUNK, "learned": f"exact 95% CI lower end >= {LEARNED_LO}",
                           "model": MODEL, "teacherless_steps": TEACHERLESS_STEPS, "eval_graphs": 1000},
              "runs": {n: recs[n] for n in runs() if n in recs}}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(RESULTS)
    return result


def train_chunk(root: Path, name: str, spec: dict, until: int) -> None:
    run = root / name
    cmd = (["train", "--resume", "--out", str(run)] if (run / "resume.safetensors").is_file()
           else ["train", *spec["args"], "--out", str(run), "--overwrite"])
    subprocess.run([sys.executable, "-m", "hansprobe", *cmd, "--until", str(until)], env=ENV, check=True)


def run(root: Path, group: str | None, minutes: float) -> None:
    t0 = time.time()
    for name, spec in runs().items():
        if group and spec["group"] != group:
            continue
        while True:
            st = state(root, name, spec)
            if st["done"]:
                break
            if (time.time() - t0) / 60 > minutes:
                print(f"study: {minutes:g} minutes spent; continue later with the same command", file=sys.stderr)
                return
            until = min(spec["steps"], (st["steps_trained"] // CHUNK + 1) * CHUNK)
            print(f"study: {name}: steps {st['steps_trained'] + 1}..{until} of {spec['steps']}", file=sys.stderr, flush=True)
            train_chunk(root, name, spec, until)
            gather(root)
        print(f"study: {name}: done (learned at {st['learned_at']})", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("run", "gather", "render"))
    ap.add_argument("--root", type=Path, default=Path("runs/supervision"))
    ap.add_argument("--group", choices=("hops", "teacherless"))
    ap.add_argument("--minutes", type=float, default=float("inf"), help="start no chunk after this many minutes")
    args = ap.parse_args()
    if args.action == "run":
        run(args.root, args.group, args.minutes)
    elif args.action == "gather":
        gather(args.root)
    else:
        from study_supervision_render import render

        render(json.loads(RESULTS.read_text()))


if __name__ == "__main__":
    main()
