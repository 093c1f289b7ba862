"""The training forward: the hooked model's own parameters run through fused torch ops.

Analyses need the hooked bridge (every activation is a hook), but a training step does not: the
bridge's LayerNorm, split q/k/v projections and hook points cost ~20-30% of a step on a CPU
(docs/benchmarks.md). `FusedGPT` reads the *same parameter tensors* (no copy: the optimizer, the
checkpoint and the hooked model all see one set of weights) and computes the same function with
`F.layer_norm`, one QKV matmul per layer and fused attention. Its logits agree with the bridge's
to float rounding (tests/unit/test_fused.py states the tolerance). The analyses' plain forward passes
(logits only) run it too, asking only for the positions they read (`logits_at`), unless something is
hooked on the model (`inference_view`, docs/decisions.md 49), and so do the heads analysis's
ablations, from the first ablated block (`resid_pre`, `run_from`, decision 51); what reads activations
(caches, patching) runs the bridge.

Attention: `scaled_dot_product_attention` where it is faster (CUDA, or several CPU threads); on one
CPU thread an explicit masked softmax measured faster (tests/benchmarks/bench_train.py). The choice
depends only on the device and thread count, so a run and its resume on one machine compute the same.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

ACTIVATIONS = {"gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu, "silu": F.silu}


def _native_parameters(model) -> dict[str, nn.Parameter]:
    """The bridge's parameters by layout name ("layers.0.attn.q.weight"): the bridge nests every
    original module as `_original_component`, which says nothing about the layout."""
    return {re.sub(r"(^|\.)_original_component", "", name).lstrip("."): p
            for name, p in model.original_model.named_parameters()}


class FusedGPT(nn.Module):
    """A training view of a hansprobe bridge: `FusedGPT(model)(tokens)` gives the bridge's logits.

    The bridge's unhooked module is a submodule, so `.parameters()`, DistributedDataParallel and
    the optimizer see exactly the bridge's parameters."""

    def __init__(self, model):
        super().__init__()
        cfg = model.cfg
        self.net = model.original_model
        self.n_layers, self.n_heads, self.d_head = cfg.n_layers, cfg.n_heads, cfg.d_head
        self.attn_only, self.norm, self.eps = cfg.attn_only, cfg.normalization_type, cfg.eps
        self.act = ACTIVATIONS[cfg.act_fn]
        self.p = _native_parameters(model)
        # The QKV weight is concatenated on every step (a copy of 3·d² floats, small beside the matmuls):
        # keeping a fused copy as *the* parameter would change the checkpoint layout and the bridge.
        self.qkv = [tuple([self.p[f"layers.{i}.attn.{n}.{kind}"] for n in "qkv"] for kind in ("weight", "bias"))
                    for i in range(cfg.n_layers)]  # per layer: ([wq, wk, wv], [bq, bk, bv])

    def _normalize(self, x: Tensor, name: str) -> Tensor:
        w, b = self.p.get(f"{name}.weight"), self.p.get(f"{name}.bias")
        if self.norm in ("LN", "LNPre"):
            return F.layer_norm(x, x.shape[-1:], w, b, self.eps)
        if self.norm in ("RMS", "RMSPre"):
            return F.rms_norm(x, x.shape[-1:], w, self.eps)
        return x

    def _attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:  # (B, h, T, dh) each
        if q.device.type == "cuda" or torch.get_num_threads() > 1:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        T = q.shape[-2]
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)  # (B, h, T, T)
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        return scores.masked_fill(mask, float("-inf")).softmax(-1) @ v

    def _attention_at(self, q: Tensor, k: Tensor, v: Tensor, at: Tensor) -> Tensor:
        """Causal attention for the queries at positions `at` only: q (B, h, P, dh), k and v (B, h, T, dh)."""
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)  # (B, h, P, T)
        mask = torch.arange(k.shape[-2], device=q.device)[None, :] > at[:, None]  # (P, T): keys after the query
        return scores.masked_fill(mask, float("-inf")).softmax(-1) @ v

    def _attention_after(self, q: Tensor, k: Tensor, v: Tensor, k_past: Tensor, v_past: Tensor) -> Tensor:
        """Causal attention of T new positions (q, k, v: (B, h, T, dh)) that follow S earlier ones
        (k_past, v_past: (B, h, S, dh)): one softmax over both score blocks, the earlier keys and
        values never copied (they are most of the sequence)."""
        T, S = q.shape[-2], k_past.shape[-2]
        scale = 1 / math.sqrt(self.d_head)
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        (B, h, _, dh), G = q.shape, k_past.shape[0]
        r = B // G  # rows that continue each earlier sequence (graph-major): its keys are read, not copied, r times
        past = (q.view(G, r, h, T, dh).transpose(1, 2).reshape(G, h, r * T, dh) @ k_past.transpose(-1, -2))  # (G, h, rT, S)
        past = past.view(G, h, r, T, S).transpose(1, 2).reshape(B, h, T, S)
        w = torch.cat((past * scale, (q @ k.transpose(-1, -2) * scale).masked_fill(mask, float("-inf"))), -1).softmax(-1)
        read = w[..., :S].reshape(G, r, h, T, S).transpose(1, 2).reshape(G, h, r * T, S) @ v_past  # (G, h, rT, dh)
        return read.view(G, h, r, T, dh).transpose(1, 2).reshape(B, h, T, dh) + w[..., S:] @ v

    def forward(self, tokens: Int[Tensor, "batch pos"], return_resid: bool = False, positions: slice | None = None):
        """Logits (B, T, V); with return_resid also the final normalised residual (B, T, d_model), the
        bridge's `unembed.hook_in`, which the multi-token heads read. `positions`: the logits at
        those positions only, (B, P, V) — the last block then runs only there (its keys and values
        still at every position), which is all a causal model's logits there depend on."""
        return self.run_from(0, self.embed(tokens), return_resid, positions)

    def embed(self, tokens: Int[Tensor, "batch pos"], start: int = 0) -> Float[Tensor, "batch pos d_model"]:
        """Token plus positional embedding of `tokens` at positions start.. ."""
        return F.embedding(tokens, self.p["tok_embed.weight"]) + self.p["pos.weight"][start:start + tokens.shape[1]]

    def unembed(self, x: Float[Tensor, "batch pos d_model"]) -> tuple[Tensor, Tensor]:
        """(logits (B, T, V), the final normalised residual) from the last block's output."""
        x = self._normalize(x, "ln_out")
        return F.linear(x, self.p["head.weight"], self.p.get("head.bias")), x

    def resid_pre(self, tokens: Int[Tensor, "batch pos"]) -> list[Tensor]:
        """The residual entering each block, [n_layers] of (B, T, d_model): the bridge's
        `blocks.{i}.hook_resid_pre`, from which `run_from` resumes."""
        out = [self.embed(tokens)]
        for i in range(self.n_layers - 1):  # the last block's output enters no block
            out.append(self._block(i, out[-1]))
        return out

    def run_from(self, first: int, x: Float[Tensor, "batch pos d_model"], return_resid: bool = False,
                 positions: slice | None = None, replace_z: dict | None = None):
        """Blocks `first`.. on the residual `x` entering block `first`, then the unembedding (see
        `forward`). `replace_z`: {layer: (heads, values)} sets those heads' outputs before the output
        projection (the bridge's `hook_z`) to `values` (T, n_heads, d_head) at every graph, or to
        zero when `values` is None: mean and zero ablation. The blocks before `first` do not see it."""
        at = None if positions is None else torch.arange(x.shape[1], device=x.device)[positions]  # (P,)
        for i in range(first, self.n_layers):
            x = self._block(i, x, at if i == self.n_layers - 1 else None, (replace_z or {}).get(i))
        logits, x = self.unembed(x)  # (B, T, V)
        return (logits, x) if return_resid else logits

    def keys_values(self, tokens: Int[Tensor, "batch pos"]) -> list[tuple[Tensor, Tensor]]:
        """Each block's attention keys and values at every position of `tokens`, [n_layers] of
        ((B, h, T, dh), (B, h, T, dh)): what `extend` continues from."""
        x, kv = self.embed(tokens), []
        for i in range(self.n_layers - 1):
            x = self._block(i, x, keep=kv)
        kv.append(self._qkv(self.n_layers - 1, x)[1:])  # the last block: only its keys and values are read
        return kv

    def extend(self, kv: list[tuple[Tensor, Tensor]], tokens: Int[Tensor, "batch new"] | None = None, *,
               start: int | None = None, resid: Tensor | None = None, first: int = 0,
               keep_resid: list | None = None) -> Float[Tensor, "batch new vocab"]:
        """The logits at `tokens`' positions when they follow positions 0..start-1, whose keys and
        values `kv` holds (`keys_values`; `start` defaults to all of them): the same function as the
        whole forward at those positions, since a causal model's positions read only earlier keys
        and values. Running only the positions that changed is what makes greedy decoding and
        single-token swaps cheap. `kv` may hold G sequences for B = r x G rows of `tokens` (graph-major:
        rows g*r .. g*r+r-1 continue sequence g), read without copying them. `resid` (B, new, d_model) with `first`: start instead from that
        residual entering block `first` (a patched `hook_resid_pre`); `keep_resid`: a list to append
        the residual entering each block to."""
        start = kv[0][0].shape[2] if start is None else start
        x = resid if resid is not None else self.embed(tokens, start)
        for i in range(first, self.n_layers):
            if keep_resid is not None:
                keep_resid.append(x)
            x = self._block(i, x, past=(kv[i][0][:, :, :start], kv[i][1][:, :, :start]))
        return self.unembed(x)[0]

    def _qkv(self, i: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        (B, T, _), (weights, biases) = x.shape, self.qkv[i]
        qkv = F.linear(self._normalize(x, f"layers.{i}.ln1"), torch.cat(weights), torch.cat(biases))
        return tuple(qkv.view(B, T, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4))  # (B, h, T, dh) each

    def _block(self, i: int, x: Tensor, at: Tensor | None = None, replace: tuple | None = None,
               past: tuple[Tensor, Tensor] | None = None, keep: list | None = None) -> Tensor:
        """Block i on x (B, T, d_model); `at`: the queries at those positions only (returns (B, P, d_model));
        `past`: the keys and values of S earlier positions, x being positions S..S+T-1; `keep`: a list
        to append this block's keys and values to."""
        p, (B, T, d) = self.p, x.shape
        q, k, v = self._qkv(i, x)
        if keep is not None:
            keep.append((k, v))
        if past is not None:  # x continues the positions whose keys and values are `past`
            z = self._attention_after(q, k, v, *past)  # (B, h, T, dh)
        elif at is not None:  # the last block at the asked positions only
            x = x[:, at]  # (B, P, d_model)
            z = self._attention_at(q[:, :, at], k, v, at)  # (B, h, P, dh)
        else:
            z = self._attention(q, k, v)  # (B, h, T, dh)
        if replace is not None:
            heads, values = replace
            rows = slice(0, T) if at is None else at
            z[:, heads] = 0.0 if values is None else values[rows][:, heads].transpose(0, 1).to(z.dtype)  # (h', T', dh)
        a = z.transpose(1, 2).reshape(B, z.shape[2], d)  # (B, T', d_model)
        x = x + F.linear(a, p[f"layers.{i}.attn.o.weight"], p[f"layers.{i}.attn.o.bias"])
        if not self.attn_only:
            h = F.linear(self._normalize(x, f"layers.{i}.ln2"), p[f"layers.{i}.mlp.fc_in.weight"],
                         p[f"layers.{i}.mlp.fc_in.bias"])  # (B, T', d_mlp)
            x = x + F.linear(self.act(h), p[f"layers.{i}.mlp.fc_out.weight"], p[f"layers.{i}.mlp.fc_out.bias"])
        return x


def training_view(model):
    """The module a training step runs: FusedGPT over the bridge's parameters when its layout is the
    one hansprobe builds, else the bridge itself (e.g. a test double without `original_model`)."""
    if not hasattr(model, "original_model"):
        return model
    try:
        return FusedGPT(model)
    except (KeyError, AttributeError):  # a layout this file does not know: the (slower) bridge is still right
        return model


def has_forward_hooks(model) -> bool:
    """Whether a forward hook sits on the model, any of its modules, or torch's global hooks. A
    TransformerLens hook (`model.hooks(...)`, `add_hook`, `run_with_hooks`, `run_with_cache`) is a
    torch forward hook on a HookPoint, so this sees those too. Left out: the bridge's own wiring,
    pre-hooks that TransformerLens's blocks install on their LayerNorms after a hooked run and keep
    (they pass the input to the HookPoints and change nothing unless one of those is hooked), and
    the output-capturing hooks transformers installs on its layers on a first cached run (they
    record outputs, change none)."""
    from torch.nn.modules import module as _module

    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return True
    for m in model.modules():
        hooks = [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
        if hooks and (type(m).__name__ == "HookPoint" or any(
                not getattr(h, "__module__", "").startswith(("transformer_lens.", "transformers.")) for h in hooks)):
            return True
    return False


def logits_at(model, tokens: Int[Tensor, "batch pos"], positions: slice, net=None) -> Float[Tensor, "batch P vocab"]:
    """The model's logits at `positions` (a slice of the sequence): through the fused forward, which
    then runs the last block at those positions only, when nothing is hooked on the model
    (`inference_view`); else the model's own full forward, sliced, so that its hooks apply. `net`:
    the view to run instead (the dynamics' training gradients take `training_view` whatever is hooked)."""
    net = inference_view(model) if net is None else net
    if isinstance(net, FusedGPT):
        return net(tokens, positions=positions)
    return output_logits(net(tokens))[:, positions]


def output_logits(out) -> Tensor:
    """A forward's logits, whether the module returns them or an output object that holds them
    (a bridge over a transformers module returns the latter)."""
    return getattr(out, "logits", out)


def inference_view(model):
    """The module a plain forward pass (logits only, no hook of the caller's) runs: the fused
    forward over the model's own parameters (the bridge's logits to float rounding, ~1.35x faster
    on a CPU at the reference size) when nothing is hooked on the model, else the model itself, so
    that hooks a user put on it (`with model.hooks(...)`) still apply, as do an analysis's own
    ablation and patching hooks (docs/decisions.md 49)."""
    if not isinstance(model, nn.Module) or has_forward_hooks(model):
        return model
    return training_view(model)
