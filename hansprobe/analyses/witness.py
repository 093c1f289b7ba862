"""The capacity witness: a checkpoint of the same task and model shape that learned the forward
decision with another objective or prompt layout. Given to the report (`report --witness CKPT`), it
separates "the objective fails" from "this model is too shallow" (same shape) and "trained too
briefly" (no more steps, same batch) in the Clever-Hans failure verdict (failure.py).

The witness is measured here, on fresh graphs of its own task (same seed as the report's), not read
from its config: its decision accuracy among the candidates, with a Wilson interval."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hansprobe.analyses.base import Result
from hansprobe.analyses.behaviour import measure_behaviour
from hansprobe.analyses.registry import AnalysisContext, AnalysisSpec, register_analysis

WITNESS_MIN = 0.9  # the witness's decision accuracy CI must lie above this: it decides, forwards
LAYOUT_KEYS = ("goal_first",)  # task fields a witness may change: a prompt layout, not the task


@dataclass
class WitnessResult(Result):
    path: str
    objective: str
    forward: bool  # decodes the decision before the rest of the path (not reversed targets)
    same_task: bool  # the same task, up to its prompt layout
    same_shape: bool  # the same model config
    differences: list = field(default_factory=list)  # "model.n_layers: 2 vs 4", ...
    steps: int | None = None
    steps_of_checkpoint: int | None = None
    batch_size: int | None = None
    batch_size_of_checkpoint: int | None = None
    within_budget: bool = False  # no more steps and no larger batches than the checkpoint had
    n_graphs: int = 0
    decision_accuracy: float = 0.0
    decision_accuracy_ci: tuple = (0.0, 0.0)
    exact_match: float = 0.0
    learned: bool = False  # decision accuracy CI lower end >= WITNESS_MIN, decoded forwards
    rules_out_capacity: bool = False
    rules_out_training_length: bool = False

    def figures(self) -> dict:
        return {}


def _differences(a: dict, b: dict, prefix: str, ignore=()) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{prefix}.{k}: {a.get(k)!r} here, {b.get(k)!r} in the witness" for k in keys
            if k not in ignore and a.get(k) != b.get(k)]


def measure_witness(config: dict, witness_path: str | Path, n_graphs: int, seed: int, device: str = "cpu",
                    batch_size: int = 1000) -> WitnessResult:
    """Compare the checkpoint's `config` with the witness at `witness_path` and measure the witness's
    decision on `n_graphs` fresh graphs of its own task from `seed`."""
    from hansprobe.checkpoint import load_checkpoint

    ck = load_checkpoint(witness_path, device=device)
    w = ck.config
    task_diff = _differences(config["task"], w["task"], "task", ignore=LAYOUT_KEYS)
    shape_diff = _differences(config.get("model", {}), w.get("model", {}), "model")
    steps, steps_here = w.get("step"), config.get("step")
    bs, bs_here = (w.get("train") or {}).get("batch_size"), (config.get("train") or {}).get("batch_size")
    within = None not in (steps, steps_here, bs, bs_here) and steps <= steps_here and bs <= bs_here
    b = measure_behaviour(ck.model, ck.objective, ck.task.generate(n_graphs, seed), batch_size)
    forward = not ck.objective.reverse
    learned = forward and b.decision_accuracy_ci[0] >= WITNESS_MIN
    capacity = learned and not task_diff and not shape_diff
    return WitnessResult(
        path=str(witness_path), objective=ck.objective.name, forward=forward, same_task=not task_diff,
        same_shape=not shape_diff, differences=task_diff + shape_diff, steps=steps, steps_of_checkpoint=steps_here,
        batch_size=bs, batch_size_of_checkpoint=bs_here, within_budget=bool(within), n_graphs=n_graphs,
        decision_accuracy=b.decision_accuracy, decision_accuracy_ci=b.decision_accuracy_ci, exact_match=b.exact_match,
        learned=learned, rules_out_capacity=capacity, rules_out_training_length=capacity and bool(within))


def _witness_skip(ctx: AnalysisContext) -> str | None:
    return None if ctx.witness else "no capacity witness was given (report --witness CKPT)"


register_analysis(AnalysisSpec(
    name="witness", title="Capacity witness", order=65, skip=_witness_skip,
    measure=lambda ctx: measure_witness(ctx.config, ctx.witness, len(ctx.batch), ctx.seed, ctx.device, ctx.batch_size),
))
