"""Seconds per analysis of the report, per checkpoint: what `bench_report.py`'s total is made of.
Each checkpoint is loaded and measured as the report does (its settings' defaults, or the options
given), each registered analysis timed with its summary and figures; imports are not counted.

`--code DIR` (repeatable) also times another checkout's analyses, interleaved, in a process of its
own (`git worktree add /tmp/old COMMIT`):

    python tests/benchmarks/bench_analyses.py [CKPT ...] [--mechanism-graphs N] [--threads 2] [--code /tmp/old]
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys, time
from pathlib import Path
from hansprobe.measurements import registered
from hansprobe.measurements.registry import run_analysis
from hansprobe.checkpoint import load_checkpoint
from hansprobe.report.run import ReportSettings, _graphs, analysis_context

settings = ReportSettings(**json.loads(sys.argv[1]))
for path in sys.argv[2:]:
    t = time.perf_counter()
    ck = load_checkpoint(Path(path), device="cpu")
    ctx = analysis_context(ck, _graphs(settings, ck.task, settings.n_graphs), settings)
    row = {"load": time.perf_counter() - t}
    for spec in registered():
        t = time.perf_counter()
        if not spec.skip(ctx):
            res = run_analysis(spec, ctx)
            spec.summarise(res)
            res.figures()
        row[spec.name] = time.perf_counter() - t
    print("BENCH", json.dumps({"checkpoint": Path(path).name, **{k: round(v, 2) for k, v in row.items()},
                               "total": round(sum(row.values()), 2)}), flush=True)
"""


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="*", default=[str(root / "checkpoints" / "pathstar-d2-l5-n50-teacher-forcing")])
    ap.add_argument("--mechanism-graphs", type=int, default=None, help="the report's --mechanism-graphs (default: its own)")
    ap.add_argument("--patch-pairs", type=int, default=None, help="the report's --patch-pairs (default: its own)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--code", type=Path, action="append", default=[],
                    help="another checkout whose hansprobe to time side by side (its repository root)")
    args = ap.parse_args()
    settings = {k: v for k, v in (("mechanism_graphs", args.mechanism_graphs), ("patch_pairs", args.patch_pairs))
                if v is not None}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    versions = {"this checkout": env}
    for code in args.code:
        if not (code / "hansprobe" / "__init__.py").is_file():
            sys.exit(f"--code {code}: no hansprobe/ package there; give a repository root")
        versions[str(code)] = {**env, "PYTHONPATH": str(code.resolve())}
    print(f"{len(args.checkpoints)} checkpoint(s); settings {settings or 'the report defaults'}; {args.threads} thread(s)")
    for ckpt in args.checkpoints:
        for name, version_env in versions.items():  # interleaved per checkpoint, so drift hits all alike
            # from the root directory: `python -c` puts the working directory first on sys.path, which
            # would import this checkout's hansprobe whatever PYTHONPATH says
            res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(settings), str(Path(ckpt).resolve())],
                                 capture_output=True, text=True, env=version_env, cwd="/")
            rows = [line[6:] for line in res.stdout.splitlines() if line.startswith("BENCH ")]
            if res.returncode != 0 or not rows:
                sys.exit(f"{name}: {ckpt} failed: {res.stderr.strip().splitlines()[-1:]}")
            print(json.dumps({"code": name, **json.loads(rows[0])}), flush=True)


if __name__ == "__main__":
    main()
