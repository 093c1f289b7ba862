"""`hansprobe train --base-model DIR`: fine-tune a local pretrained causal LM on the task as text.

The base model is a `save_pretrained` directory (config.json, model.safetensors, tokenizer.json)
read as `hansprobe import --format hf` reads one (causal_lm.py: local files only, no remote code,
strict weights). It reads the task through its own tokenizer (`TextTokens`, checked once) and is
trained through `TextFormatModel.text_loss`: cross-entropy over its whole vocabulary on the text
answer, the commas between answer nodes included, as Next-Token-Failures' `finetune.py` trains.
The run directory is a hansprobe checkpoint of architecture "hf-causal-lm" like an import: weights
under transformers' names (`TextFormatModel.checkpoint_tensors`, not the bridge's), the table in
config.json and the tokenizer copied beside the weights, so every analysis loads it as it loads an
imported text-format model. Resume files hold the bridge's own parameter names (they are read back
into the same module) and continue bit-identically on CPU.

The multi-token objective's extra heads (hansprobe/multitoken.py) span the tokenizer's vocabulary and
read the final normalised hidden state at the answer nodes' sites (docs/decisions.md 70); they are
stored beside the weights as for a model trained from scratch, and every analysis reads the main head.
Not yet: data-parallel runs (torchrun) on a base model.
"""
from __future__ import annotations

from pathlib import Path

from hansprobe import causal_lm
from hansprobe.errors import ConfigError
from hansprobe.resources import FLOAT, forward_bytes, require_memory, transformer_params


def prepare(src: str | Path, task, objective, train_cfg, device, size: int = 1):
    """(config["model"], the hooked text-format model with the base weights, files to write beside
    it): everything checked before the run directory is touched."""
    from hansprobe.interop import _sha256, hf_config_dict, text_format

    src = Path(src)
    if size > 1:
        raise ConfigError("a --base-model run trains in one process so far; run it without torchrun")
    if not src.is_dir():
        raise ConfigError(f"--base-model {src} is not a directory; give the directory save_pretrained wrote")
    if not causal_lm.has_tokenizer(src):
        raise ConfigError(f"--base-model {src} has no tokenizer.json: a base model reads the task as text through its "
                          "own tokenizer; save it beside the weights with tokenizer.save_pretrained")
    hf, _ = causal_lm.read_causal_lm_dir(src)
    hf_config = hf_config_dict(hf.config)
    layout = text_format(src, task, objective.fill != "truth", hf_config)  # the table, checked against the tokenizer and the model
    _check_memory(hf_config, layout.text_len, train_cfg, device, objective.extra_heads)
    model = causal_lm.text_format_model(hf, task, layout.table, device, bridged=False)
    config = {"architecture": causal_lm.ARCHITECTURE, "hf_config": hf_config, "n_layers": model.cfg.n_layers,
              "n_heads": model.cfg.n_heads, "d_model": model.cfg.d_model, "text_format": layout.table.to_dict(),
              "base_model": {"path": str(src.resolve()), "sha256": _sha256(src)}}
    return config, model, {causal_lm.TOKENIZER: (src / causal_lm.TOKENIZER).read_bytes()}


def resumed_model(config: dict, task, device):
    """The training form of a --base-model run from its config (seeded init; the resume file's
    weights go in next)."""
    hf = causal_lm.new_causal_lm(config["model"]["hf_config"], int(config["seed"]))
    table = causal_lm.stored_table(config["model"]["text_format"], task, config["model"]["hf_config"]["vocab_size"])
    return causal_lm.text_format_model(hf, task, table, device, bridged=False)


def _check_memory(hf: dict, text_len: int, train_cfg, device, extra_heads: int = 0) -> None:
    """Weights (and the multi-token heads), gradients, two AdamW moments, and one micro-batch's
    activations over the text."""
    _, d, layers, d_mlp, heads = causal_lm.config_sizes(hf)
    n = transformer_params(layers, d, d_mlp, hf["vocab_size"], causal_lm.context_length(hf)) + extra_heads * d * hf["vocab_size"]
    micro = -(-train_cfg.batch_size // train_cfg.grad_accum)
    acts = forward_bytes(micro, text_len, layers, d, d_mlp, heads, hf["vocab_size"])
    require_memory(4 * FLOAT * n + acts, f"fine-tuning a {n:,}-parameter model on micro-batches of {micro} graphs as text",
                   "raise --grad-accum, lower --batch-size, or choose a smaller model", device)
