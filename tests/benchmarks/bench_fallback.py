"""What running through the hooked bridge costs where hansprobe's fused forward does not apply (an
imported GPT-NeoX, Llama, Phi, ...: `fused.training_view` falls back to the bridge on any layout but
its own). Measured on a shipped checkpoint whose layout the fused forward does know, by running the
same report twice in fresh processes: as usual, and with the fused forward refused (the fallback
every other architecture takes). Prints both wall times, their ratio, and whether the answers agree.
    python tests/benchmarks/bench_fallback.py [CKPT] [-n 2000] [--threads 2]
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
import sys
import hansprobe.fused as fused
if sys.argv[1] == "bridge":
    def refuse(self, model):
        raise KeyError("benchmark: the bridge everywhere")
    fused.FusedGPT.__init__ = refuse  # training_view and inference_view then return the bridge itself
from hansprobe.cli import main
sys.exit(main(sys.argv[2:]))
"""


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", nargs="?", default=str(root / "checkpoints" / "pathstar-d2-l5-n50-teacher-forcing"))
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(root))
    from hansprobe.report.compare import differences

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    walls, docs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for view in ("fused", "bridge"):
            out = Path(tmp) / view
            t = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", CHILD, view, "report", str(Path(args.checkpoint).resolve()), "-n",
                                  str(args.n), "--out", str(out), "--json"], capture_output=True, text=True, env=env)
            walls[view] = time.perf_counter() - t
            if res.returncode:
                sys.exit(f"{view}: {res.stderr[-2000:]}")
            docs[view] = json.loads((out / "report.json").read_text())
    answers = [{k: v["answer"] for k, v in c["verdicts"].items()} for c in (docs["fused"]["checkpoints"][0],
                                                                             docs["bridge"]["checkpoints"][0])]
    diffs = differences(docs["fused"], docs["bridge"])
    print(f"{Path(args.checkpoint).name}, -n {args.n}, {args.threads} thread(s): fused {walls['fused']:.1f} s, bridge "
          f"{walls['bridge']:.1f} s ({walls['bridge'] / walls['fused']:.2f}x); answers "
          f"{'identical' if answers[0] == answers[1] else 'DIFFER: ' + str(answers)}; {len(diffs)} report.json fields differ "
          f"(float rounding between the two forwards)")


if __name__ == "__main__":
    main()
