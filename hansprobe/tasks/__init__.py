"""Tasks: graph generators with the structure metadata every analysis reads."""
from hansprobe.errors import TaskError
from hansprobe.tasks.base import Batch, Task
from hansprobe.tasks.ntf_format import format_ntf_lines, parse_ntf_lines, read_ntf, write_ntf
from hansprobe.tasks.pathstar import PathStar, build_batch

TASKS = {"pathstar": PathStar}


def task_from_dict(d: dict) -> Task:
    """Rebuild a task from its `to_dict()` (as stored in a checkpoint's config.json)."""
    if not isinstance(d, dict):
        raise TaskError(f"task must be a JSON object like {{\"name\": \"pathstar\", \"degree\": 2, ...}}, got {str(d)[:40]!r}")
    d = dict(d)
    name = d.pop("name", None)
    if not isinstance(name, str) or name not in TASKS:
        raise TaskError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    try:
        return TASKS[name](**d)
    except TypeError as e:
        raise TaskError(f"task {name!r} does not take these parameters: {d} ({e})") from None


__all__ = ["Batch", "Task", "PathStar", "TASKS", "build_batch", "task_from_dict",
           "read_ntf", "write_ntf", "parse_ntf_lines", "format_ntf_lines"]
