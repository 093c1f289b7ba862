"""`hansprobe import FILE --format ntf --base-model DIR`: a state dict that Next-Token-Failures'
`finetune.py` saved (`torch.save(model.state_dict(), ...)` of its own GPT or Pythia class, built from
the Hugging Face GPT-2 or Pythia weights), read with the base model's directory for the config and
the tokenizer (it read the task as text through that tokenizer).

- GPT-2 fine-tunes (its GPT class): the layout `--format ntf` already reads (`interop.ntf_to_gpt2`),
  with the head count from the base config.
- Pythia fine-tunes (its Pythia class): mapped back to a `GPTNeoXForCausalLM` (`ntf_pythia_to_neox`),
  built as the model that repository ran, which is not quite the base model's own forward: its MLP
  uses the tanh GELU (`hidden_act` "gelu_new"), and its rotary embedding covers `rope_dim` = 16 dims
  of each head, the default of its `PythiaConfig` (computed once from 768 / 12), which equals
  Pythia's own 0.25 x head_dim at head_dim 64 (70m, 160m, 410m, 1.4b) but not for pythia-1b
  (`rotary_pct` is set to 16 / head_dim). docs/decisions.md 67.

The parity reference is an independent forward of the source file's own layout
(`gpt2_reference.from_ntf` / `from_ntf_pythia`) on the text the model reads; the checkpoint is an
"hf-causal-lm" text-format import (causal_lm.py, text_model.py).
"""
from __future__ import annotations

from pathlib import Path

import torch

from hansprobe import causal_lm, gpt2_reference
from hansprobe.errors import CheckpointError, ConfigError
from hansprobe.interop import (_convert, _ln, _matrix, _n_layers, _require, check_hf_config, hf_config_dict,
                               load_gpt2_weights, new_gpt2, ntf_block, ntf_to_gpt2, read_state_dict, write_causal_lm_import)
from hansprobe.storage import check_run_dir

NTF_ROPE_DIM = 16  # Next-Token-Failures' PythiaConfig.rope_dim default: int(0.25 * 768 // 12)


def _interleave_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_heads: int) -> torch.Tensor:
    """GPT-NeoX's fused query_key_value lays each head's q, k and v rows side by side: (3d, ...) as
    (H, 3, dh, ...)."""
    d = q.shape[0]
    parts = [t.reshape(n_heads, d // n_heads, *t.shape[1:]) for t in (q, k, v)]
    return torch.stack(parts, 1).reshape(3 * d, *q.shape[1:])


def ntf_pythia_to_neox(sd: dict, base: dict) -> tuple[dict, dict]:
    """(GPTNeoX config dict, GPTNeoXForCausalLM state dict) of a Next-Token-Failures Pythia state dict."""
    what = "Next-Token-Failures Pythia"
    _require(sd, ["embed_tokens.weight", "lm_head.weight", "final_layernorm.weight"], what)
    vocab, d = _matrix(sd, "embed_tokens.weight", what).shape
    heads = causal_lm.config_size(base, "num_attention_heads")
    if d % heads or (d // heads) < NTF_ROPE_DIM:
        raise ConfigError(f"the base config's {heads} heads do not divide the state dict's width {d}; give the base "
                          "model the fine-tune started from")
    n_layer = _n_layers(sd, r"layers\.(\d+)\.")
    dropped = ("_name_or_path", "transformers_version", "rotary_pct", "rotary_emb_base", "rope_theta", "rope_scaling")
    hf = {**{k: v for k, v in base.items() if k not in dropped},
          "vocab_size": vocab, "hidden_size": d, "num_hidden_layers": n_layer, "intermediate_size": 4 * d,
          "hidden_act": "gelu_new", "use_parallel_residual": True, "tie_word_embeddings": False, "layer_norm_eps": 1e-5,
          "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                              "partial_rotary_factor": NTF_ROPE_DIM / (d // heads)}}
    out = {"gpt_neox.embed_in.weight": sd["embed_tokens.weight"], "lm_head.weight": sd["lm_head.weight"]}
    out["gpt_neox.final_layer_norm.weight"], out["gpt_neox.final_layer_norm.bias"] = _ln(sd, "final_layernorm", d)
    for i in range(n_layer):
        t, parts = f"gpt_neox.layers.{i}", ntf_block(sd, i, d, what)
        out[f"{t}.input_layernorm.weight"], out[f"{t}.input_layernorm.bias"] = parts["ln_1"]
        out[f"{t}.post_attention_layernorm.weight"], out[f"{t}.post_attention_layernorm.bias"] = parts["ln_2"]
        for j, suffix in enumerate(("weight", "bias")):
            qkv = (parts[n][j] for n in ("queries", "keys", "values"))
            out[f"{t}.attention.query_key_value.{suffix}"] = _interleave_qkv(*qkv, heads)
        for src, dst in (("attn.proj", "attention.dense"), ("mlp.expand", "mlp.dense_h_to_4h"),
                         ("mlp.proj", "mlp.dense_4h_to_h")):
            out[f"{t}.{dst}.weight"], out[f"{t}.{dst}.bias"] = parts[src]  # nn.Linear both sides: (out, in)
    return hf, out


def import_finetuned(src: str | Path, base_model: str | Path, out: str | Path, task, objective, fmt: str = "ntf",
                     n_heads: int | None = None, overwrite: bool = False) -> dict:
    """Read the fine-tune `src` with its base model's directory, check it, write the checkpoint `out`."""
    src, base_model, out = Path(src), Path(base_model), Path(out)
    if fmt != "ntf":
        raise ConfigError(f"--base-model goes with --format ntf (a Next-Token-Failures fine-tune); --format {fmt} "
                          "reads its config and tokenizer from the source directory")
    if n_heads is not None:
        raise ConfigError("--n-heads is read from the base model's config.json; drop it")
    if objective.extra_heads:
        raise ConfigError(f"--objective {objective.name}: a Next-Token-Failures fine-tune has no extra output heads")
    check_run_dir(out, overwrite)  # new, empty, or with --overwrite a checkpoint this tool wrote
    if not causal_lm.has_tokenizer(base_model):
        raise ConfigError(f"--base-model {base_model} has no tokenizer.json: the fine-tune read the task through the "
                          "base model's tokenizer; save it there with tokenizer.save_pretrained")
    hf, reference = read_finetuned(src, base_model)
    return write_causal_lm_import(hf, lambda tokens: gpt2_reference.logits(reference, tokens),
                                  "an independent plain-torch forward of the source file's layout (gpt2_reference)",
                                  src, base_model, out, task, objective, "ntf", overwrite)


def read_finetuned(src: Path, base_dir: Path) -> tuple[object, object]:
    """(the transformers module with the fine-tuned weights, the parity reference's weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    base = causal_lm.read_pretrained_config(base_dir, "AutoModelForCausalLM", causal_lm.check_causal_lm_config)
    kind = base.get("model_type")
    if kind not in ("gpt2", "gpt_neox"):
        raise ConfigError(f"--base-model {base_dir} is a {kind!r} model; Next-Token-Failures fine-tunes GPT-2 and Pythia "
                          "(gpt2, gpt_neox) only")
    sd = read_state_dict(src)
    if kind == "gpt2":
        heads = causal_lm.config_size(base, "n_head", "num_attention_heads")
        cfg, converted = _convert(ntf_to_gpt2, sd, heads, "ntf")
        model = new_gpt2(check_hf_config(hf_config_dict(cfg)))
        load_gpt2_weights(model, converted, src)
        return model, gpt2_reference.from_ntf(sd, heads)
    if "pos_encoding.weight" in sd:
        raise CheckpointError(f"{src} holds learned positions (a GPT), but --base-model is a Pythia; give the base "
                              "model the fine-tune started from")
    hf, converted = _convert(lambda s, _: ntf_pythia_to_neox(s, base), sd, None, "Next-Token-Failures Pythia")
    causal_lm.offline()
    fields = {k: v for k, v in hf.items() if k not in ("model_type", "architectures")}
    config = AutoConfig.for_model("gpt_neox", **fields)
    config.architectures = ["GPTNeoXForCausalLM"]
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    causal_lm.load_causal_lm_weights(model, converted, src)
    return model, gpt2_reference.from_ntf_pythia(sd, hf["num_attention_heads"], NTF_ROPE_DIM)
