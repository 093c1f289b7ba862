"""How much the decision accuracy (and the indecipherable verdict) of a checkpoint moves between
graph samples: the figures behind docs/decisions.md entry 14.

    python analyses/decision_accuracy_by_sample.py [CKPT] [--n 1000] [--seeds 1234 1 2 3 4] [--large 20000]
"""
import argparse
from pathlib import Path

import hansprobe
from hansprobe.measurements import measure_entropy


def main():
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", default=str(root / "checkpoints" / "pathstar-d5-l5-n50-teacher-forcing"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1234, 1, 2, 3, 4])
    ap.add_argument("--large", type=int, default=20000, help="one large sample (seed 99) for the reference value")
    args = ap.parse_args()
    model, task, objective = hansprobe.load(args.checkpoint)
    for n, seed in [(args.n, s) for s in args.seeds] + [(2000, 1234), (args.large, 99)]:
        e = measure_entropy(model, objective, task.generate(n, seed))
        lo, hi = e.decision_accuracy_ci
        print(f"{n:>6} graphs, seed {seed:>4}: decision accuracy {e.decision_accuracy:.3f} [{lo:.3f}, {hi:.3f}], "
              f"information {e.information_nats:+.3f} nats, indecipherable {'yes' if e.indecipherable else 'no'}")


if __name__ == "__main__":
    main()
