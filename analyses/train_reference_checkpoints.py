"""Train the reference checkpoints shipped in checkpoints/ (CPU, deterministic for a given seed).

    python analyses/train_reference_checkpoints.py [NAME ...] [--out-root checkpoints] [--device cpu]

Names: pathstar-d{degree}-l{path_len}-n{nodes}-{objective}. Each run is a normal hansprobe run
directory; the resume file is kept only where the run may be continued later (teacherless, known
to need far more steps: `hansprobe train --resume --steps N --out ...`). Runs in CONTINUE were
resumed to a longer horizon after their first one, as the shipped ones were.
Then `python analyses/model_cards.py` measures them and writes docs/model-cards.md.
"""
import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from hansprobe.model import ModelConfig
from hansprobe.tasks import PathStar
from hansprobe.train import TrainConfig, train

MODEL = ModelConfig(n_layers=2, d_model=128, n_heads=4)
COMMON = dict(batch_size=256, lr=1e-3, warmup_steps=100, eval_every=250, eval_graphs=1000, checkpoint_every=250)
RUNS = {
    "pathstar-d2-l5-n50-teacher-forcing": (PathStar(2, 5, 50), "teacher-forcing",
                                           dict(steps=3000, snapshot_at=[50, 100, 200, 300, 500, 1000]), False),
    # Retrained with the teacher-forcing reference's snapshot steps (same config and seed, so the same
    # weights at step 3,000) for the dynamics figure of issue 24 part 3.
    "pathstar-d2-l5-n50-reverse": (PathStar(2, 5, 50), "reverse",
                                   dict(steps=3000, snapshot_at=[50, 100, 200, 300, 500, 1000]), False),
    # G(5,5) sat on a plateau (forced accuracy ~0.07 at every middle position) for 3,000 steps; the run
    # was then continued to 9,000 steps (`--resume --steps 9000`, the cosine schedule recomputed from
    # step 3,000) and learned the shortcut between steps 4,750 and 5,250. CONTINUE reproduces that.
    "pathstar-d5-l5-n50-teacher-forcing": (PathStar(5, 5, 50), "teacher-forcing", dict(steps=3000), False),
    "pathstar-d2-l5-n50-teacherless": (PathStar(2, 5, 50), "teacherless", dict(steps=5000), True),
}
SEED = 0
# Resumed to this many steps after the first horizon (in the second session, as CPU time allowed).
CONTINUE = {"pathstar-d5-l5-n50-teacher-forcing": 9000, "pathstar-d2-l5-n50-teacherless": 8000}


def train_horizons(name, out, task, objective, model_cfg, train_cfg, seed, horizons, device, keep_resume, t0) -> dict:
    """Train to horizons[0] (train_cfg.steps), resume to each later horizon as the shipped runs were,
    drop the resume file unless kept, and print one line of final metrics. Shared with
    train_control_checkpoints.py."""
    progress = None if sys.stderr.isatty() else "lines"  # a bar at a terminal, a line per evaluation in a log
    cfg = train(out, task, objective, model_cfg, replace(train_cfg, steps=horizons[0]), seed=seed, device=device,
                overwrite=True, progress=progress)
    for steps in horizons[1:]:
        cfg = train(out, resume=True, steps=steps, device=device, progress=progress)
    if not keep_resume:
        (out / "resume.safetensors").unlink()
    m = cfg["metrics"]
    print(f"{name}: {cfg['step']} steps in {time.perf_counter() - t0:.0f}s; exact match {m['exact_match']:.3f}, "
          f"decision accuracy {m['decision_accuracy']:.3f}, forced {[round(a, 3) for a in m['forced_accuracy']]}",
          flush=True)
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=list(RUNS), help="runs to train (default all)")
    ap.add_argument("--out-root", type=Path, default=Path(__file__).resolve().parents[1] / "checkpoints")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: the shipped runs used 1; run two names in two processes to use two cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.names:
        if name not in RUNS:
            sys.exit(f"unknown run {name!r}; known: {', '.join(RUNS)}")
    for name in args.names:
        task, objective, extra, keep_resume = RUNS[name]
        t = time.perf_counter()
        out = args.out_root / name
        horizons = [extra["steps"], *([CONTINUE[name]] if name in CONTINUE else [])]
        train_horizons(name, out, task, objective, MODEL, TrainConfig(**COMMON, **extra), SEED, horizons, args.device,
                       keep_resume, t)


if __name__ == "__main__":
    main()
