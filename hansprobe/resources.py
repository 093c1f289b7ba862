"""Memory estimates checked before allocating, so an absurd size (`--d-model 10000000`, a config
with n_nodes 10^9, `eval -n 1000000000`) is one line saying what to shrink instead of an allocator
crash or a machine that starts swapping. The estimates are deliberately rough (within ~2x): they
only have to tell "fits" from "cannot possibly fit"."""
from __future__ import annotations

import os

import torch

from hansprobe.errors import ResourceError

FLOAT = 4  # bytes per float32 value
INT = 8  # bytes per int64 value


def available_bytes(device: str | torch.device = "cpu") -> int:
    """Memory free for new allocations on `device` (host: MemAvailable; CUDA: free device memory)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no way to tell: do not block
        return 1 << 62


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def require_memory(n_bytes: float, what: str, advice: str, device: str | torch.device = "cpu") -> None:
    """Refuse before allocating when `what` needs more than `device` has free."""
    free = available_bytes(device)
    if n_bytes > free:
        raise ResourceError(f"{what} would need about {_gib(n_bytes)} but {torch.device(device)} has {_gib(free)} "
                            f"free; {advice}")


def transformer_params(n_layers: int, d_model: int, d_mlp: int, d_vocab: int, n_ctx: int, attn_only: bool = False) -> int:
    """Parameters of a GPT-style decoder (embeddings, untied unembedding, blocks, norms)."""
    per_block = 4 * d_model * d_model + 4 * d_model + 4 * d_model  # Q, K, V, O with biases; two norms
    if not attn_only:
        per_block += 2 * d_model * d_mlp + d_mlp + d_model
    return 2 * d_vocab * d_model + d_vocab + n_ctx * d_model + n_layers * per_block + 2 * d_model


def forward_bytes(batch: int, n_ctx: int, n_layers: int, d_model: int, d_mlp: int, n_heads: int, d_vocab: int) -> int:
    """Activations of one forward pass kept for the backward (training) or a full cache (analyses)."""
    per_token = n_layers * (12 * d_model + 2 * d_mlp + 3 * n_heads * n_ctx) + 3 * d_vocab
    return FLOAT * batch * n_ctx * per_token
