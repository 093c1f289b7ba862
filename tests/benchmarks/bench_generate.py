"""Graphs generated per second (goal: >= 100,000/s for G(2,5) on 50 nodes, one core).

    python tests/benchmarks/bench_generate.py [--n 100000] [--reps 5]
"""
import argparse
import platform
import time

import torch

from hansprobe.tasks import PathStar


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    for d, l in [(2, 5), (5, 5), (2, 3)]:
        task = PathStar(d, l, 50)
        task.generate(1000, 0)  # warm up
        times = []
        for rep in range(args.reps):
            t = time.perf_counter()
            task.generate(args.n, rep)
            times.append(time.perf_counter() - t)
        best = args.n / min(times)
        print(f"G({d},{l}) n=50: {best:,.0f} graphs/s (best of {args.reps} x {args.n:,}; median {args.n / sorted(times)[len(times) // 2]:,.0f})"
              + ("   goal >= 100,000/s: " + ("met" if best >= 100_000 else "NOT met") if (d, l) == (2, 5) else ""))


if __name__ == "__main__":
    main()
