"""hansprobe: measure the Clever-Hans shortcut of teacher-forced training on lookahead tasks.

`model, task, objective = hansprobe.load("checkpoints/pathstar-d2-l5-n50-teacher-forcing")` gives
the hooked TransformerLens 4 model (a `TransformerBridge`, the successor of `HookedTransformer`).
Heavy imports (torch, TransformerLens) happen on first use, so the CLI starts fast.
"""
__version__ = "0.1.0"

_LAZY = {
    "load": "hansprobe.checkpoint",
    "load_checkpoint": "hansprobe.checkpoint",
    "PathStar": "hansprobe.tasks",
    "Batch": "hansprobe.tasks",
    "read_ntf": "hansprobe.tasks",
    "write_ntf": "hansprobe.tasks",
    "get_objective": "hansprobe.objectives",
    "ModelConfig": "hansprobe.model",
    "build_model": "hansprobe.model",
    "TrainConfig": "hansprobe.train",
    "train": "hansprobe.train",
    "measure_behaviour": "hansprobe.measurements",
    "HansprobeError": "hansprobe.errors",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hansprobe' has no attribute {name!r}")


__all__ = list(_LAZY)
