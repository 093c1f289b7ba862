"""Batched forward passes the measurements share: sub-batches with progress, the log-probabilities at
every label position, and the distribution at the decision position."""
from __future__ import annotations

import torch

from hansprobe.progress import progress_iter


def chunks(batch, size: int, desc: str, progress: bool | str = False):
    """Consecutive sub-batches for batched forward passes, with progress when asked (progress_iter)."""
    return progress_iter(batch.split(size), -(-len(batch) // size), desc, progress)


@torch.no_grad()
def label_logprobs(model, objective, batch, batch_size: int = 1000, desc: str = "forced pass",
                   progress: bool | str = False) -> torch.Tensor:
    """log q(. | forced input) at every label position for every graph, batched: (B, L, V) on CPU."""
    device = next(model.parameters()).device
    return torch.cat([objective.forced_logits(model, c.to(device)).log_softmax(-1).cpu()
                      for c in chunks(batch, batch_size, desc, progress)])


@torch.no_grad()
def decision_distribution(model, objective, batch, batch_size: int = 1000,
                          progress: bool = False) -> torch.Tensor:
    """log q(. | input) at the decision position for every graph, batched: (B, V) float32 on CPU."""
    from hansprobe.fused import logits_at
    from hansprobe.objectives import autocast

    device = next(model.parameters()).device
    out = []
    for chunk in chunks(batch, batch_size, "entropy", progress):
        chunk = chunk.to(device)
        at = objective.label_slice(chunk).start + objective.decision_index(chunk.target.shape[1])  # the decision's position
        with autocast(device):  # a causal model: the input is cut after the one position read
            logits = logits_at(model, objective.inputs(chunk)[:, :at + 1], slice(at, at + 1))[:, 0].float()
        out.append(logits.log_softmax(-1).cpu())
    return torch.cat(out)
