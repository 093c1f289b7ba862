"""The capacity witness: a checkpoint of the same task, prompt layout and model shape that learned
the forward decision with another objective. Given to the report (`report --witness CKPT`, or found
among the checkpoints of the same report), it separates "the objective fails" from "this model is too
shallow" in the Clever-Hans failure verdict (failure.py): this shape can learn the decision, under the
witness's objective. Its budget (graphs seen = steps x batch x shards, learning rate and schedule) is
compared and reported; how long *this* objective needs is the snapshots' question (failure.py).

The witness is measured here, on fresh graphs of its own task (same seed as the report's), not read
from its config: its decision accuracy among the candidates, with a Wilson interval."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hansprobe.mechanics.results import Result
from hansprobe.measurements.behaviour import measure_behaviour
from hansprobe.measurements.registry import AnalysisContext, AnalysisSpec, register_analysis

WITNESS_MIN = 0.9  # the witness's decision accuracy CI must lie above this: it decides, forwards
LAYOUT_KEYS = ("goal_first",)  # task fields that are the prompt's layout, not the task: compared apart
SCHEDULE_KEYS = ("lr", "warmup_steps", "min_lr_ratio", "weight_decay", "betas", "grad_clip")  # how the budget was spent


@dataclass
class WitnessResult(Result):
    path: str
    objective: str
    forward: bool  # decodes the decision before the rest of the path (not reversed targets)
    same_task: bool  # the same task, up to its prompt layout
    same_shape: bool  # the same model config
    differences: list = field(default_factory=list)  # "model.n_layers: 2 vs 4", ...
    same_layout: bool = True  # the same prompt layout (LAYOUT_KEYS)
    layout_differences: list = field(default_factory=list)
    steps: int | None = None
    steps_of_checkpoint: int | None = None
    batch_size: int | None = None
    batch_size_of_checkpoint: int | None = None
    graphs_seen: int | None = None  # steps x batch_size x data_shards
    graphs_seen_of_checkpoint: int | None = None
    schedule_differences: list = field(default_factory=list)  # "train.lr: 0.001 here, 0.0005 in the witness", ...
    within_budget: bool = False  # no more graphs seen than the checkpoint, with the same learning rate and schedule
    n_graphs: int = 0
    decision_accuracy: float = 0.0
    decision_accuracy_ci: tuple = (0.0, 0.0)
    exact_match: float = 0.0
    learned: bool = False  # decision accuracy CI lower end >= WITNESS_MIN, decoded forwards
    rules_out_capacity: bool = False  # learned, same task, layout and shape
    witness_min: float | None = None  # the bar `learned` was decided at (WITNESS_MIN)

    def figures(self) -> dict:
        return {}


def _differences(a: dict, b: dict, prefix: str, ignore=(), only=None) -> list[str]:
    keys = sorted(set(a) | set(b)) if only is None else list(only)
    return [f"{prefix}.{k}: {a.get(k)!r} here, {b.get(k)!r} in the witness" for k in keys
            if k not in ignore and a.get(k) != b.get(k)]


def graphs_seen(config: dict) -> int | None:
    """Training graphs a checkpoint saw: steps x batch_size x data_shards (None where unknown)."""
    train = config.get("train") or {}
    steps, bs = config.get("step"), train.get("batch_size")
    if steps is None or bs is None:
        return None
    return int(steps) * int(bs) * int(train.get("data_shards") or 1)


def layout(task: dict) -> dict:
    """The task's prompt layout (absent keys take their defaults: the standard layout)."""
    return {k: bool(task.get(k, False)) for k in LAYOUT_KEYS}


def could_witness(config: dict, other: dict) -> bool:
    """Can checkpoint `other` witness capacity for checkpoint `config` on configs alone: the same task,
    prompt layout and model shape, another objective, decoding forwards (whether it decides is measured)."""
    from hansprobe.errors import HansprobeError
    from hansprobe.objectives import objective_from_config

    try:
        reverse = objective_from_config(other).reverse
    except (HansprobeError, KeyError, TypeError):  # an objective this version does not know witnesses nothing
        return False
    return (other.get("task") == config.get("task") and other.get("model") == config.get("model")
            and other.get("objective") != config.get("objective") and not reverse)


def measure_witness(config: dict, witness_path: str | Path, *, n_graphs: int, seed: int, device: str = "cpu",
                    batch_size: int = 1000) -> WitnessResult:
    """Compare the checkpoint's `config` with the witness at `witness_path` and measure the witness's
    decision on `n_graphs` fresh graphs of its own task from `seed`."""
    from hansprobe.checkpoint import load_checkpoint

    ck = load_checkpoint(witness_path, device=device)
    w = ck.config
    task_diff = _differences(config["task"], w["task"], "task", ignore=LAYOUT_KEYS)
    layout_diff = _differences(layout(config["task"]), layout(w["task"]), "task")
    shape_diff = _differences(config.get("model", {}), w.get("model", {}), "model")
    sched_diff = _differences(config.get("train") or {}, w.get("train") or {}, "train", only=SCHEDULE_KEYS)
    seen, seen_here = graphs_seen(w), graphs_seen(config)
    within = None not in (seen, seen_here) and seen <= seen_here and not sched_diff
    b = measure_behaviour(ck.model, ck.objective, ck.task.generate(n_graphs, seed), batch_size=batch_size)
    forward = not ck.objective.reverse
    bar = WITNESS_MIN
    learned = forward and b.decision_accuracy_ci[0] >= bar
    return WitnessResult(
        path=str(witness_path), objective=ck.objective.name, forward=forward, same_task=not task_diff,
        same_shape=not shape_diff, differences=task_diff + shape_diff, same_layout=not layout_diff,
        layout_differences=layout_diff, steps=w.get("step"), steps_of_checkpoint=config.get("step"),
        batch_size=(w.get("train") or {}).get("batch_size"), batch_size_of_checkpoint=(config.get("train") or {}).get("batch_size"),
        graphs_seen=seen, graphs_seen_of_checkpoint=seen_here, schedule_differences=sched_diff,
        within_budget=bool(within), n_graphs=n_graphs,
        decision_accuracy=b.decision_accuracy, decision_accuracy_ci=b.decision_accuracy_ci, exact_match=b.exact_match,
        learned=learned, witness_min=bar, rules_out_capacity=learned and not task_diff and not shape_diff and not layout_diff)


def _witness_skip(ctx: AnalysisContext) -> str | None:
    return None if ctx.witness else "no capacity witness was given (report --witness CKPT)"


register_analysis(AnalysisSpec(
    name="witness", title="Capacity witness", order=65, skip=_witness_skip,
    measure=lambda ctx: measure_witness(ctx.config, ctx.witness, n_graphs=len(ctx.batch), seed=ctx.seed, device=ctx.device,
                                          batch_size=ctx.batch_size),
))
