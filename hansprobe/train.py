"""The training loop: AdamW, linear warmup then cosine decay over a horizon counted in steps,
gradient clipping, periodic evaluation on held-out graphs and atomic checkpoints.

Reproducibility: the graphs of step k come from a seed derived from (seed, k), the model's
initialisation from `seed`, and the resume file holds weights and AdamW moments together, so a
resumed CPU run ends bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from hansprobe.checkpoint import (
    MODEL, RESUME, append_metrics, atomic_write_json, load_resume, model_from_config, new_config,
    read_config, read_metrics, remove_stale_temporaries, run_lock, save_model, save_resume, truncate_metrics,
)
from hansprobe.storage import atomic_write_bytes, check_run_dir
from hansprobe import distributed
from hansprobe.errors import CheckpointError, ConfigError, OutputError, os_error_line
from hansprobe.fused import training_view
from hansprobe.model import ModelConfig, resolve_device
from hansprobe.multitoken import EXTRA_HEADS, ExtraHeads, MultiTokenNet, extra_logits_loss
from hansprobe.objectives import Objective, autocast, get_objective, objective_from_config
from hansprobe.options import option
from hansprobe.progress import progress_bar
from hansprobe.resources import FLOAT, forward_bytes, require_memory, transformer_params
from hansprobe.tasks import Task, task_from_dict
from hansprobe.tasks.base import GoalVariants
from hansprobe.validation import check_float, check_int, check_mapping, check_seed


@dataclass
class TrainConfig:
    """steps: optimizer steps (also the cosine horizon).  batch_size: graphs per step, fresh each
    step.  lr: peak learning rate after `warmup_steps` of linear warmup; cosine decay to
    `min_lr_ratio * lr` at `steps`.  grad_clip: max global gradient norm.  weight_decay: AdamW,
    on matrices only (not biases, norms).  eval_every / eval_graphs: evaluation interval and the
    number of held-out graphs (their own seed).  checkpoint_every: resume-file interval.
    snapshot_at: steps whose weights are kept in snapshots/ (for training dynamics).
    structured_samples: K > 1 fills each batch with batch_size / K graphs, each K times in a row
    with K different goals (the task's `goal_variants`), as the follow-up literature reports helps.
    data_shards: the step's graphs come in this many shards of batch_size, each from its own seed;
    under `torchrun --nproc_per_node K` it is K and rank r trains on shard r (the global batch is
    K x batch_size), and one process with data_shards K trains on exactly the same graphs."""

    steps: int = option("optimizer steps and cosine horizon (with --resume: extend to this)", "positive", 3000)
    batch_size: int = option("graphs per step, fresh each step", "positive", 256)
    lr: float = option("peak learning rate", "positive_float", 1e-3)
    warmup_steps: int = option("steps of linear warmup", "count", 100)
    min_lr_ratio: float = 0.1
    weight_decay: float = option("AdamW weight decay (matrices only)", "non_negative_float", 0.01)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = option("max global gradient norm", "positive_float", 1.0)
    eval_every: int = option("steps between evaluations (and progress lines)", "positive", 250)
    eval_graphs: int = option("held-out graphs per evaluation", "positive", 1000)
    checkpoint_every: int = option("steps between resume files", "positive", 250)
    snapshot_at: list[int] = option("comma-separated steps whose weights are kept in snapshots/", "steps",
                                    default_factory=list)
    structured_samples: int = option("each batch holds batch-size/K graphs, each K times with K different goals "
                                     "(1: off)", "positive", 1, metavar="K")
    grad_accum: int = option("split each step's batch into K micro-batches, one backward each, then one update "
                             "(large models on small memory)", "positive", 1, metavar="K")
    data_shards: int = option("draw each step's graphs as K shards of --batch-size (what K data-parallel ranks "
                              "draw: under torchrun --nproc_per_node K it is K; one process with K trains on the "
                              "same graphs)", "positive", 1, metavar="K")

    def __post_init__(self):
        # Checked here, not only in the CLI: a resumed run reads these from config.json.
        for name in ("steps", "batch_size", "eval_every", "eval_graphs", "checkpoint_every"):
            check_int(name.replace("_", "-"), getattr(self, name), 1)
        check_int("warmup-steps", self.warmup_steps, 0)
        check_float("lr", self.lr)
        check_float("grad-clip", self.grad_clip)
        check_float("weight-decay", self.weight_decay, 0)
        check_float("min-lr-ratio", self.min_lr_ratio, 0, 1)
        if not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2:
            raise ConfigError(f"betas must be two numbers, got {self.betas!r}")
        for b in self.betas:
            check_float("betas", b, 0, 1)
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not self.grad_clip > 0:
            raise ConfigError(f"grad-clip must be positive, got {self.grad_clip}")
        if not isinstance(self.snapshot_at, (list, tuple)):
            raise ConfigError(f"snapshot-at must be a list of steps, got {self.snapshot_at!r}")
        for s in self.snapshot_at:
            check_int("snapshot-at", s, 1)
        check_int("structured-samples", self.structured_samples, 1)
        check_int("data-shards", self.data_shards, 1)
        check_int("grad-accum", self.grad_accum, 1)
        if self.grad_accum > self.batch_size:
            raise ConfigError(f"grad-accum {self.grad_accum} is more micro-batches than batch-size {self.batch_size} graphs")
        if self.batch_size % self.structured_samples:
            raise ConfigError(f"batch-size {self.batch_size} must be a multiple of structured-samples {self.structured_samples}")
        self.betas = tuple(self.betas)
        self.snapshot_at = sorted(set(int(s) for s in self.snapshot_at))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From config.json's "train" entry, with every field checked (unknown keys refused)."""
        check_mapping("train", d)
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise ConfigError(f"unknown training settings {sorted(set(d) - known)}; known: {sorted(known)}")
        return cls(**d)

    def lr_at(self, step: int) -> float:
        """Learning rate used for the update that takes the model from `step` to `step + 1`."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps))
        floor = self.lr * self.min_lr_ratio
        return floor + 0.5 * (self.lr - floor) * (1 + math.cos(math.pi * progress))


def derived_seed(seed: int, *stream: int) -> int:
    """A 63-bit seed for one stream of randomness (training step k, evaluation set, ...)."""
    return int(np.random.SeedSequence([int(seed), *stream]).generate_state(1, np.uint64)[0] >> np.uint64(1))


TRAIN_STREAM, EVAL_STREAM, MASK_STREAM, HEADS_STREAM, GOALS_STREAM = 0, 1, 2, 3, 4


def make_optimizer(model, cfg: TrainConfig, heads=None) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only. The multi-token heads (if any) come last in the decay group."""
    decay = [p for _, p in model.named_parameters() if p.dim() >= 2] + (list(heads.parameters()) if heads else [])
    no_decay = [p for _, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=cfg.betas,
    )


class NonFiniteLoss(CheckpointError):
    """The training loss became NaN or infinite; no update was applied."""


def train_step(model, opt: torch.optim.Optimizer, objective: Objective, batch, lr: float, grad_clip: float,
               generator: torch.Generator | None = None, accum: int = 1) -> torch.Tensor:
    """One optimizer update on `batch` (already on the model's device); returns the loss.
    `generator` draws partial-teacherless masks. For the multi-token objective `model` is its
    MultiTokenNet (or that wrapped for DDP), whose extra heads' losses are added to the main one.
    `accum` > 1: the batch in that many micro-batches, each loss weighted by its share of the graphs
    and backpropagated before the next runs, then one update (the same gradient, less memory)."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    total = None
    for part in batch.split(-(-len(batch) // accum)) if accum > 1 else [batch]:
        loss = step_loss(model, objective, part, generator)
        if accum > 1:
            loss = loss * (len(part) / len(batch))
        if not torch.isfinite(loss):  # before any update: the weights stay those of the last good step
            raise NonFiniteLoss(float(loss.detach()))
        loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    params = [p for group in opt.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    return total


def step_loss(model, objective: Objective, batch, generator: torch.Generator | None = None) -> torch.Tensor:
    """The training loss of one (micro-)batch: the objective's; for a text-format model its own
    `text_loss` over the full vocabulary (hansprobe/finetune.py)."""
    inner = model.net if isinstance(model, MultiTokenNet) else model
    text_loss = getattr(inner, "text_loss", None)
    with autocast(batch.prefix.device):
        if text_loss is not None:  # a text-format model: its extra heads (if any) read the text's positions
            return text_loss(objective, batch, generator, heads=getattr(model, "heads", None))
        x = objective.inputs(batch, generator)
        if objective.extra_heads:
            labels = objective.labels(batch)
            logits, extra = model(x, objective.label_slice(batch).start, labels.shape[1])
        else:
            logits = model(x)  # (B, T, V)
    loss = objective.loss(logits, batch)
    if objective.extra_heads:
        loss = loss + extra_logits_loss(extra, labels)
    return loss


def training_batch(task: Task, cfg: TrainConfig, seed: int, step: int, shard: int | None = None):
    """The graphs of training step `step`: fresh ones from (seed, step); with structured samples,
    batch_size / K graphs each K times with K different goals. With data shards, shard `shard` (a
    data-parallel rank's part) or, for None, all shards one after another."""
    if cfg.data_shards > 1 and shard is None:
        from hansprobe.tasks import Batch

        return Batch.cat([training_batch(task, cfg, seed, step, s) for s in range(cfg.data_shards)])
    stream = (TRAIN_STREAM, step) if cfg.data_shards == 1 else (TRAIN_STREAM, step, shard)  # 1 shard: as always
    k = cfg.structured_samples
    batch = task.generate(cfg.batch_size // k, derived_seed(seed, *stream))
    if k == 1:
        return batch
    if not isinstance(task, GoalVariants):
        raise ConfigError(f"--structured-samples needs a task with goal variants; {task.describe()} has none")
    return task.goal_variants(batch, k, derived_seed(seed, GOALS_STREAM, *stream[1:]))


def check_task_options(task: Task, cfg: TrainConfig) -> None:
    """Refuse the training options this task cannot give (e.g. more structured samples than a graph
    has goals) before anything is written: a refused run leaves nothing behind."""
    k = cfg.structured_samples
    if k > 1:
        if not isinstance(task, GoalVariants):
            raise ConfigError(f"--structured-samples needs a task with goal variants; {task.describe()} has none")
        task.goal_variants(task.generate(1, 0), k, 0)  # raises the task's own one-line error


def train(out: str | Path, task: Task | None = None, objective: Objective | str | None = None,
          model_cfg: ModelConfig | None = None, train_cfg: TrainConfig | None = None, seed: int = 0,
          device: str = "cpu", resume: bool = False, overwrite: bool = False,
          progress: bool | str | None = None, steps: int | None = None, evaluate=None,
          until: int | None = None, base_model: str | Path | None = None) -> dict:
    """Train into the checkpoint directory `out` and return its config (with final metrics).

    With `resume=True` the run continues from `out`'s resume file under its stored config; `steps`
    may then extend the horizon (the cosine schedule is recomputed from the resumed step on).
    `until`: stop after this step with a complete checkpoint, the horizon unchanged, so that a long
    run goes in chunks (`--resume --until`) and ends bit-identical to an uninterrupted one (CPU). The
    directory is locked while the run writes it (`checkpoint.run_lock`). progress: True a bar, False
    nothing, "lines" one plain line per evaluation on stderr, None a bar when stderr is a terminal.

    evaluate(model, objective, batch) -> dict of JSON numbers: the metrics of each evaluation row on
    the held-out graphs; default `objective.evaluate` (exact match, decision and per-position
    accuracy). The trainer imports no analysis: a caller passes one here if it wants more.

    base_model: a local pretrained causal LM with its tokenizer to fine-tune on the task as text
    instead of a new model (`model_cfg` is then unused; hansprobe/finetune.py)."""
    rank, size, _ = distributed.world()
    if until is not None:
        check_int("until", until, 1)
    try:
        with run_lock(out) if rank == 0 else nullcontext():  # under torchrun, rank 0 is the only writer
            result = _train(out, task, objective, model_cfg, train_cfg, seed, device, resume, overwrite,
                            progress if rank == 0 else False, steps, evaluate, until, base_model)
        # Every rank leaves together: a rank that tore its process group down while rank 0 still wrote
        # the last checkpoint aborted at exit now and then under load ("terminate called without an
        # active exception", gloo). Only on success: a failed rank would leave the others waiting.
        distributed.barrier()
        return result
    except RuntimeError as e:
        if size > 1:  # a collective failed: another rank stopped (killed, out of memory, its own error)
            raise collective_failure(e, Path(out), size) from None
        raise
    finally:
        distributed.stop()


def collective_failure(error: Exception, run_dir: Path, size: int) -> CheckpointError:
    """The one-line error of a data-parallel run whose collective failed (gloo: "Connection reset by
    peer"; NCCL: a timeout or DistBackendError): another rank stopped, and how to continue."""
    last = _last_step(run_dir)
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return CheckpointError(
        f"another training process stopped ({first}); {run_dir} keeps its last complete checkpoint (step {last}); "
        + (f"continue with `torchrun --nproc_per_node {size} -m hansprobe train --resume --out {run_dir}`" if last
           else "start the run again"))


def _train(out, task, objective, model_cfg, train_cfg, seed, device, resume, overwrite, progress, steps, evaluate,
           until, base_model=None) -> dict:
    run_dir = Path(out)
    dev = distributed.start(resolve_device(device))
    rank, size, _ = distributed.world()
    if resume:
        distributed.barrier()  # every rank reads the same files; none is written yet
        if not (run_dir / RESUME).is_file():
            raise CheckpointError(f"nothing to resume: {run_dir / RESUME} does not exist; train without --resume")
        config = read_config(run_dir)
        if not isinstance(config.get("train"), dict):
            raise CheckpointError(f"{run_dir / 'config.json'} holds no training settings (\"train\": "
                                  f"{json.dumps(config.get('train'))}), so the run cannot be resumed; train a new run")
        stored = dict(config["train"])
        if steps is not None:
            stored["steps"] = steps
        train_cfg = TrainConfig.from_dict(stored)
        if size > 1 and train_cfg.data_shards != size:
            raise ConfigError(f"this run was trained with {train_cfg.data_shards} data shard(s); resume it with "
                              f"torchrun --nproc_per_node {train_cfg.data_shards}" if train_cfg.data_shards > 1 else
                              "this run was trained in one process; resume it without torchrun")
        config["train"] = asdict(train_cfg)
        if config["model"].get("base_model"):  # a fine-tuning trains the transformers module itself
            from hansprobe import finetune

            task = task_from_dict(config["task"])
            model = finetune.resumed_model(config, task, dev)
        else:
            model, task = model_from_config(config, dev)
        objective = objective_from_config(config)
        seed = int(config["seed"])
    else:
        if task is None or objective is None:
            raise ConfigError("train needs a task and an objective (or resume=True)")
        objective = get_objective(objective) if isinstance(objective, str) else objective
        model_cfg = model_cfg or ModelConfig()
        train_cfg = train_cfg or TrainConfig()
        check_seed("seed", seed)
        if size > 1:  # K ranks: K shards of --batch-size each
            if train_cfg.data_shards not in (1, size):
                raise ConfigError(f"--data-shards {train_cfg.data_shards} under torchrun with {size} processes; drop it")
            train_cfg = TrainConfig.from_dict({**asdict(train_cfg), "data_shards": size})
        check_run_dir(run_dir, overwrite)  # new, empty, or with --overwrite a checkpoint this tool wrote
        # Everything that can be refused (sizes, memory) is checked before the directory is touched,
        # so a refused run leaves no config-only stub that would block the corrected rerun.
        beside = {}
        if base_model is not None:
            from hansprobe import finetune

            described, model, beside = finetune.prepare(base_model, task, objective, train_cfg, dev, size)
            config = new_config(task, objective, described, asdict(train_cfg), seed)
        else:
            config = new_config(task, objective, model_cfg.to_dict(), asdict(train_cfg), seed)
            _check_training_memory(model_cfg, task, train_cfg, dev)
        config["device"] = str(dev)
        check_task_options(task, train_cfg)
        if base_model is None:
            model, _ = model_from_config(config, dev)  # the same seed on every rank: the same initial weights
        if rank == 0:
            if run_dir.exists() and any(run_dir.iterdir()):
                shutil.rmtree(run_dir)
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputError(os_error_line(e, run_dir, "create")) from None
            for name, data in beside.items():  # the base model's tokenizer, read with the weights
                atomic_write_bytes(run_dir / name, data)
            atomic_write_json(run_dir / "config.json", config)

    try:
        return _loop(run_dir, config, model, task, objective, train_cfg, seed, dev, resume, progress, evaluate, until)
    except OutputError as e:  # a full disk or a vanished directory: the last complete checkpoint is intact
        last = _last_step(run_dir)
        raise OutputError(f"{e}; {run_dir} keeps its last complete checkpoint (step {last})"
                          + ("; then continue with --resume" if last else "")) from None


def _last_step(run_dir: Path) -> int:
    try:
        return int(read_config(run_dir).get("step") or 0)
    except (CheckpointError, ValueError, TypeError):
        return 0


def _check_training_memory(model_cfg: ModelConfig, task: Task, train_cfg: "TrainConfig", dev) -> None:
    """Weights, gradients and two AdamW moments, plus one batch's activations kept for the backward."""
    n = transformer_params(model_cfg.n_layers, model_cfg.d_model, model_cfg.d_mlp, task.d_vocab, task.n_ctx,
                           model_cfg.attn_only)
    acts = forward_bytes(-(-train_cfg.batch_size // train_cfg.grad_accum), task.n_ctx, model_cfg.n_layers, model_cfg.d_model, model_cfg.d_mlp,
                         model_cfg.n_heads, task.d_vocab)
    require_memory(4 * FLOAT * n + acts, f"training a {n:,}-parameter model on batches of {train_cfg.batch_size} "
                   f"{task.describe()} graphs", "lower --batch-size, or choose a smaller model or task", dev)


def _start_state(run_dir, model, task, objective, train_cfg, seed, dev, resume: bool, writer: bool):
    """(extra heads or None, the optimizer, the step, the running loss sum and count): fresh, or as the
    resume file left them (then the metrics past that step are dropped)."""
    heads = None
    if objective.extra_heads:
        vocab = getattr(model, "text_vocab", task.d_vocab)  # a text-format model's heads span its tokenizer
        heads = ExtraHeads(objective.extra_heads, model.cfg.d_model, vocab, derived_seed(seed, HEADS_STREAM)).to(dev)
    opt = make_optimizer(model, train_cfg, heads)
    if not resume:
        return heads, opt, 0, 0.0, 0
    if writer:
        remove_stale_temporaries(run_dir)
    step, extra = load_resume(run_dir, model, opt, heads)
    distributed.barrier()  # every rank has read the resume file before rank 0 rewrites anything
    if writer:
        truncate_metrics(run_dir, step)
    return heads, opt, step, float(extra.get("loss_sum", 0.0)), int(extra.get("loss_n", 0))


def _show_row(row: dict, steps: int, eta: float, lines: bool, bar) -> None:
    """One evaluation row for the user: a plain line on stderr when it is not a terminal, else above the bar."""
    em, dec = row.get("exact_match", float("nan")), row.get("decision_accuracy", float("nan"))
    if lines:
        print(f"train: step {row['step']}/{steps} loss {row['train_loss']:.4f} exact match {em:.3f} decision acc "
              f"{dec:.3f} ({row['elapsed_s']:.0f} s elapsed, ~{eta:.0f} s left)", file=sys.stderr, flush=True)
    if not bar.disable:
        bar.write(f"step {row['step']}: loss {row['train_loss']:.4f}  exact match {em:.3f}  decision acc {dec:.3f}")


def _write_checkpoint(run_dir: Path, config: dict, model, heads, step: int) -> None:
    """The weights (and extra heads) of `step`, then config.json naming that step: the config last,
    so a kill in between leaves the previous complete checkpoint (the resume file is written before)."""
    config["step"] = step
    save_model(run_dir, model, {"step": str(step)}, name=MODEL)
    if heads is not None:
        save_model(run_dir, heads, {"step": str(step)}, name=EXTRA_HEADS)
    atomic_write_json(run_dir / "config.json", config)


def _loop(run_dir, config, model, task, objective, train_cfg, seed, dev, resume, progress, evaluate, until) -> dict:
    model.train()
    rank, size, _ = distributed.world()
    writer = rank == 0  # under torchrun only rank 0 evaluates and writes
    heads, opt, step, loss_sum, loss_n = _start_state(run_dir, model, task, objective, train_cfg, seed, dev, resume, writer)
    eval_batch = task.generate(train_cfg.eval_graphs, derived_seed(seed, EVAL_STREAM))
    if train_cfg.snapshot_at and writer:
        (run_dir / "snapshots").mkdir(exist_ok=True)
    # The training forward runs fused torch ops over the bridge's own parameter tensors (hansprobe/fused.py:
    # the same function, no hook machinery on every step). DistributedDataParallel under torchrun
    # averages the gradients.
    net = training_view(model)
    if heads is not None:  # the extra heads join the training module, so DDP averages their gradients too
        net = MultiTokenNet(net, heads)
    trained = distributed.wrap(net)

    kept = read_metrics(run_dir) if resume else []
    t0 = time.perf_counter() - (kept[-1].get("elapsed_s", 0.0) if kept else 0.0)  # elapsed_s goes on across resumes
    lines = progress == "lines"  # not a terminal (nohup, CI, Slurm): one plain line per evaluation instead of a bar
    bar = progress_bar(train_cfg.steps, "train", False if lines else progress, unit="step", initial=step, leave=True)
    t_start, step_start = time.perf_counter(), step
    stop = train_cfg.steps if until is None else min(until, train_cfg.steps)  # this call's last step
    if lines:
        print(f"train: {run_dir}: steps {step + 1}..{stop} (of {train_cfg.steps}) of {task.describe()}, {objective.name}; a line "
              f"every {train_cfg.eval_every} steps", file=sys.stderr, flush=True)
    while step < stop:
        batch = training_batch(task, train_cfg, seed, step, rank if size > 1 else None).to(dev)
        masks = None
        if objective.fill == "mixed":
            masks = torch.Generator().manual_seed(derived_seed(seed, MASK_STREAM, step))
        try:
            loss = train_step(trained, opt, objective, batch, train_cfg.lr_at(step), train_cfg.grad_clip, masks,
                              train_cfg.grad_accum)
        except NonFiniteLoss as e:
            bar.close()
            last = _last_step(run_dir)
            raise NonFiniteLoss(f"the training loss became {e} at step {step + 1}; stopped without applying that update. "
                                f"{run_dir} keeps its last good checkpoint (step {last}); lower --lr or --grad-clip and "
                                "train again (--overwrite), or --resume from there") from None
        step += 1
        loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)

        if not writer:
            continue
        if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
            model.eval()
            metrics = evaluate(model, objective, eval_batch) if evaluate else objective.evaluate(model, eval_batch)
            model.train()
            row = {"step": step, "train_loss": loss_sum / loss_n, "lr": train_cfg.lr_at(step - 1), **metrics,
                   "elapsed_s": round(time.perf_counter() - t0, 2)}
            append_metrics(run_dir, row)
            config["metrics"] = {k: v for k, v in row.items() if k != "elapsed_s"}
            loss_sum, loss_n = 0.0, 0
            eta = (time.perf_counter() - t_start) / (step - step_start) * (stop - step)
            _show_row(row, train_cfg.steps, eta, lines, bar)
        if step in train_cfg.snapshot_at:
            save_model(run_dir / "snapshots", model, {"step": str(step)}, name=f"step-{step:06d}.safetensors")
        if step % train_cfg.checkpoint_every == 0 or step == stop:
            save_resume(run_dir, model, opt, step, {"loss_sum": loss_sum, "loss_n": loss_n}, heads)
            _write_checkpoint(run_dir, config, model, heads, step)
    if writer and config.get("step") != step:
        # Resumed from a resume file newer than the last complete checkpoint: a kill came after the
        # resume file and before the weights or config of that step (the resume file is written first).
        # Nothing was left to train; finish that checkpoint from the resumed state.
        rows = read_metrics(run_dir)
        if rows and rows[-1].get("step") == step:
            config["metrics"] = {k: v for k, v in rows[-1].items() if k != "elapsed_s"}
        _write_checkpoint(run_dir, config, model, heads, step)
    bar.close()
    model.eval()
    return config
