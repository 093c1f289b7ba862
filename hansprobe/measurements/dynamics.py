"""Training dynamics: which answer token is learned when (the "learning order"), and where the
supervision goes once the lookup is learned.

Reads a run directory: every weight snapshot (`snapshots/step-*.safetensors`, kept by
`train --snapshot-at`) plus the final weights is measured on the same fresh graphs for per-position
forced accuracy, decision-token entropy and **per-position training loss** (the objective's loss,
split by label position), and on the first GRAD_GRAPHS of them for the **share of the gradient**
(over all parameters) that each position's loss carries: the argument under study says that once
the later tokens are fitted by the lookup their loss falls to ~0, so the supervision left is r1's,
which stays near log d. The training log (metrics.jsonl) adds the curves logged during training.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from hansprobe.mechanics.results import Result, wilson_ci
from hansprobe.progress import progress_iter
from hansprobe.measurements.entropy import decision_tensors
from hansprobe.measurements.registry import AnalysisContext, AnalysisSpec, register_analysis
from hansprobe.checkpoint import (MODEL, architecture, load_safetensors, load_weights, model_from_config, read_config,
                                  read_metrics)
from hansprobe.errors import CheckpointError
from hansprobe.fused import logits_at, training_view
from hansprobe.model import resolve_device
from hansprobe.objectives import objective_from_config
from hansprobe.tasks.base import Batch

LEARNED = 0.9  # a position counts as learned from the first measured step with forced accuracy >= this
# Graphs per snapshot for the gradient shares (one backward pass per label position, the report's
# costliest step): two disjoint samples of 128 agree to within 0.04 per position, as two of 256 agree
# to within 0.03 (docs/decisions.md 44).
GRAD_GRAPHS = 128


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
    candidate_accuracy: list[float] = field(default_factory=list)  # the decision among the d candidates, per step
    candidate_accuracy_ci: list[list[float]] = field(default_factory=list)  # its Wilson CI
    chance: float | None = None  # 1/d
    loss_by_position: list[list[float]] = field(default_factory=list)  # [step][label position]: mean cross-entropy, nats
    loss_share: list[list[float]] = field(default_factory=list)  # [step][position]: share of the summed loss
    grad_share: list[list[float]] = field(default_factory=list)  # [step][position]: ||grad of its loss|| / sum over positions
    grad_graphs: int = 0
    label_names: list[str] = field(default_factory=list)  # the path token at each label position (reverse: r4 first)

    def names(self) -> list[str]:
        """label_names, or r0.. for a result stored before it existed."""
        n = len(self.forced_accuracy[0]) if self.forced_accuracy else 0
        return self.label_names or [f"r{i}" for i in range(n)]

    @property
    def decision_above_chance_at(self) -> list[int]:
        """The steps whose candidate decision accuracy lies above chance (empty: at chance throughout),
        each by a Wilson interval at 1 - 0.05 / (number of snapshots): the snapshots are tested
        together (Bonferroni), so that a run at chance throughout passes with probability >= 0.95."""
        level = 1 - 0.05 / max(1, len(self.steps))
        return [s for s, acc in zip(self.steps, self.candidate_accuracy)
                if wilson_ci(round(acc * self.n_graphs), self.n_graphs, level)[0] > self.chance]

    def summary(self) -> dict:
        return {**self.to_dict(), "decision_above_chance_at": self.decision_above_chance_at}

    def text(self) -> str:
        names = self.names()
        lines = ["  step   " + "  ".join(f"{n:<5}" for n in names) + "  H/log d  decision acc"]
        for step, row, h, acc in zip(self.steps, self.forced_accuracy, self.candidate_entropy_frac, self.decision_accuracy):
            lines.append(f"  {step:<6} " + "  ".join(f"{a:.3f}" for a in row) + f"  {h:.3f}    {acc:.3f}")
        learned = ", ".join(f"{names[p]} at {self.learned_at[p]}" if self.learned_at[p] is not None else f"{names[p]} never"
                            for p in self.learning_order)
        lines.append(f"  learning order (forced accuracy >= {LEARNED}): {learned}")
        return "\n".join(lines)

    def figures(self) -> dict:
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=2, cols=1, vertical_spacing=0.22, subplot_titles=(
            "forced accuracy per label position", "decision token: entropy over candidates / log d"))
        for pos, name in enumerate(self.names()):
            fig.add_scatter(x=self.steps, y=[row[pos] for row in self.forced_accuracy], mode="lines+markers",
                            name=name, row=1, col=1)
        fig.add_scatter(x=self.steps, y=self.candidate_entropy_frac, mode="lines+markers", name="H / log d", row=2, col=1)
        fig.add_scatter(x=self.steps, y=self.decision_accuracy, mode="lines+markers", name="decision accuracy", row=2, col=1)
        fig.update_xaxes(title_text="training step")
        fig.update_yaxes(range=[0, 1.05])
        fig.update_layout(title=f"Learning order ({self.objective}, {self.n_graphs} fresh graphs per snapshot)")
        figs = {"learning_order": fig}
        if self.loss_by_position:
            figs["supervision_by_position"] = self._supervision_figure()
        return figs

    def _supervision_figure(self):
        import math

        from plotly.subplots import make_subplots

        fig = make_subplots(rows=2, cols=1, vertical_spacing=0.22, subplot_titles=(
            "training loss per label position (nats)", f"share of the gradient (all parameters; {self.grad_graphs} graphs)"))
        for pos, name in enumerate(self.names()):
            fig.add_scatter(x=self.steps, y=[row[pos] for row in self.loss_by_position], mode="lines+markers",
                            name=f"{name} loss", legendgroup=name, row=1, col=1)
            fig.add_scatter(x=self.steps, y=[row[pos] for row in self.grad_share], mode="lines+markers",
                            name=f"{name} gradient share", legendgroup=name, row=2, col=1)
        if self.chance:
            fig.add_hline(y=math.log(1 / self.chance), line_dash="dot", annotation_text="log d (uniform over candidates)",
                          row=1, col=1)
        fig.update_xaxes(title_text="training step")
        fig.update_yaxes(range=[0, 1.05], row=2, col=1)
        fig.update_layout(title=f"Where the supervision goes ({self.objective}): per-position loss and gradient share")
        return fig


def snapshot_paths(run_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for f in (run_dir / "snapshots").glob("step-*.safetensors"):
        m = re.fullmatch(r"step-(\d+)\.safetensors", f.name)
        if m:
            found.append((int(m.group(1)), f))
    return sorted(found)


@torch.no_grad()
def measure_dynamics(run_dir: str | Path, batch: Batch, *, device: str = "cpu", batch_size: int = 1000,
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
    steps, forced, dec_acc, ent, info, cand, cand_ci, losses, grads = [], [], [], [], [], [], [], [], []
    grad_batch = batch[:GRAD_GRAPHS].to(dev)
    points = progress_iter(points, len(points), "dynamics", progress, unit="snapshot")
    arch = architecture(cfg)
    for step, path in points:
        tensors, _ = load_safetensors(path)
        if arch.name == "native":  # one model, each snapshot's weights loaded into it
            load_weights(model, tensors, path)
        else:  # an imported layout: its weights come through its own loader (names and conversion)
            model = arch.load(cfg, task, tensors, path, dev)
        model.eval()
        ok, logp, nll = [], [], []
        k = objective.decision_index(task.target_len)
        for chunk in batch.split(batch_size):
            chunk = chunk.to(dev)
            # (b, L, V): one pass serves every measure; fused, as nothing hooks this model of our own
            logits = objective.forced_logits(model, chunk)
            labels = objective.labels(chunk)
            ok.append((logits.argmax(-1) == labels).float().cpu())
            logp.append(logits[:, k].log_softmax(-1).cpu())
            nll.append(F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").cpu())  # (b, L)
        loss = torch.cat(nll).mean(0)  # (L,)
        losses.append(loss.tolist())
        grads.append(position_gradient_shares(model, objective, grad_batch))
        t = decision_tensors(torch.cat(logp), batch)  # point estimates: no bootstrap interval is read here
        steps.append(step)
        forced.append(torch.cat(ok).mean(0).tolist())
        dec_acc.append(t["correct"] / len(batch))
        ent.append(float(t["candidate_entropy_frac"].double().mean()))
        info.append(float(t["information"].double().mean()))
        cand.append(t["candidate_correct"] / len(batch))
        cand_ci.append(list(wilson_ci(t["candidate_correct"], len(batch))))
    n_pos = len(forced[0])
    learned_at = [next((s for s, row in zip(steps, forced) if row[p] >= LEARNED), None) for p in range(n_pos)]
    order = sorted(range(n_pos), key=lambda p: (learned_at[p] is None, learned_at[p] or 0, p))
    rows = read_metrics(run_dir)
    logged = {"steps": [r["step"] for r in rows], "train_loss": [r.get("train_loss") for r in rows],
              "forced_accuracy": [r.get("forced_accuracy") for r in rows]}
    return DynamicsResult(objective=objective.name, n_graphs=len(batch), steps=steps, forced_accuracy=forced,
                          decision_accuracy=dec_acc, candidate_entropy_frac=ent, information_nats=info,
                          learned_at=learned_at, learning_order=order, logged=logged, candidate_accuracy=cand,
                          candidate_accuracy_ci=cand_ci, chance=task.chance, loss_by_position=losses,
                          loss_share=[[x / sum(row) if sum(row) > 0 else 0.0 for x in row] for row in losses],
                          grad_share=grads, grad_graphs=len(grad_batch), label_names=objective.label_names(n_pos))


def position_gradient_shares(model, objective, batch: Batch) -> list[float]:
    """||∇θ loss_i|| / Σ_j ||∇θ loss_j|| over all parameters θ, for each label position i's mean
    cross-entropy on `batch` (the objective's own input): the share of the supervision each
    position carries. One forward pass, one backward pass per position."""
    params = [p for p in model.parameters() if p.requires_grad]
    net = training_view(model)  # the training forward over the same parameters: these are training gradients
    with torch.enable_grad():  # fused: the last block at the label positions only, all the loss reads
        logits = logits_at(model, objective.inputs(batch), objective.label_slice(batch), net=net).float()  # (B, L, V)
        per_pos = F.cross_entropy(logits.transpose(1, 2), objective.labels(batch), reduction="none").mean(0)  # (L,)
        norms = []
        for i in range(len(per_pos)):
            g = torch.autograd.grad(per_pos[i], params, retain_graph=i < len(per_pos) - 1, allow_unused=True)
            norms.append(float(sum((x.float() ** 2).sum() for x in g if x is not None)) ** 0.5)
    total = sum(norms)
    return [n / total if total > 0 else 0.0 for n in norms]


def _dynamics_skip(ctx: AnalysisContext) -> str | None:
    snaps = ctx.path / "snapshots"
    return None if snaps.is_dir() and any(snaps.iterdir()) else "the run kept no snapshots (train --snapshot-at STEPS)"


register_analysis(AnalysisSpec(
    name="dynamics", title="Training dynamics", order=60, skip=_dynamics_skip,
    measure=lambda ctx: measure_dynamics(ctx.path, ctx.mechanism_batch, device=ctx.device, batch_size=ctx.batch_size),
    captions={
        'learning_order': 'Forced accuracy per position and decision-token entropy over the kept snapshots. Look for: which position is learned when; the decision token last or never.',
        'supervision_by_position': "Per-position training loss and each position's share of the gradient (all parameters) over the snapshots. Look for: the later positions' loss falling to ~0 first while r1 stays at log d, and r1's share of the gradient rising once the lookup is learned.",
    },
))
