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


def typed_cells(doc: dict) -> dict:
    """Check that every plan-depth search cell and causal check, and every patching sweep and top
    component, in report.json `doc` has exactly its TypedDict's keys (the contract between the
    measurements and the questions); returns how many of each were checked."""
    from hansprobe.measurements.patching import PatchSweep, TopComponent
    from hansprobe.measurements.plan_depth import CausalCheck, PatchEffect, ProbeCell

    seen = {"cell": 0, "causal": 0, "sweep": 0, "top": 0}
    for c in doc["checkpoints"]:
        pd, patching = c["analyses"].get("plan_depth", {}), c["analyses"].get("patching", {})
        for cell in pd.get("searches", {}).values():
            assert set(cell) == set(ProbeCell.__annotations__), cell
            seen["cell"] += 1
        checks = list(pd.get("causal", {}).values()) + [x for v in pd.get("causal_cells", {}).values() for x in v["checked"]]
        for check in checks:
            assert set(CausalCheck.__annotations__) <= set(check)  # a checked cell adds where it is and its selectivity
            assert all(set(check[k]) == set(PatchEffect.__annotations__)
                       for k in ("probe_directions", "random_directions", "whole_residual"))
            seen["causal"] += 1
        for by_direction in [*patching.get("sweeps", {}).values(), patching.get("heads", {})]:
            for sweep in by_direction.values():
                assert set(sweep) == set(PatchSweep.__annotations__)
                seen["sweep"] += 1
        for top in patching.get("top", []):
            assert set(top) == set(TopComponent.__annotations__)
            seen["top"] += 1
    return seen
