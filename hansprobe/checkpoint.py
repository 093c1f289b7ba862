"""Checkpoint directories: config.json, model.safetensors, metrics.jsonl and resume.safetensors
(docs/checkpoints.md). This module validates a config and builds the hooked model from it; the
files themselves are read and written by `hansprobe.storage` (re-exported here).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable
from pathlib import Path

import torch

from hansprobe.errors import CheckpointError, ConfigError, HansprobeError
from hansprobe.model import ModelConfig, build_model, resolve_device
from hansprobe.objectives import Objective, objective_from_config
from hansprobe.resources import FLOAT, require_memory, transformer_params
from hansprobe.storage import (  # noqa: F401  (re-exported: the public names of checkpoint files)
    CONFIG, FORMAT, FORMAT_VERSION, METRICS, MODEL, RESUME, append_metrics, atomic_write_bytes, atomic_write_json,
    load_resume, load_safetensors, load_weights, new_config, package_versions, publish_together, read_metrics,
    recover_staging, remove_stale_temporaries, run_lock, save_model, save_resume, save_safetensors, truncate_metrics,
)
from hansprobe.tasks import Task, task_from_dict
from hansprobe.validation import check_float, check_int, check_mapping, check_seed, read_json_bounded


def read_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / CONFIG
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise CheckpointError(f"{run_dir} is not a directory; give a checkpoint directory (config.json, model.safetensors)")
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"checkpoint directory {run_dir} does not exist")
    if path.exists() and not path.is_file():  # a FIFO, a directory, a device: not "missing"
        raise CheckpointError(f"{path} is not a regular file; {run_dir} is not a hansprobe checkpoint")
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; {run_dir} is not a complete hansprobe checkpoint")
    cfg = read_json_bounded(path, "checkpoint config", error=CheckpointError, hint="; the checkpoint is corrupt")
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a hansprobe checkpoint config (no \"format\": \"{FORMAT}\")")
    for key in ("task", "objective", "model", "seed"):
        if key not in cfg:
            raise CheckpointError(f"{path} has no {key!r} entry; the checkpoint is incomplete")
    try:
        validate_config(cfg)
    except HansprobeError as e:
        raise CheckpointError(f"{path}: {e}; the file was damaged or edited — restore it or re-train") from None
    return cfg


def validate_config(cfg: dict) -> None:
    """Every field a loader reads, checked for type and range before anything is built from it (a
    seed of NaN, a task given as a string, n_layers "2", an objective given as a list, ...)."""
    version = check_int("format_version", cfg.get("format_version", 1), 1)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"format_version {version} is newer than this hansprobe reads ({FORMAT_VERSION}); upgrade hansprobe")
    check_seed("seed", cfg["seed"])
    objective_from_config(cfg)  # the name and its options
    task = task_from_dict(check_mapping("task", cfg["task"]))
    check_mapping("model", cfg["model"])
    architecture(cfg).check(cfg, task)
    if cfg.get("train") is not None:
        _check_train(check_mapping("train", cfg["train"]))
    if cfg.get("step") is not None:
        check_int("step", cfg["step"], 0)
    if cfg.get("metrics") is not None:
        check_mapping("metrics", cfg["metrics"])


# The training fields later steps read (the witness's budget, resume, the dynamics): each type-checked
# where present, so that a hand-edited value is one line at load, not a crash after minutes of measuring.
_TRAIN_INTS = {"steps": 1, "batch_size": 1, "eval_every": 1, "eval_graphs": 1, "checkpoint_every": 1, "warmup_steps": 0,
               "data_shards": 1, "structured_samples": 1}
_TRAIN_FLOATS = ("lr", "min_lr_ratio", "weight_decay", "grad_clip")


def _check_train(train: dict) -> None:
    for key, low in _TRAIN_INTS.items():
        if key in train:
            check_int(f"train.{key}", train[key], low)
    for key in _TRAIN_FLOATS:
        if key in train:
            check_float(f"train.{key}", train[key], 0.0)
    if "betas" in train:
        b = train["betas"]
        if not (isinstance(b, list) and len(b) == 2):
            raise CheckpointError(f"train.betas must be a list of two numbers, not {b!r}")
        for i, x in enumerate(b):
            check_float(f"train.betas[{i}]", x, 0.0)
    if "snapshot_at" in train:
        if not isinstance(train["snapshot_at"], list):
            raise CheckpointError(f"train.snapshot_at must be a list of steps, not {train['snapshot_at']!r}")
        for i, x in enumerate(train["snapshot_at"]):
            check_int(f"train.snapshot_at[{i}]", x, 1)


def check_task_memory(model: ModelConfig, task: Task, device: str | torch.device = "cpu") -> None:
    """The model of this config and task fits in memory (before anything is allocated)."""
    n = transformer_params(model.n_layers, model.d_model, model.d_mlp, task.d_vocab, task.n_ctx, model.attn_only)
    require_memory(FLOAT * n, f"the model of this config ({n:,} parameters)", "check its task and model sizes", device)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the hooked model (eval mode) with its task, objective and config."""

    model: object
    task: Task
    objective: Objective
    config: dict
    path: Path

    @property
    def metrics(self) -> list[dict]:
        return read_metrics(self.path)


def is_imported(cfg: dict) -> bool:
    """A checkpoint made by `hansprobe import` (a Hugging Face GPT-2 behind the bridge)."""
    return isinstance(cfg.get("model"), dict) and "architecture" in cfg["model"]


@dataclass(frozen=True)
class Architecture:
    """One kind of model a checkpoint can hold: how its config["model"] is checked against the
    task, how the model is built fresh from its seed, and how it is built with its weights. The
    loader reads this table once per checkpoint instead of branching in every function."""

    name: str
    check: Callable[[dict, Task], None]
    build: Callable[[dict, Task, torch.device, torch.dtype], object]
    load: Callable[[dict, Task, dict, Path, torch.device], object]


def _check_native(cfg: dict, task: Task) -> None:
    model = ModelConfig.from_dict(cfg["model"])
    for key, want in (("d_vocab", task.d_vocab), ("n_ctx", task.n_ctx)):
        if key in cfg and cfg[key] != want:
            raise ConfigError(f"{key} is {cfg[key]!r} but the task {task.describe()} has {want}")
    check_task_memory(model, task)


def _build_native(cfg, task, device, dtype=torch.float32):
    return build_model(ModelConfig.from_dict(cfg["model"]), task.d_vocab, task.n_ctx, int(cfg["seed"]), device, dtype)


def _load_native(cfg, task, tensors, source, device):
    model = _build_native(cfg, task, device)
    load_weights(model, tensors, source)
    return model


def _check_gpt2(cfg: dict, task: Task) -> None:
    from hansprobe import interop

    interop.check_hf_config(cfg["model"].get("hf_config"))


def _build_gpt2(cfg, task, device, dtype=torch.float32):
    from hansprobe import interop

    return interop.imported_model(cfg, device)


def _load_gpt2(cfg, task, tensors, source, device):  # the weights go into the GPT-2 before it is bridged
    from hansprobe import interop

    return interop.imported_model(cfg, device, tensors, source)


def _check_causal_lm(cfg: dict, task: Task) -> None:
    from hansprobe import causal_lm

    causal_lm.check_causal_lm_config(cfg["model"].get("hf_config"))


def _build_causal_lm(cfg, task, device, dtype=torch.float32):
    from hansprobe import causal_lm

    return causal_lm.imported_causal_lm(cfg, device, task=task)


def _load_causal_lm(cfg, task, tensors, source, device):
    from hansprobe import causal_lm

    return causal_lm.imported_causal_lm(cfg, device, tensors, source, task=task)


ARCHITECTURES = {
    "native": Architecture("native", _check_native, _build_native, _load_native),  # hansprobe train: boot_native
    "hf-gpt2": Architecture("hf-gpt2", _check_gpt2, _build_gpt2, _load_gpt2),  # hansprobe import (interop.ARCHITECTURE)
    # hansprobe import --format hf, any other causal LM the bridge boots (causal_lm.ARCHITECTURE)
    "hf-causal-lm": Architecture("hf-causal-lm", _check_causal_lm, _build_causal_lm, _load_causal_lm),
}


def architecture(cfg: dict) -> Architecture:
    """The entry of ARCHITECTURES a config's model is (config["model"]["architecture"], "native" when absent)."""
    name = cfg["model"].get("architecture", "native") if isinstance(cfg.get("model"), dict) else "native"
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ConfigError(f"unknown model architecture {name!r}; this hansprobe reads "
                          f"{', '.join(n for n in ARCHITECTURES if n != 'native')} (imports) and its own models")
    return ARCHITECTURES[name]


def model_from_config(cfg: dict, device: str | torch.device, dtype: torch.dtype = torch.float32):
    """The model a config describes, freshly initialised from its seed (weights not loaded)."""
    task = task_from_dict(cfg["task"])
    return architecture(cfg).build(cfg, task, device, dtype), task


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    path = Path(path)
    cfg = read_config(path)
    dev = resolve_device(device)
    tensors, _ = load_safetensors(path / MODEL)
    task = task_from_dict(cfg["task"])
    model = architecture(cfg).load(cfg, task, tensors, path / MODEL, dev)
    objective = objective_from_config(cfg)
    _check_extra_heads(path, objective)
    return Checkpoint(model=model.eval(), task=task, objective=objective, config=cfg, path=path)


def _check_extra_heads(path: Path, objective: Objective) -> None:
    """A multi-token checkpoint's extra heads file holds as many heads as its config names (the
    analyses read the count from the config)."""
    from hansprobe.multitoken import EXTRA_HEADS

    if not objective.extra_heads or not (path / EXTRA_HEADS).is_file():
        return
    heads, _ = load_safetensors(path / EXTRA_HEADS)
    w = heads.get("weight")
    if w is None or w.dim() != 3 or w.shape[0] != objective.extra_heads:
        found = "no weight" if w is None else f"shape {tuple(w.shape)}"
        raise CheckpointError(f"{path / EXTRA_HEADS} holds {found}, but config.json names {objective.extra_heads} extra "
                              "heads; the checkpoint was edited or mixed — restore it or re-train")


def load(path: str | Path, device: str | torch.device = "cpu"):
    """`model, task, objective = hansprobe.load(path)`: the hooked TransformerLens model (eval mode,
    on `device`), the task it was trained on and its objective."""
    ck = load_checkpoint(path, device)
    return ck.model, ck.task, ck.objective


def check_batch_memory(model, batch_size: int, device) -> None:
    """Refuse, before any analysis runs, a --batch-size whose forward pass would not fit: a full
    activation cache and the logits over the vocabulary a pass computes (a text model's: the task's
    tokens where its head can be restricted, else its whole tokenizer), per graph. Decoding holds 4 rows per graph of the batch (decision 69),
    each with logits only, which this bounds too."""
    from hansprobe import resources  # read at call time (the tests set the free memory there)

    cfg = model.cfg
    n_ctx = getattr(model, "text_len", None) or cfg.n_ctx
    vocab = getattr(model, "logit_vocab", None) or cfg.d_vocab
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    per_graph = resources.forward_bytes(1, n_ctx, cfg.n_layers, cfg.d_model, d_mlp, cfg.n_heads, vocab)
    fits = max(1, resources.available_bytes(device) // per_graph)
    resources.require_memory(per_graph * batch_size, f"a forward pass of {batch_size} graphs (--batch-size) on this model",
                   f"lower --batch-size (about {fits} fit)", device)
