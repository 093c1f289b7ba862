"""The shortcut-detection report: every registered analysis on one or more checkpoints, every
registered question answered with its evidence, `report.json` (schema in docs/report.md) and a
self-contained `report.html`. By job: `settings` (what it measures on), `run` (measuring, the report
so far after each checkpoint), `files` (writing and reading the two files together), `html` (the page).

The names below load their module on first use: the command line reads `report.settings` for its
defaults, and a command that measures nothing (train, data, sweep) then starts without importing the
analyses and what they import (scipy, scikit-learn, plotly), about 2 s a process."""
_LAZY = {
    "publish_report": "files", "read_report": "files", "write_report": "files",
    **{n: "run" for n in ("ANSWERS", "FORMAT", "FORMAT_VERSION", "QUESTIONS", "CheckpointReport", "build_report",
                          "expand_checkpoint_dirs", "measure_checkpoint", "n_analyses", "training_curve_figure")},
    "ReportSettings": "settings",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"hansprobe.report.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'hansprobe.report' has no attribute {name!r}")


__all__ = sorted(_LAZY)
