"""Measurement summaries written by hand, as the questions read them from report.json ("analyses"):
the rule tests set the figures that matter and get the rest of the contract filled in."""
from __future__ import annotations

from hansprobe.measurements.heads import DROP_THRESHOLD, FOLLOW_MAJORITY, MAX_SET_FRACTION, SCORE_THRESHOLD, Mechanism


def heads_summary(found: bool = False, follow: tuple | None = (0.52, 0.45, 0.60), drop: float = 0.3,
                  drop_ci: list | None = None, heads=((0, 1),), shortcut_accuracy: float = 1.0) -> dict:
    """A heads analysis's summary (HeadsResult's JSON): a search that `found` (or not) the set
    `heads`, its held-out drop and CI, and a follow rate (rate, CI low, CI high), or None unmeasured."""
    tried = [list(h) for h in heads]
    mechanism = Mechanism(
        tried=tried, search=[], max_set=2, selected=found, found=found, heads=tried if found else [],
        ablation_drop=drop, ablation_drop_ci=drop_ci, specific_drop=drop, specific_drop_ci=drop_ci, control_drop=0.0,
        shortcut_accuracy_after=shortcut_accuracy - drop, control_accuracy_after=1.0,
        forced_accuracy_after=[1.0, 0.5, shortcut_accuracy - drop, shortcut_accuracy - drop, 1.0], ablation_graphs=150,
        selection_graphs=150, control_indices=[0], n_heads_total=8, layers_that_break_it=[], edge_pattern="edge_lookup",
        reads={}, roles={})
    return {"query_label_indices": [2, 3], "mechanism": mechanism, "pattern_groups": {},
            "baseline": {"shortcut_accuracy": shortcut_accuracy, "control_accuracy": 1.0},
            "thresholds": {"score": SCORE_THRESHOLD, "drop": DROP_THRESHOLD, "follow_majority": FOLLOW_MAJORITY,
                           "max_set": 2, "max_set_fraction": MAX_SET_FRACTION},
            "follow": None if follow is None else {"follow_rate": follow[0], "follow_rate_ci": list(follow[1:])}}
