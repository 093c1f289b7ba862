"""Tasks: graph generators with the structure metadata every analysis reads. Each task module
registers itself (tasks/registry.py); importing this package registers the built-in ones."""
from hansprobe.errors import TaskError
from hansprobe.tasks.base import Batch, Task
from hansprobe.tasks.ntf_format import format_ntf_lines, parse_ntf_lines, read_ntf, write_ntf
from hansprobe.tasks.pathstar import PathStar, build_batch
from hansprobe.tasks.registry import TASKS, TaskArg, TaskSpec, get_task_spec, register_task, task_from_dict
from hansprobe.tasks.tree import Tree

__all__ = ["Batch", "Task", "TaskError", "PathStar", "Tree", "TASKS", "TaskArg", "TaskSpec", "build_batch", "get_task_spec",
           "register_task", "task_from_dict", "read_ntf", "write_ntf", "parse_ntf_lines", "format_ntf_lines"]
