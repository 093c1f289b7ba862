"""A small documented config turned into a TransformerLens 4 native bridge.

TransformerLens 4 removed `HookedTransformer`; a model built from scratch is now
`TransformerBridge.boot_native(TransformerBridgeConfig(...))`. It keeps the familiar hook names
(`blocks.0.attn.hook_pattern`, `blocks.1.hook_resid_post`, ...), `run_with_cache`, `hooks()` and
works with `transformer_lens.patching`. This module depends on nothing else in hansprobe.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch

from hansprobe.errors import ConfigError
from hansprobe.options import option
from hansprobe.resources import require_memory, transformer_params
from hansprobe.validation import check_bool, check_choice, check_int, check_mapping

ACT_FNS = ("gelu", "gelu_new", "relu", "silu")
NORMALIZATIONS = ("LN", "LNPre", "RMS", "RMSPre", None)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelConfig:
    """Shape of the transformer. The vocabulary and context come from the task, not from here.

    n_layers: transformer blocks.   d_model: residual width.   n_heads: heads per layer
    (d_head = d_model / n_heads).   d_mlp: MLP width, default 4 * d_model.   act_fn: MLP
    activation ("gelu", "gelu_new", "relu", "silu").   attn_only: no MLPs (then there is no
    `hook_resid_mid`).   normalization: "LN", "LNPre", "RMS" or None."""

    n_layers: int = option("transformer blocks", "positive", 2)
    d_model: int = option("residual width", "positive", 128)
    n_heads: int = option("attention heads per block (d_head = d_model / n_heads)", "positive", 4)
    d_mlp: int | None = option("MLP width (default 4 * d_model)", "positive", None)
    act_fn: str = option("MLP activation", "text", "gelu", choices=ACT_FNS)
    attn_only: bool = option("no MLPs (then there is no hook_resid_mid)", "flag", False)
    normalization: str | None = "LN"

    def __post_init__(self):
        # Checked here, not only in the CLI: configs also come from files that may be damaged or edited.
        for name in ("n_layers", "d_model", "n_heads"):
            check_int(f"model {name}", getattr(self, name), 1)
        if self.d_mlp is not None:
            check_int("model d_mlp", self.d_mlp, 1)
        check_choice("model act_fn", self.act_fn, ACT_FNS)
        check_bool("model attn_only", self.attn_only)
        check_choice("model normalization", self.normalization, NORMALIZATIONS)
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.d_mlp is None:
            self.d_mlp = 4 * self.d_model

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        check_mapping("model", d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def resolve_device(device: str | torch.device) -> torch.device:
    """A device that exists here, or a one-line error saying what to use instead."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but CUDA is not available on this machine; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported; use cpu or cuda")
    return dev


def bridge_config(cfg: ModelConfig, d_vocab: int, n_ctx: int, seed: int):
    from transformer_lens import TransformerBridgeConfig

    return TransformerBridgeConfig(
        d_model=cfg.d_model,
        d_head=cfg.d_head,
        n_layers=cfg.n_layers,
        n_ctx=n_ctx,
        n_heads=cfg.n_heads,
        d_vocab=d_vocab,
        d_mlp=cfg.d_mlp,
        act_fn=cfg.act_fn,
        attn_only=cfg.attn_only,
        normalization_type=cfg.normalization,
        positional_embedding_type="standard",
        tokenizer_prepends_bos=False,  # our inputs are integer tokens, never text
        seed=seed,
        model_name="hansprobe",
    )


def build_model(cfg: ModelConfig, d_vocab: int, n_ctx: int, seed: int,
                device: str | torch.device, dtype: torch.dtype = torch.float32):
    """A freshly initialised hooked model (seeded), on an explicit device and dtype, in eval mode.

    The bridge boots in train mode and `transformer_lens.patching` refuses such models; the
    trainer switches to `.train()` itself. (There is no dropout, so the modes compute the same.)"""
    from transformer_lens.model_bridge import TransformerBridge

    if device is None:
        raise ConfigError("build_model needs an explicit device (TransformerLens would silently pick CUDA)")
    n_params = transformer_params(cfg.n_layers, cfg.d_model, cfg.d_mlp, d_vocab, n_ctx, cfg.attn_only)
    require_memory(n_params * torch.finfo(dtype).bits // 8, f"a model of {n_params:,} parameters",
                   "choose a smaller --d-model, --d-mlp or --n-layers, or a task with fewer nodes (the vocabulary) "
                   "and a shorter prompt (the context)", device)
    model = TransformerBridge.boot_native(
        bridge_config(cfg, d_vocab, n_ctx, seed), device=torch.device(device), dtype=dtype
    )
    return model.eval()
