"""An independent forward pass of a pre-LayerNorm GPT-2, written in plain torch from the weights
*as the source file lays them out*, used only as the parity reference of `hansprobe import`.

Why: the imported model is the source's weights converted into a Hugging Face GPT-2 and bridged by
TransformerLens. Comparing the bridge with that same GPT-2 module only checks the bridge (it once
"matched within 2e-7" a model that had 46 random blocks). This forward reads each source layout
directly (nanoGPT: nn.Linear (out, in) weights; Next-Token-Failures: separate q/k/v Linears; Hugging
Face: Conv1D (in, out) weights) and shares no code with the conversion, so a wrong transpose, a
swapped q/k, a missing block or the wrong GELU shows up as a logit difference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

GELUS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}  # HF name -> F.gelu approximate
ACTIVATIONS = (*GELUS, "relu")


@dataclass
class Layer:
    """One block in (in, out) matrix form: y = x @ w + b."""

    ln1: tuple[Tensor, Tensor | None]
    q: tuple[Tensor, Tensor | None]
    k: tuple[Tensor, Tensor | None]
    v: tuple[Tensor, Tensor | None]
    o: tuple[Tensor, Tensor | None]
    ln2: tuple[Tensor, Tensor | None]
    fc: tuple[Tensor, Tensor | None]
    proj: tuple[Tensor, Tensor | None]


@dataclass
class Weights:
    wte: Tensor  # (V, d)
    wpe: Tensor | None  # (C, d); None with rotary positions
    layers: list[Layer]
    ln_f: tuple[Tensor, Tensor | None]
    n_heads: int
    activation: str
    eps: float = 1e-5
    head: Tensor | None = None  # (V, d) an untied output head; None: tied to wte
    rope_dim: int = 0  # rotary on the first rope_dim dims of each head (rotate-half form, base 10000)
    parallel: bool = False  # x + attn(ln1(x)) + mlp(ln2(x)) (GPT-NeoX / Pythia) instead of sequential


def _get(sd: dict, key: str, required: bool = True) -> Tensor | None:
    if key not in sd:
        if required:
            raise KeyError(key)
        return None
    return sd[key].float()


def _count(sd: dict, prefix: str) -> int:
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in sd):
        n += 1
    return n


def from_nanogpt(sd: dict, n_heads: int) -> Weights:
    """nanoGPT: transformer.h.N.attn.c_attn is one nn.Linear (3d, d) holding q, k, v stacked."""
    d = sd["transformer.wte.weight"].shape[1]
    layers = []
    for i in range(_count(sd, "transformer.h.")):
        p = f"transformer.h.{i}."
        w, b = _get(sd, p + "attn.c_attn.weight"), _get(sd, p + "attn.c_attn.bias", False)
        lin = lambda name: (_get(sd, p + name + ".weight").T, _get(sd, p + name + ".bias", False))  # noqa: E731
        layers.append(Layer(
            ln1=(_get(sd, p + "ln_1.weight"), _get(sd, p + "ln_1.bias", False)),
            q=(w[:d].T, None if b is None else b[:d]), k=(w[d:2 * d].T, None if b is None else b[d:2 * d]),
            v=(w[2 * d:].T, None if b is None else b[2 * d:]), o=lin("attn.c_proj"),
            ln2=(_get(sd, p + "ln_2.weight"), _get(sd, p + "ln_2.bias", False)),
            fc=lin("mlp.c_fc"), proj=lin("mlp.c_proj")))
    return Weights(_get(sd, "transformer.wte.weight"), _get(sd, "transformer.wpe.weight"), layers,
                   (_get(sd, "transformer.ln_f.weight"), _get(sd, "transformer.ln_f.bias", False)), n_heads, "gelu")


def from_ntf(sd: dict, n_heads: int) -> Weights:
    """Next-Token-Failures GPT: layers.N.attn.{queries,keys,values}_linear are separate nn.Linears."""
    layers = []
    for i in range(_count(sd, "layers.")):
        p = f"layers.{i}."
        lin = lambda name: (_get(sd, p + name + ".weight").T, _get(sd, p + name + ".bias", False))  # noqa: E731
        layers.append(Layer(
            ln1=(_get(sd, p + "ln_1.weight"), _get(sd, p + "ln_1.bias", False)),
            q=lin("attn.queries_linear"), k=lin("attn.keys_linear"), v=lin("attn.values_linear"), o=lin("attn.proj"),
            ln2=(_get(sd, p + "ln_2.weight"), _get(sd, p + "ln_2.bias", False)),
            fc=lin("mlp.expand"), proj=lin("mlp.proj")))
    return Weights(_get(sd, "embed_tokens.weight"), _get(sd, "pos_encoding.weight"), layers,
                   (_get(sd, "final_layernorm.weight"), _get(sd, "final_layernorm.bias", False)), n_heads, "gelu_new")


def from_ntf_pythia(sd: dict, n_heads: int, rope_dim: int) -> Weights:
    """Next-Token-Failures Pythia (its finetune.py with --model pythia-*): the GPT layout without
    learned positions, an untied lm_head, rotary q/k on `rope_dim` dims, parallel attention and MLP
    (its Block: x + attn(ln_1(x)) + mlp(ln_2(x))), tanh GELU."""
    w = from_ntf({**sd, "pos_encoding.weight": torch.zeros(0)}, n_heads)
    w.wpe, w.head, w.rope_dim, w.parallel = None, _get(sd, "lm_head.weight"), rope_dim, True
    return w


def from_hf(sd: dict, hf_config: dict) -> Weights:
    """Hugging Face GPT2LMHeadModel: Conv1D weights are already (in, out); c_attn is (d, 3d)."""
    d = hf_config["n_embd"]
    layers = []
    for i in range(hf_config["n_layer"]):  # as many blocks as the config says: a missing one is a KeyError
        p = f"transformer.h.{i}."
        w, b = _get(sd, p + "attn.c_attn.weight"), _get(sd, p + "attn.c_attn.bias")
        conv = lambda name: (_get(sd, p + name + ".weight"), _get(sd, p + name + ".bias"))  # noqa: E731
        layers.append(Layer(
            ln1=conv("ln_1"), q=(w[:, :d], b[:d]), k=(w[:, d:2 * d], b[d:2 * d]), v=(w[:, 2 * d:], b[2 * d:]),
            o=conv("attn.c_proj"), ln2=conv("ln_2"), fc=conv("mlp.c_fc"), proj=conv("mlp.c_proj")))
    return Weights(_get(sd, "transformer.wte.weight"), _get(sd, "transformer.wpe.weight"), layers,
                   (_get(sd, "transformer.ln_f.weight"), _get(sd, "transformer.ln_f.bias")), hf_config["n_head"],
                   hf_config["activation_function"], float(hf_config.get("layer_norm_epsilon", 1e-5)))


def _affine(x: Tensor, wb: tuple[Tensor, Tensor | None]) -> Tensor:
    w, b = wb
    return x @ w if b is None else x @ w + b


def _norm(x: Tensor, wb: tuple[Tensor, Tensor | None], eps: float) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], wb[0], wb[1], eps)


@torch.no_grad()
def logits(w: Weights, tokens: Int[Tensor, "B T"]) -> Float[Tensor, "B T V"]:
    """Causal pre-LN GPT-2 with a head tied to the token embedding, in float32."""
    b, t = tokens.shape
    x = w.wte[tokens] + (w.wpe[:t] if w.wpe is not None else 0)  # (B, T, d)
    d = x.shape[-1]
    dh = d // w.n_heads
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    for layer in w.layers:
        h = _norm(x, layer.ln1, w.eps)
        q, k, v = (_affine(h, wb).view(b, t, w.n_heads, dh).transpose(1, 2) for wb in (layer.q, layer.k, layer.v))
        if w.rope_dim:
            q, k = _rotary(q, w.rope_dim), _rotary(k, w.rope_dim)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)  # (B, H, T, T)
        att = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        attn = _affine((att @ v).transpose(1, 2).reshape(b, t, d), layer.o)
        h = _affine(_norm(x if w.parallel else x + attn, layer.ln2, w.eps), layer.fc)
        h = F.relu(h) if w.activation == "relu" else F.gelu(h, approximate=GELUS[w.activation])
        x = x + attn + _affine(h, layer.proj)
    return _norm(x, w.ln_f, w.eps) @ (w.head if w.head is not None else w.wte).T


def _rotary(x: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """Rotary positions on the first `dim` dims of each head (B, H, T, dh), in rotate-half form:
    pairs (i, i + dim/2) turn by position x base^(-2i/dim)."""
    t = x.shape[2]
    inv = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim/2,)
    ang = torch.arange(t, dtype=torch.float32)[:, None] * inv[None]  # (T, dim/2)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)  # (T, dim)
    rot, keep = x[..., :dim], x[..., dim:]
    half = torch.cat([-rot[..., dim // 2:], rot[..., : dim // 2]], -1)
    return torch.cat([rot * cos + half * sin, keep], -1)
