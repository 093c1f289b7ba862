"""Peak memory of the analyses on a large request: each runs in a fresh process on N fresh graphs
of a checkpoint and reports its peak resident set size (ru_maxrss). Streaming in batches should keep
the peak nearly flat from 2,000 to 20,000 graphs.

    python tests/benchmarks/bench_memory.py [CKPT] [--n 2000 20000] [--batch-size 1000]
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, resource, sys, time, torch
torch.set_num_threads(1)
import hansprobe
from hansprobe.measurements import measure_behaviour, measure_entropy
from hansprobe.measurements.heads import measure_heads
ckpt, analysis, n, bs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model, task, obj = hansprobe.load(ckpt)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
batch = task.generate(n, 1234)
t = time.perf_counter()
{"behaviour": measure_behaviour, "entropy": measure_entropy, "heads": measure_heads}[analysis](model, obj, batch, batch_size=bs)
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "after_load_mib": before / 1024}))
"""


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", nargs="?", default=str(root / "checkpoints" / "pathstar-d2-l5-n50-teacher-forcing"))
    ap.add_argument("--n", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--analyses", nargs="+", default=["behaviour", "entropy", "heads"])
    args = ap.parse_args()
    print(f"checkpoint {args.checkpoint}, batch size {args.batch_size}, 1 thread")
    for analysis in args.analyses:
        for n in args.n:
            out = subprocess.run([sys.executable, "-c", CHILD, args.checkpoint, analysis, str(n), str(args.batch_size)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{analysis:10s} n={n:>6,}: peak RSS {r['peak_mib']:7.0f} MiB (after loading the model "
                  f"{r['after_load_mib']:.0f} MiB), {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
