"""Wall time and peak memory of the full report on one shipped G(2,5) checkpoint: the CLI in a fresh
process (import included), default settings (1,000 graphs, 200 patching pairs). Goal: <= 60 s on 2 CPU
cores, peak <= 2 GiB.

    python tests/benchmarks/bench_report.py [CKPT ...] [--repeat 2] [--threads 2]
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
code = main(sys.argv[1:])
print("BENCH", time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, code)
"""


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="*", default=[str(root / "checkpoints" / "pathstar-d2-l5-n50-teacher-forcing")])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(f"{len(args.checkpoints)} checkpoint(s): {', '.join(Path(c).name for c in args.checkpoints)}; "
          f"{args.threads} thread(s); {os.cpu_count()} CPUs")
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", CHILD, "report", *args.checkpoints, "--out", out, "--json"],
                                 capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t
            line = next(l for l in res.stdout.splitlines() if l.startswith("BENCH"))
            _, inner, peak, code = line.split()
            size = (Path(out) / "report.html").stat().st_size / 2**20
        print(json.dumps({"run": i + 1, "wall_s": round(wall, 1), "in_process_s": round(float(inner), 1),
                          "peak_rss_mib": round(float(peak)), "exit": int(code), "html_mib": round(size, 1)}))


if __name__ == "__main__":
    main()
