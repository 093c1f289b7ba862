"""The multi-token objective's extra output heads: k linear maps from the final (normalised) residual
stream to the vocabulary, head j predicting r_(i+j+1) where the main head predicts r_i.

A documented addition to the hooked model, kept outside it: the TransformerLens model and its hook
names are unchanged, every analysis reads the main head, and the extra heads are trained beside it
(their weights in `extra_heads.safetensors`, their AdamW state in the resume file). They read
`unembed.hook_in`, the residual the main unembedding reads.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from hansprobe.fused import FusedGPT

EXTRA_HEADS = "extra_heads.safetensors"
HOOK = "unembed.hook_in"  # (B, T, d_model): the final normalised residual


class ExtraHeads(torch.nn.Module):
    """k unembedding matrices (d_model -> d_vocab, no bias), seeded like the model's own init."""

    def __init__(self, k: int, d_model: int, d_vocab: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(k, d_model, d_vocab, generator=g) / d_model ** 0.5)  # (k, d, V)

    def forward(self, resid: Float[Tensor, "B T D"]) -> Float[Tensor, "K B T V"]:
        return torch.einsum("btd,kdv->kbtv", resid, self.weight.to(resid.dtype))


def forward_with_resid(model, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """(logits, final residual) from one forward pass: the residual is captured at HOOK."""
    seen = {}

    def keep(resid, hook):
        seen["resid"] = resid
    with model.hooks(fwd_hooks=[(HOOK, keep)]):
        logits = model(tokens)
    return logits, seen["resid"]


class MultiTokenNet(torch.nn.Module):
    """The multi-token objective's training module: the model's training forward and the extra heads
    in one forward, so that DistributedDataParallel sees every parameter used (torchrun).

    `net` is the fused training view (hansprobe/fused.py) or the hooked model itself."""

    def __init__(self, net, heads: ExtraHeads):
        super().__init__()
        self.net, self.heads = net, heads

    def forward(self, tokens: Tensor, first: int, length: int) -> tuple[Tensor, Tensor]:
        """(logits (B, T, V), the extra heads' logits (k, B, length, V) at positions first..first+length-1)."""
        if isinstance(self.net, FusedGPT):
            logits, resid = self.net(tokens, return_resid=True)
        else:
            logits, resid = forward_with_resid(self.net, tokens)
        return logits, self.heads(resid[:, first:first + length])


def extra_loss(heads: ExtraHeads, resid: Tensor, labels: Tensor, first: int) -> Tensor:
    """Sum over heads j = 1..k of the cross-entropy of predicting label i+j at the position that
    predicts label i (positions first .. first+L-1-j); a head with nothing left to predict adds 0."""
    return extra_logits_loss(heads(resid[:, first:first + labels.shape[1]]), labels)


def extra_logits_loss(logits: Float[Tensor, "K B L V"], labels: Tensor) -> Tensor:
    """`extra_loss` from the heads' logits at the label positions (what MultiTokenNet returns)."""
    length = labels.shape[1]
    total = logits.new_zeros((), dtype=torch.float32)
    for j in range(1, logits.shape[0] + 1):
        if j >= length:
            break
        scored = logits[j - 1, :, : length - j].float()  # positions predicting labels 0..L-1-j
        total = total + F.cross_entropy(scored.reshape(-1, scored.shape[-1]), labels[:, j:].reshape(-1))
    return total
