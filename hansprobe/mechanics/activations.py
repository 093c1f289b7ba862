"""Residual-stream activations at chosen layers x positions, collected in batches with a names
filter so only the asked-for hooks are cached and only the asked-for positions are kept.

Layer index k in 0..n_layers: 0 is the embeddings (`blocks.0.hook_resid_pre`), k >= 1 the output
of block k-1 (`blocks.{k-1}.hook_resid_post`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hansprobe.mechanics.forward import chunks
from hansprobe.errors import ConfigError
from hansprobe.objectives import Objective, autocast
from hansprobe.tasks.base import Batch, prompt_positions


def resid_hook(layer: int) -> str:
    return "blocks.0.hook_resid_pre" if layer == 0 else f"blocks.{layer - 1}.hook_resid_post"


def position_names(batch: Batch) -> dict[str, int]:
    """Named input positions: the prompt tail (`start`, `goal`, `=`) and the answer slots `a0`.. (the
    input position holding label j, which predicts label j+1)."""
    p = batch.prefix.shape[1]
    names = prompt_positions(batch)
    names.update({f"a{j}": p + j for j in range(batch.target.shape[1] - 1)})
    return names


def resolve_positions(batch: Batch, positions) -> list[int]:
    """Positions given as ints or names ("goal", "=", "a0", "all", "answer"); checked against the input length."""
    t = batch.prefix.shape[1] + batch.target.shape[1] - 1
    names = position_names(batch)
    if positions is None:
        positions = ["start", "goal", "=", *[k for k in names if k.startswith("a")]]
    out = []
    for pos in positions:
        if pos == "all":
            out.extend(range(t))
        elif isinstance(pos, str) and pos in names:
            out.append(names[pos])
        else:
            try:
                i = int(pos)
            except (TypeError, ValueError):
                raise ConfigError(f"unknown position {pos!r}; use 0..{t - 1}, all, or one of {', '.join(names)}") from None
            if not 0 <= i < t:
                raise ConfigError(f"position {i} does not exist: inputs have {t} positions (0..{t - 1})")
            out.append(i)
    return sorted(set(out))


def resolve_layers(model, layers) -> list[int]:
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n + 1))
    for layer in layers:
        if not 0 <= int(layer) <= n:
            raise ConfigError(f"layer {layer} does not exist: residual layers are 0 (embeddings) .. {n}")
    return sorted(set(int(x) for x in layers))


@dataclass
class Activations:
    acts: np.ndarray  # (B, n_layers_asked, n_positions, d_model) float32
    layers: list[int]
    positions: list[int]
    graph_ids: np.ndarray  # (B,) the graph each row came from (for grouped folds)


@torch.no_grad()
def collect_residuals(model, objective: Objective, batch: Batch, layers=None, positions=None,
                      batch_size: int = 500, progress: bool = False) -> Activations:
    layers = resolve_layers(model, layers)
    positions = resolve_positions(batch, positions)
    device = next(model.parameters()).device
    names = {resid_hook(layer) for layer in layers}
    pos = torch.tensor(positions, device=device)
    out = []
    for chunk in chunks(batch, batch_size, "activations", progress):
        with autocast(device):
            _, cache = model.run_with_cache(objective.inputs(chunk.to(device)), names_filter=lambda n: n in names)
        out.append(torch.stack([cache[resid_hook(layer)][:, pos].float() for layer in layers], 1).cpu().numpy())
    return Activations(np.concatenate(out), layers, positions, np.arange(len(batch)))
