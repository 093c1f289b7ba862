"""Training dynamics: which answer token is learned when (the "learning order").

Reads a run directory: every weight snapshot (`snapshots/step-*.safetensors`, kept by
`train --snapshot-at`) plus the final weights is measured on the same fresh graphs for per-position
forced accuracy and decision-token entropy; the training log (metrics.jsonl) adds the curves logged
during training.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hansprobe.analyses.base import Result, progress_iter
from hansprobe.analyses.entropy import entropy_from_logprobs
from hansprobe.analyses.registry import AnalysisContext, AnalysisSpec, register_analysis
from hansprobe.checkpoint import MODEL, load_safetensors, load_weights, model_from_config, read_config, read_metrics
from hansprobe.errors import CheckpointError
from hansprobe.model import resolve_device
from hansprobe.objectives import objective_from_config
from hansprobe.tasks.base import Batch

LEARNED = 0.9  # a position counts as learned from the first measured step with forced accuracy >= this


@dataclass
class DynamicsResult(Result):
    objective: str
    n_graphs: int
    steps: list[int]
    forced_accuracy: list[list[float]]  # [step][label position]
    decision_accuracy: list[float]
    candidate_entropy_frac: list[float]  # mean H over candidates / log d
    information_nats: list[float]
    learned_at: list[int | None]  # per label position: first step with forced accuracy >= LEARNED
    learning_order: list[int]  # label positions sorted by learned_at (never-learned last)
    logged: dict = field(default_factory=dict)  # from metrics.jsonl: steps, train_loss, forced_accuracy

    def figures(self) -> dict:
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=2, cols=1, vertical_spacing=0.22, subplot_titles=(
            "forced accuracy per label position", "decision token: entropy over candidates / log d"))
        for pos in range(len(self.forced_accuracy[0]) if self.forced_accuracy else 0):
            fig.add_scatter(x=self.steps, y=[row[pos] for row in self.forced_accuracy], mode="lines+markers",
                            name=f"r{pos}", row=1, col=1)
        fig.add_scatter(x=self.steps, y=self.candidate_entropy_frac, mode="lines+markers", name="H / log d", row=2, col=1)
        fig.add_scatter(x=self.steps, y=self.decision_accuracy, mode="lines+markers", name="decision accuracy", row=2, col=1)
        fig.update_xaxes(title_text="training step")
        fig.update_yaxes(range=[0, 1.05])
        fig.update_layout(title=f"Learning order ({self.objective}, {self.n_graphs} fresh graphs per snapshot)")
        return {"learning_order": fig}


def snapshot_paths(run_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for f in (run_dir / "snapshots").glob("step-*.safetensors"):
        m = re.fullmatch(r"step-(\d+)\.safetensors", f.name)
        if m:
            found.append((int(m.group(1)), f))
    return sorted(found)


@torch.no_grad()
def measure_dynamics(run_dir: str | Path, batch: Batch, device: str = "cpu", batch_size: int = 1000,
                     progress: bool = False) -> DynamicsResult:
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    dev = resolve_device(device)
    model, task = model_from_config(cfg, dev)
    objective = objective_from_config(cfg)
    points = snapshot_paths(run_dir)
    final_step = int(cfg.get("step") or 0)  # imported checkpoints record no step
    if (run_dir / MODEL).is_file() and final_step not in {s for s, _ in points}:
        points.append((final_step, run_dir / MODEL))
    if not points:
        raise CheckpointError(f"{run_dir} has no snapshots/ and no {MODEL}; train with --snapshot-at STEPS to record dynamics")
    steps, forced, dec_acc, ent, info = [], [], [], [], []
    points = progress_iter(points, len(points), "dynamics", progress, unit="snapshot")
    for step, path in points:
        tensors, _ = load_safetensors(path)
        load_weights(model, tensors, path)
        model.eval()
        ok, logp = [], []
        k = objective.decision_index(task.target_len)
        for chunk in batch.split(batch_size):
            chunk = chunk.to(dev)
            logits = objective.forced_logits(model, chunk)  # (b, L, V): one pass serves both measures
            ok.append((logits.argmax(-1) == objective.labels(chunk)).float().cpu())
            logp.append(logits[:, k].log_softmax(-1).cpu())
        ent_res = entropy_from_logprobs(torch.cat(logp), objective, batch)
        steps.append(step)
        forced.append(torch.cat(ok).mean(0).tolist())
        dec_acc.append(ent_res.decision_accuracy)
        ent.append(ent_res.candidate_entropy_frac)
        info.append(ent_res.information_nats)
    n_pos = len(forced[0])
    learned_at = [next((s for s, row in zip(steps, forced) if row[p] >= LEARNED), None) for p in range(n_pos)]
    order = sorted(range(n_pos), key=lambda p: (learned_at[p] is None, learned_at[p] or 0, p))
    rows = read_metrics(run_dir)
    logged = {"steps": [r["step"] for r in rows], "train_loss": [r.get("train_loss") for r in rows],
              "forced_accuracy": [r.get("forced_accuracy") for r in rows]}
    return DynamicsResult(objective=objective.name, n_graphs=len(batch), steps=steps, forced_accuracy=forced,
                          decision_accuracy=dec_acc, candidate_entropy_frac=ent, information_nats=info,
                          learned_at=learned_at, learning_order=order, logged=logged)


def _dynamics_skip(ctx: AnalysisContext) -> str | None:
    snaps = ctx.path / "snapshots"
    return None if snaps.is_dir() and any(snaps.iterdir()) else "the run kept no snapshots (train --snapshot-at STEPS)"


register_analysis(AnalysisSpec(
    name="dynamics", title="Training dynamics", order=60, skip=_dynamics_skip,
    measure=lambda ctx: measure_dynamics(ctx.path, ctx.mechanism_batch, device=ctx.device, batch_size=ctx.batch_size),
    captions={
        'learning_order': 'Forced accuracy per position and decision-token entropy over the kept snapshots. Look for: which position is learned when; the decision token last or never.',
    },
))
