"""The shortcut-detection report: every registered analysis on one or more checkpoints, every
registered question answered with its evidence, `report.json` (schema in docs/report.md) and a
self-contained `report.html`. By job: `settings` (what it measures on), `run` (measuring, the report
so far after each checkpoint), `files` (writing and reading the two files together), `html` (the page)."""
from hansprobe.report.files import publish_report, read_report, write_report
from hansprobe.report.run import (ANSWERS, FORMAT, FORMAT_VERSION, QUESTIONS, CheckpointReport, build_report,
                                  expand_checkpoint_dirs, measure_checkpoint, n_analyses, training_curve_figure)
from hansprobe.report.settings import ReportSettings

__all__ = ["ANSWERS", "FORMAT", "FORMAT_VERSION", "QUESTIONS", "CheckpointReport", "ReportSettings", "build_report",
           "expand_checkpoint_dirs", "measure_checkpoint", "n_analyses", "publish_report", "read_report",
           "training_curve_figure", "write_report"]
