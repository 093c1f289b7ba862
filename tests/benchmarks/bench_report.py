"""Wall time and peak memory of the full report: the CLI in a fresh process (import included),
default settings, on one shipped G(2,5) checkpoint or the checkpoints given. Goal (issue 16): all
four shipped checkpoints <= 60 s and one <= 15 s on 2 idle cores, peak <= 1.5 GiB.

`--code DIR` (repeatable) also runs the CLI of another checkout, e.g. the code before a speed change,
side by side and interleaved with this one (`git worktree add /tmp/old COMMIT`):

    python tests/benchmarks/bench_report.py [CKPT ...] [--repeat 2] [--threads 2] [--code /tmp/old]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import resource, sys, time
t = time.perf_counter()
from hansprobe.cli import main
import hansprobe.report.run, hansprobe.checkpoint, transformer_lens.model_bridge  # what every report imports
imported = time.perf_counter() - t
code = main(sys.argv[1:])
print("BENCH", time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, code, imported)
"""


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="*", default=[str(root / "checkpoints" / "pathstar-d2-l5-n50-teacher-forcing")])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--code", type=Path, action="append", default=[],
                    help="another checkout whose hansprobe to run side by side (its repository root)")
    args = ap.parse_args()
    args.checkpoints = [str(Path(c).resolve()) for c in args.checkpoints]  # the runs start in a scratch directory
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    versions = {"this checkout": env}
    for code in args.code:
        if not (code / "hansprobe" / "__init__.py").is_file():
            sys.exit(f"--code {code}: no hansprobe/ package there; give a repository root")
        versions[str(code)] = {**env, "PYTHONPATH": str(code.resolve())}
    print(f"{len(args.checkpoints)} checkpoint(s): {', '.join(Path(c).name for c in args.checkpoints)}; "
          f"{args.threads} thread(s); {os.cpu_count()} CPUs")
    for i in range(args.repeat):
        for name, version_env in versions.items():  # interleaved, so drift on the machine hits all alike
            with tempfile.TemporaryDirectory() as out:
                t = time.perf_counter()
                res = subprocess.run([sys.executable, "-c", CHILD, "report", *args.checkpoints, "--out", out, "--json"],
                                     capture_output=True, text=True, env=version_env, cwd=out)
                wall = time.perf_counter() - t
                bench = [l for l in res.stdout.splitlines() if l.startswith("BENCH")]
                if not bench:
                    sys.exit(f"{name}: the report failed: {res.stderr.strip().splitlines()[-1:]}")
                _, inner, peak, code, imported = bench[0].split()
                size = (Path(out) / "report.html").stat().st_size / 2**20
            print(json.dumps({"code": name, "run": i + 1, "wall_s": round(wall, 1), "in_process_s": round(float(inner), 1),
                              "import_s": round(float(imported), 1), "peak_rss_mib": round(float(peak)), "exit": int(code), "html_mib": round(size, 1)}), flush=True)


if __name__ == "__main__":
    main()
