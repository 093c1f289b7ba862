"""Causal follow-up of a probe: decodable is not the same as used. Push the residual stream at the
probe's best cell along the probe's direction (from the goal's class toward a competitor's), or
project the probe's directions out, and measure the change in the decision logit difference
(decision node minus the competitor candidate) against random directions of the same norm."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hansprobe.analyses.activations import Activations, resid_hook
from hansprobe.analyses.base import Result, t_ci
from hansprobe.analyses.probe_targets import ProbeTarget, make_probe
from hansprobe.objectives import Objective
from hansprobe.tasks.base import Batch


def _probe_directions(X: np.ndarray, y: np.ndarray, seed: int):
    pipe = make_probe(seed).fit(X, y)
    scaler, lr = pipe[0], pipe[-1]
    return lr.classes_, lr.coef_ / scaler.scale_[None, :]  # weights in the raw residual basis: (C or 1, d_model)


@torch.no_grad()
def _logit_diff(model, objective: Objective, batch: Batch, decision: torch.Tensor, competitor: torch.Tensor,
                hook_name: str, position: int, edit, batch_size: int) -> np.ndarray:
    """Decision-minus-competitor logit at the decision index, with `edit(x_site, rows)` applied to the
    residual at (hook_name, position); edit=None runs clean."""
    device = next(model.parameters()).device
    k = objective.decision_index(batch.target.shape[1])
    out = []
    for start in range(0, len(batch), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(batch)))
        chunk = batch[rows].to(device)

        def hook(x, hook):
            x = x.clone()
            x[:, position] = edit(x[:, position], rows)
            return x

        hooks = [(hook_name, hook)] if edit is not None else []
        with model.hooks(fwd_hooks=hooks):
            logits = objective.forced_logits(model, chunk)[:, k].cpu()  # (b, V)
        r = torch.arange(len(rows))
        out.append((logits[r, decision[rows]] - logits[r, competitor[rows]]).numpy())
    return np.concatenate(out)


def _summary(delta: np.ndarray) -> dict:
    lo, hi = t_ci(delta)
    return {"mean_change": float(delta.mean()), "ci": [float(lo), float(hi)], "mean_abs_change": float(np.abs(delta).mean())}


def steer_along_probe(model, objective: Objective, batch: Batch, acts: Activations, tgt: ProbeTarget, best: dict,
                      seed: int = 0, batch_size: int = 500, n_random: int = 5) -> dict:
    li, pj = acts.layers.index(best["layer"]), acts.positions.index(best["position"])
    X = acts.acts[:, li, pj]  # (B, d_model)
    y = tgt.labels[:, pj]
    classes, W = _probe_directions(X, y, seed)
    n, d = batch.candidates.shape
    rows = torch.arange(n)
    other_arm = (batch.goal_arm + 1) % d
    decision, competitor = batch.candidates[rows, batch.goal_arm], batch.candidates[rows, other_arm]
    # class of the goal and of the competitor in the probe's label space
    goal_cls = (batch.goal_arm if tgt.name == "goal_arm" else decision).numpy()
    comp_cls = (other_arm if tgt.name == "goal_arm" else competitor).numpy()
    idx = {c: i for i, c in enumerate(classes)}
    if W.shape[0] == 1:  # binary: one vector pointing to classes[1]
        sign = np.where(goal_cls == classes[1], -1.0, 1.0)
        dirs = sign[:, None] * W[0][None, :]
    else:
        wg = np.stack([W[idx[c]] if c in idx else np.zeros(W.shape[1]) for c in goal_cls])
        wc = np.stack([W[idx[c]] if c in idx else np.zeros(W.shape[1]) for c in comp_cls])
        dirs = wc - wg
    dirs = dirs / np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-12)
    scale = float(np.linalg.norm(X, axis=1).mean())  # push by the site's typical residual norm
    rng = np.random.default_rng(seed)
    hook_name, position = resid_hook(best["layer"]), best["position"]
    clean = _logit_diff(model, objective, batch, decision, competitor, hook_name, position, None, batch_size)

    def add(vectors):
        v = torch.tensor(vectors * scale, dtype=torch.float32)
        return lambda x, r: x + v[r].to(x.device, x.dtype)

    def project_out(basis):
        q = torch.tensor(np.linalg.qr(basis.T)[0], dtype=torch.float32)  # (d_model, k) orthonormal
        return lambda x, r: x - (x @ q.to(x.device, x.dtype)) @ q.to(x.device, x.dtype).T

    steer = _logit_diff(model, objective, batch, decision, competitor, hook_name, position, add(dirs), batch_size) - clean
    rand_steer, rand_ablate = [], []
    for _ in range(n_random):
        r = rng.standard_normal(dirs.shape)
        r /= np.linalg.norm(r, axis=1, keepdims=True)
        rand_steer.append(_logit_diff(model, objective, batch, decision, competitor, hook_name, position, add(r), batch_size) - clean)
        rand_ablate.append(_logit_diff(model, objective, batch, decision, competitor, hook_name, position,
                                       project_out(rng.standard_normal(W.shape)), batch_size) - clean)
    ablate = _logit_diff(model, objective, batch, decision, competitor, hook_name, position, project_out(W), batch_size) - clean
    return SteeringResult(
        site={"layer": best["layer"], "position": position, "hook": hook_name},
        steering_norm=scale,
        clean_logit_diff={"mean": float(clean.mean()), "mean_abs": float(np.abs(clean).mean())},
        steer_probe=_summary(steer), steer_random=_summary(np.concatenate(rand_steer)),
        ablate_probe=_summary(ablate), ablate_random=_summary(np.concatenate(rand_ablate)),
        note="change in logit(decision node) - logit(competitor candidate) at the decision index; steering pushes "
             "from the goal's class toward the competitor's, so a used direction gives a negative change",
    )


@dataclass
class SteeringResult(Result):
    """The causal follow-up of a probe: steering along it and projecting it out at its site, each
    against random directions (mean change of the decision logit difference with a t interval)."""

    site: dict
    steering_norm: float
    clean_logit_diff: dict
    steer_probe: dict
    steer_random: dict
    ablate_probe: dict
    ablate_random: dict
    note: str = ""

    def figures(self) -> dict:
        import plotly.graph_objects as go

        rows = [("steer along the probe", self.steer_probe), ("steer along random directions", self.steer_random),
                ("project the probe out", self.ablate_probe), ("project random directions out", self.ablate_random)]
        fig = go.Figure(go.Bar(x=[r[0] for r in rows], y=[r[1]["mean_change"] for r in rows], error_y=dict(
            type="data", symmetric=False, array=[r[1]["ci"][1] - r[1]["mean_change"] for r in rows],
            arrayminus=[r[1]["mean_change"] - r[1]["ci"][0] for r in rows])))
        fig.update_layout(yaxis_title="change of the decision logit difference (nats)",
                          title=f"Steering at layer {self.site['layer']}, position {self.site['position']} (95% CI)")
        return {"steering": fig}
