"""Causal follow-up of a probe: decodable is not the same as used. Push the residual stream at the
probe's best cell along the probe's direction (from the goal's class toward a competitor's), or
project the probe's directions out, and measure the change in the decision logit difference
(decision node minus the competitor candidate) against random directions of the same norm."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hansprobe.mechanics.activations import Activations, resid_hook
from hansprobe.mechanics.results import Result, t_ci
from hansprobe.mechanics.probe_targets import ProbeTarget, make_probe
from hansprobe.objectives import Objective, autocast
from hansprobe.tasks.base import Batch


def _probe_directions(X: np.ndarray, y: np.ndarray, seed: int):
    pipe = make_probe(seed).fit(X, y)
    scaler, lr = pipe[0], pipe[-1]
    return lr.classes_, lr.coef_ / scaler.scale_[None, :]  # weights in the raw residual basis: (C or 1, d_model)


class _Site:
    """The clean residual stream at the probe's layer, kept once, so that every edit reruns only the
    blocks from there on, on the prompt cut after the decision position (the model is causal: later
    positions cannot change the decision logits). TransformerLens's own `start_at_layer` computes
    the earlier blocks anyway, so the remaining blocks are called directly — checked once against
    the clean forward pass, with `start_at_layer` as the fallback for a bridge where they disagree.
    A model without blocks of its own to call (a text-format model: hansprobe/text_model.py, whose
    residual at the integer sites is a gather of its text positions) runs its whole forward with a
    hook that writes the edited residual at the sites."""

    @torch.no_grad()
    def __init__(self, model, objective: Objective, batch: Batch, layer: int, batch_size: int):
        self.model, self.layer, self.batch_size = model, layer, batch_size
        self.device = next(model.parameters()).device
        self.at = objective.label_slice(batch).start + objective.decision_index(batch.target.shape[1])
        tokens = objective.inputs(batch)[:, : self.at + 1]  # (B, at+1)
        self.tokens = tokens
        hook, resid, clean = resid_hook(layer), [], []
        for start in range(0, len(tokens), batch_size):
            with autocast(self.device):
                logits, cache = model.run_with_cache(tokens[start:start + batch_size].to(self.device), names_filter=[hook])
            resid.append(cache[hook])
            clean.append(logits[:, self.at].float().cpu())
        self.resid, self.clean = torch.cat(resid), torch.cat(clean)  # (B, at+1, d_model), (B, V)
        self.by_hook = not hasattr(model, "blocks")
        self.direct = not self.by_hook and self._blocks_agree(self.resid[:batch_size], self.clean[:batch_size])

    def _rest(self, x: torch.Tensor, direct: bool, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (b, T, V) from the residual entering block `layer` (of graphs `rows`, for the hook path)."""
        m = self.model
        if self.by_hook:
            def put(act, hook):
                return x.to(act.dtype)
            return m.run_with_hooks(self.tokens[rows].to(self.device), fwd_hooks=[(resid_hook(self.layer), put)])
        if direct or self.layer >= m.cfg.n_layers:
            for block in m.blocks[self.layer:]:
                x = block(x)
                x = x[0] if isinstance(x, tuple) else x
            return m.unembed(m.ln_final(x))
        return m(x, start_at_layer=self.layer)

    def _blocks_agree(self, x: torch.Tensor, clean: torch.Tensor) -> bool:
        try:
            with autocast(self.device):
                got = self._rest(x, True)[:, self.at].float().cpu()
        except Exception:  # noqa: BLE001 - a bridge whose blocks need more than the residual: use the fallback
            return False
        return bool((got - clean).abs().max() <= 1e-4 * max(1.0, float(clean.abs().max())))

    @torch.no_grad()
    def logit_diff(self, decision: torch.Tensor, competitor: torch.Tensor, position, edit) -> np.ndarray:
        """Decision-minus-competitor logit at the decision position, with `edit(x_site, rows)` applied
        to the residual at (layer, position): x_site (b, d_model) for one position, (b, P, d_model)
        for a list of positions; edit=None is the clean run."""
        many = not isinstance(position, int)
        where = list(position) if many else [position]
        out = []
        for start in range(0, len(self.resid), self.batch_size):
            rows = torch.arange(start, min(start + self.batch_size, len(self.resid)))
            if edit is None or min(where) > self.at:  # an edit after the decision position cannot reach it
                logits = self.clean[rows]
            else:
                x = self.resid[start:start + len(rows)].clone()  # (b, at+1, d_model)
                if many:  # every edited position must be able to reach the decision
                    if max(where) > self.at:
                        raise ValueError(f"positions {where} run past the decision position {self.at}")
                    x[:, where] = edit(x[:, where], rows)
                else:
                    x[:, position] = edit(x[:, position], rows)
                with autocast(self.device):
                    logits = self._rest(x, self.direct, rows)[:, self.at].float().cpu()  # (b, V)
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
    site = _Site(model, objective, batch, best["layer"], batch_size)
    clean = site.logit_diff(decision, competitor, position, None)

    def add(vectors):
        v = torch.tensor(vectors * scale, dtype=torch.float32)
        return lambda x, r: x + v[r].to(x.device, x.dtype)

    def project_out(basis):
        q = torch.tensor(np.linalg.qr(basis.T)[0], dtype=torch.float32)  # (d_model, k) orthonormal
        return lambda x, r: x - (x @ q.to(x.device, x.dtype)) @ q.to(x.device, x.dtype).T

    steer = site.logit_diff(decision, competitor, position, add(dirs)) - clean
    rand_steer, rand_ablate = [], []
    for _ in range(n_random):
        r = rng.standard_normal(dirs.shape)
        r /= np.linalg.norm(r, axis=1, keepdims=True)
        rand_steer.append(site.logit_diff(decision, competitor, position, add(r)) - clean)
        rand_ablate.append(site.logit_diff(decision, competitor, position, project_out(rng.standard_normal(W.shape))) - clean)
    ablate = site.logit_diff(decision, competitor, position, project_out(W)) - clean
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
