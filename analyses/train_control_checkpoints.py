"""Make the control checkpoints shipped in checkpoints/controls/ (CPU, deterministic for a given seed):
models whose true answers are known, so that every verdict of the report is shown able to give both
answers (docs/controls.md has the expected table and what each run reached).

    python analyses/train_control_checkpoints.py [NAME ...] [--out-root checkpoints/controls] [--threads 1]

The runs use the reference runs' settings (analyses/train_reference_checkpoints.py: 2 layers, d_model
128, 4 heads, batch 256, lr 1e-3, seed 0) except where a control needs otherwise. Each horizon in
HORIZONS after the first is a `--resume --steps N` continuation, as the shipped runs were trained
(the cosine schedule is recomputed from the resumed step). The resume file is dropped at the end.
Then `python analyses/model_cards.py --controls` measures them.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

from hansprobe.checkpoint import atomic_write_json, new_config, save_model
from hansprobe.model import ModelConfig, build_model
from hansprobe.objectives import get_objective
from hansprobe.tasks import PathStar
from hansprobe.train import TrainConfig
from train_reference_checkpoints import train_horizons  # analyses/ is on sys.path when run as a script

MODEL = ModelConfig(n_layers=2, d_model=128, n_heads=4)
COMMON = dict(batch_size=256, lr=1e-3, warmup_steps=100, eval_every=250, eval_graphs=1000, checkpoint_every=250)
SEED = 0
# name -> (task, objective, model, horizons[, train overrides incl. seed]): train to horizons[0], then
# resume to each later one.
RUNS = {
    # A forward model that plans: on G(2,3) the decision is the parent of the goal, one lookup back,
    # within reach of 2 layers. Teacher forcing; reached 0.91 at 1,500 and 3,000 steps, continued.
    "pathstar-d2-l3-n50-teacher-forcing": (PathStar(2, 3, 50), "teacher-forcing", MODEL, [1500, 3000, 6000]),
    # The trap: a label rule (the goal is on the arm of the largest candidate) makes the decision
    # right without the goal.
    "pathstar-d2-l5-n50-teacher-forcing-cue": (PathStar(2, 5, 50, cue="larger-first-node"), "teacher-forcing", MODEL,
                                               [1500]),
    # Depth control for the failure: the shipped G(2,5) teacher-forcing model has 2 layers; this one 4,
    # trained as long (3,000 steps).
    "pathstar-d2-l5-n50-teacher-forcing-4layers": (PathStar(2, 5, 50), "teacher-forcing",
                                                   ModelConfig(n_layers=4, d_model=128, n_heads=4), [3000]),
    # A 4-layer model that plans before the answer (issue 23 part 4): G(2,3) with the goal first, so the
    # edges come after the goal and can be marked from it. Shipped from the equivalent command
    # `hansprobe train --degree 2 --path-len 3 --nodes 50 --goal-first --n-layers 4 --d-model 128
    # --n-heads 4 --steps 1500 --eval-every 250 --seed 0` (the same train() and TrainConfig).
    "pathstar-d2-l3-n50-goal-first-4layers": (PathStar(2, 3, 50, goal_first=True), "teacher-forcing",
                                              ModelConfig(n_layers=4, d_model=128, n_heads=4), [1500]),
    # The untrained model of the shipped shape: its initialisation (seed 0), saved as a checkpoint.
    "pathstar-d2-l5-n50-untrained": (PathStar(2, 5, 50), "teacher-forcing", MODEL, []),
    # Another recipe for the same failure (closer to the paper's code: lr 5e-4, batch 128), seed 1: its
    # layer-1 lookup heads put 0.6-0.75 of their mass on the edge at indices 2..3 and ~0 at the last
    # index, so the old detector (scores averaged over 2..l-1, gated at 0.5) named none of them.
    "pathstar-d2-l5-n50-teacher-forcing-lr5e-4": (PathStar(2, 5, 50), "teacher-forcing", MODEL, [2000],
                                                  dict(lr=5e-4, batch_size=128, seed=1)),
}


def save_untrained(out: Path, task, objective: str, model_cfg: ModelConfig) -> dict:
    """A checkpoint directory holding a freshly initialised model (step 0, no training log)."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = new_config(task, get_objective(objective), model_cfg.to_dict(), None, SEED)
    cfg["device"] = "cpu"
    model = build_model(model_cfg, task.d_vocab, task.n_ctx, SEED, device="cpu")
    save_model(out, model, {"step": "0"})
    atomic_write_json(out / "config.json", cfg)
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=list(RUNS), help="runs to make (default all)")
    ap.add_argument("--out-root", type=Path, default=Path(__file__).resolve().parents[1] / "checkpoints" / "controls")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the shipped runs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.names:
        if name not in RUNS:
            sys.exit(f"unknown run {name!r}; known: {', '.join(RUNS)}")
    for name in args.names:
        task, objective, model_cfg, horizons, *over = RUNS[name]
        over = dict(over[0]) if over else {}
        seed = over.pop("seed", SEED)
        out, t = args.out_root / name, time.perf_counter()
        if not horizons:
            save_untrained(out, task, objective, model_cfg)
            print(f"{name}: untrained (seed {SEED}) written", flush=True)
            continue
        train_horizons(name, out, task, objective, model_cfg, TrainConfig(**{**COMMON, **over}, steps=horizons[0]), seed,
                       horizons, args.device, False, t)


if __name__ == "__main__":
    main()
