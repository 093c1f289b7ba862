"""Make the depth study's runs (issue 24): G(2,5) at 4 layers, d_model 128, 4 heads, the references'
recipe (batch 256, lr 1e-3, 100 warmup steps, cosine to 0.1x over 3,000 steps), one thread each on
CPU: the capacity witness (multi-token, 4 extra heads: every later answer token predicted from
every position) and teacher forcing beside it at the same shape and budget, seeds 0-2, each with a
snapshot series; and the same pair on T(2,3) trees (`tree-*`, the tree question of issue 23).
docs/study-depth.md has what each reached.

    python analyses/train_depth_checkpoints.py [NAME ...] [--root DIR] [--threads 1]

Each run is the `hansprobe train` command below to 3,000 steps; a run that was stopped is continued
with `--resume` (bit-identical on CPU), a finished one skipped. `--horizon 6000` then continues a
copy of a finished 3,000-step run (`NAME-6000`) with `train --resume --steps 6000` (the cosine
schedule recomputed from step 3,000). The shipped pair at 4 layers was stopped at step 5,000 of
that continuation (its last checkpoint; docs/study-depth.md). Copy the shipped runs into
checkpoints/ without their resume file, and measure them with `hansprobe report`.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

MODEL = ["--n-layers", "4", "--d-model", "128", "--n-heads", "4"]
STAR = ["--degree", "2", "--path-len", "5", "--nodes", "50"]
# The tree question of issue 23 part 6: T(2,3) (decisions at labels 1 and 2; label 2 is the goal's
# parent, one hop from the goal, label 1 two hops) at the same depth and recipe.
TREE = ["--task", "tree", "--branching", "2", "--depth", "3", "--nodes", "50"]
BUDGET = ["--steps", "3000", "--eval-every", "250", "--checkpoint-every", "250",
          "--snapshot-at", "100,250,500,1000,1500,2000,2500"]
RUNS = {
    "mt4-L4-3000-s0": [*STAR, "--objective", "multi-token", "--extra-heads", "4", "--seed", "0"],
    "tf-L4-3000-s0": [*STAR, "--objective", "teacher-forcing", "--seed", "0"],
    "tf-L4-3000-s1": [*STAR, "--objective", "teacher-forcing", "--seed", "1"],
    "tf-L4-3000-s2": [*STAR, "--objective", "teacher-forcing", "--seed", "2"],
    "tree-tf-L4-3000-s0": [*TREE, "--objective", "teacher-forcing", "--seed", "0"],
    "tree-mt3-L4-3000-s0": [*TREE, "--objective", "multi-token", "--extra-heads", "3", "--seed", "0"],
    "tree-gf-L4-3000-s0": [*TREE, "--goal-first", "--objective", "teacher-forcing", "--seed", "0"],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=list(RUNS))
    ap.add_argument("--root", type=Path, default=Path("runs/depth"))
    ap.add_argument("--threads", default="1")
    ap.add_argument("--horizon", type=int, default=3000, help="3000, or 6000 to continue a copy of a finished run")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": args.threads}
    for name in args.names:
        if name not in RUNS:
            sys.exit(f"unknown run {name!r}; known: {', '.join(RUNS)}")
        out = args.root / name
        if args.horizon != 3000:
            longer = args.root / f"{name}-{args.horizon}"
            if not longer.exists():
                shutil.copytree(out, longer)
            out = longer
        cfg = out / "config.json"
        if cfg.is_file() and json.loads(cfg.read_text()).get("step") == args.horizon:
            print(f"{name}: finished before", file=sys.stderr)
            continue
        cmd = (["train", "--resume", "--out", str(out), "--steps", str(args.horizon)] if (out / "resume.safetensors").is_file()
               else ["train", *MODEL, *BUDGET, *RUNS[name], "--out", str(out), "--overwrite"])
        print(f"{name}: hansprobe {' '.join(cmd)}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "hansprobe", *cmd], env=env, check=True)


if __name__ == "__main__":
    main()
