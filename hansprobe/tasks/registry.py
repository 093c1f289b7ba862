"""The task registry: a task is one module that registers a `TaskSpec`, and the CLI (`--task`, its
arguments), checkpoint loading (`task_from_dict`), `--data` files and the report find it here.

What a task class must provide (path-star is the worked example, docs/add-a-task.md):

- sizes and tokens: `name`, `d_vocab`, `prefix_len`, `target_len`, `n_ctx`, `dummy` (the
  teacherless filler), `chance`, `describe()`, `to_dict()`, `token_str(t)`, `bytes_per_graph`;
- `generate(n, seed) -> Batch`: seeded graphs as tensors, with the structure every analysis reads
  (`Batch` fields: start, goal, candidates of the first decision and the correct one, the edge list
  and its positions, each label's first-decision branch `node_arm`; `arms` only where every branch
  is a path);
- its structure: `decision_indices` (label indices, forward order, where the answer is a choice
  among several candidates), `lookup_indices` (label indices whose token can be read off the
  previous one by one edge lookup, the last one being the goal, which can also be copied from the
  prompt; empty when there is none) and `no_lookup_reason`, `counterfactuals` (name -> builder of a
  partner batch with the goal's place changed: "goal_swap", "arm_rewire") and `placebo(batch, seed)`
  (the same graph and answer, relisted).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from hansprobe.errors import TaskError
from hansprobe.tasks.base import missing_members


@dataclass(frozen=True)
class TaskArg:
    """One command-line argument of a task: `--flag` fills constructor field `field`."""

    flag: str
    field: str
    type: Callable = int
    help: str = ""
    choices: tuple | None = None
    required: bool = True  # an optional argument is left to the class default when omitted
    action: str | None = None  # "store_true" for a flag (then `type` is not used)


@dataclass(frozen=True)
class TaskSpec:
    """name: `--task NAME` and the "name" stored in config.json.  cls: the task class, built as
    cls(**fields) (it validates its own fields).  args: its CLI arguments.  help: one line for
    `--help`.  read_text(path, task, limit) -> Batch: reads `--data` files, None if the task has no
    text format.  format_lines(batch) -> list[str]: what `hansprobe data` writes."""

    name: str
    cls: type
    args: tuple[TaskArg, ...]
    help: str
    format_lines: Callable | None = None
    read_text: Callable | None = None
    defaults: dict[str, Any] = field(default_factory=dict)  # used by `data`/`train` when an argument is omitted

    def from_args(self, args, required: bool = True):
        """The task of parsed CLI arguments (argparse namespace)."""
        kw, missing = {}, []
        for a in self.args:
            v = getattr(args, a.field, None)
            if v is None:
                v = self.defaults.get(a.field)
            if v is None and required and a.required:
                missing.append(a.flag)
            elif v is not None:
                kw[a.field] = v
        if missing:
            raise TaskError(f"--task {self.name} needs {', '.join(missing)}")
        return self.cls(**kw)


# The prompt layout option of the edge-list tasks (tasks/base.py EdgeListTokens.edge_list_prefix).
GOAL_FIRST = TaskArg("--goal-first", "goal_first", required=False, action="store_true",
                     help="put the start,goal query before the edge list (s g / u v | ... =), reported to make "
                          "path-star learnable under teacher forcing")

TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec, replace: bool = False) -> TaskSpec:
    """Make a task known to the CLI, the checkpoint loader and the report. A name already registered
    is refused unless `replace` (a silent replacement would change what a saved checkpoint loads as)."""
    if spec.name in TASKS and not replace:
        raise TaskError(f"task {spec.name!r} is already registered; pass replace=True to redefine it")
    missing = missing_members(spec.cls)
    if missing:
        raise TaskError(f"task {spec.name!r}: {spec.cls.__name__} lacks {', '.join(missing)}, which every task gives "
                        "(docs/add-a-task.md)")
    TASKS[spec.name] = spec
    return spec


def get_task_spec(name: str) -> TaskSpec:
    if not isinstance(name, str) or name not in TASKS:
        raise TaskError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def read_task_text(path, task, limit: int | None = None):
    """Graphs of `task` from a text file in the task's own format (--data), at most `limit` of them;
    the one reader behind every command's --data and the report's."""
    from hansprobe.errors import ConfigError

    spec = get_task_spec(task.name)
    if spec.read_text is None:
        raise ConfigError(f"--data reads text files of tasks that have a text format; {task.name} has none")
    return spec.read_text(path, task, limit)


def task_from_dict(d: dict):
    """Rebuild a task from its `to_dict()` (as stored in a checkpoint's config.json)."""
    if not isinstance(d, dict):
        raise TaskError(f"task must be a JSON object like {{\"name\": \"pathstar\", \"degree\": 2, ...}}, got {str(d)[:40]!r}")
    d = dict(d)
    spec = get_task_spec(d.pop("name", None))
    try:
        return spec.cls(**d)
    except TypeError as e:
        raise TaskError(f"task {spec.name!r} does not take these parameters: {d} ({e})") from None
