"""Linear probes on the residual stream, with controls: the `hansprobe probe` table (any target, any cell).

The report's plan question reads the plan-depth profile instead (hansprobe/measurements/plan_depth.py: the
sub-goal chain at every block input, the whole search's null and a causal check); this module is
the general probe a user points at a layer x position grid of their choice.

One scikit-learn pipeline (StandardScaler -> LogisticRegression) per layer x position cell,
cross-validated with folds grouped by graph, scored with a Wilson CI, against two controls:
a Hewitt & Liang (2019) control task (a fixed random label per token type at the same position)
and a label shuffle across graphs; plus the same probe on the untrained model (the checkpoint's own
initialisation). Headline selectivity = task accuracy - shuffled-label accuracy; the H&L
selectivity is reported beside it (for graph-level labels the token control is easy to memorise, so
it measures the probe's capacity more than the plan: docs/analyses.md).

The best cell is chosen on data its reported figures do not use: the graphs are split in two
halves (seeded); the *selection* half ranks the cells by accuracy - shuffled accuracy, and every
reported figure (the tables, the best cells' accuracy, CI and controls) comes from the *evaluation*
half. Two best cells are reported: strictly before the answer (the prompt, at a layer that can
still reach the decision) and at the decision position itself (the input holding r_0 for forward
targets, before the last block: the last block's output there is the answer).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import GroupKFold, cross_val_predict

from hansprobe.mechanics.activations import Activations, collect_residuals, position_names
from hansprobe.mechanics.results import Result, wilson_ci
from hansprobe.progress import progress_iter
from hansprobe.measurements.registry import AnalysisSpec, register_analysis
from hansprobe.mechanics.probe_targets import TARGETS, ProbeTarget, TargetFn, make_probe
from hansprobe.mechanics.steering import SteeringResult, steer_along_probe
from hansprobe.errors import ConfigError
from hansprobe.options import CommandOption
from hansprobe.objectives import Objective
from hansprobe.tasks.base import Batch


def probe_accuracy(X: np.ndarray, y: np.ndarray, groups: np.ndarray, candidates: np.ndarray | None = None,
                   n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """Cross-validated correctness per row (folds grouped by graph). With `candidates` (n, D) the
    prediction is the highest-scoring candidate class (identity labels scored among the d options)."""
    n_splits = min(n_splits, len(np.unique(groups)))
    if len(np.unique(y)) < 2:
        return np.ones(len(y), bool)  # a constant label is trivially predicted
    cv = GroupKFold(n_splits=n_splits)
    if candidates is None:
        return cross_val_predict(make_probe(seed), X, y, groups=groups, cv=cv) == y
    proba = cross_val_predict(make_probe(seed), X, y, groups=groups, cv=cv, method="predict_proba")  # (n, classes)
    classes = np.unique(y)
    col = np.searchsorted(classes, candidates)
    known = (col < len(classes)) & (classes[np.minimum(col, len(classes) - 1)] == candidates)
    scores = np.where(known, np.take_along_axis(proba, np.minimum(col, len(classes) - 1), 1), -np.inf)
    return candidates[np.arange(len(y)), scores.argmax(1)] == y


@dataclass
class ProbeResult(Result):
    target: str
    description: str
    objective: str
    n_graphs: int
    layers: list[int]  # 0 = embeddings, k = after block k-1
    positions: list[int]
    position_labels: list[str]
    chance: float
    accuracy: list[list[float]]  # [layer][position]; NaN where the target is undefined
    accuracy_ci: list[list[list[float]]]
    control_token: list[list[float]]  # Hewitt & Liang control task
    control_shuffle: list[list[float]]  # labels shuffled across graphs
    untrained: list[list[float]]  # the same probe on the untrained model
    selectivity: list[list[float]]  # accuracy - label-shuffle control (the headline: is there signal beyond chance?)
    selectivity_token: list[list[float]]  # accuracy - Hewitt & Liang token control (probe capacity; see docs)
    best: dict = field(default_factory=dict)  # the best cell strictly before the answer (chosen on the selection half)
    best_at_decision: dict = field(default_factory=dict)  # the best cell at the decision position
    n_eval: int = 0  # graphs of the evaluation half (every reported figure)
    constant_target: bool = False  # one label in every graph (e.g. a label-cue task's goal arm): nothing to decode
    causal: dict | None = None

    def text(self) -> str:
        lines = [f"  {self.description}", "  cells: accuracy [95% CI] / selectivity vs shuffled labels / H&L selectivity / "
                 "untrained model"]
        for li, layer in enumerate(self.layers):
            name = "embed" if layer == 0 else f"after L{layer - 1}"
            for j, pos in enumerate(self.position_labels):
                a = self.accuracy[li][j]
                if a is None:
                    continue
                c = self.accuracy_ci[li][j]
                lines.append(f"  {name:9s} {pos:>6s}  {a:.3f} [{c[0]:.3f}, {c[1]:.3f}]  {self.selectivity[li][j]:+.3f}  "
                             f"{self.selectivity_token[li][j]:+.3f}  {self.untrained[li][j]:.3f}")
        if self.best:
            b = self.best
            lines.append(f"  most selective cell before the answer: layer {b['layer']} at {b['position_label']} "
                         f"(accuracy {b['accuracy']:.3f}, selectivity {b['selectivity']:+.3f}); chance {self.chance:.3f}")
        if self.causal:
            c = self.causal
            lo, hi = c["steer_probe"]["ci"]
            lines.append(f"  steering along the probe there: decision logit difference changes "
                         f"{c['steer_probe']['mean_change']:+.3f} [{lo:+.3f}, {hi:+.3f}] vs random "
                         f"{c['steer_random']['mean_change']:+.3f}; projecting the probe out: "
                         f"{c['ablate_probe']['mean_change']:+.3f} vs random {c['ablate_random']['mean_change']:+.3f}")
        return "\n".join(lines)

    def figures(self) -> dict:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        ylab = ["embed" if layer == 0 else f"after L{layer - 1}" for layer in self.layers]
        fig = make_subplots(rows=2, cols=1, vertical_spacing=0.22, subplot_titles=(f"probe accuracy (chance {self.chance:.2f})", "selectivity (task - control)"))
        fig.add_heatmap(z=self.accuracy, x=self.position_labels, y=ylab, zmin=0, zmax=1, colorscale="Blues",
                        texttemplate="%{z:.2f}", row=1, col=1)
        fig.add_heatmap(z=self.selectivity, x=self.position_labels, y=ylab, zmid=0, colorscale="RdBu",
                        texttemplate="%{z:.2f}", row=2, col=1)
        fig.update_layout(title=f"Probe '{self.target}' ({self.objective}, {self.n_graphs} graphs, folds grouped by graph)")
        line = go.Figure()
        for name in ("goal", "="):
            if name in self.position_labels:
                j = self.position_labels.index(name)
                line.add_scatter(x=ylab, y=[row[j] for row in self.accuracy], mode="lines+markers", name=f"at '{name}'",
                                 error_y=dict(type="data", symmetric=False,
                                              array=[c[j][1] - row[j] for row, c in zip(self.accuracy, self.accuracy_ci)],
                                              arrayminus=[row[j] - c[j][0] for row, c in zip(self.accuracy, self.accuracy_ci)]))
        line.add_hline(y=self.chance, line_dash="dot", annotation_text="chance")
        line.update_layout(yaxis_range=[0, 1.05], xaxis_title="residual stream", yaxis_title="probe accuracy",
                           title=f"Probe '{self.target}' per layer at the goal token and '='")
        figs = {"probe_heatmaps": fig, "probe_by_layer": line}
        if self.causal:
            figs.update(SteeringResult(**self.causal).figures())
        return figs


def _control_labels(tokens: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """Hewitt & Liang control task: a fixed random class for every token type."""
    table = np.random.default_rng(seed).integers(0, n_classes, size=int(tokens.max()) + 1)
    return table[tokens]


def _grid(n_layers, n_pos, fill=np.nan):
    return np.full((n_layers, n_pos), fill, dtype=float)


def _shuffle_labels(tgt: ProbeTarget, perm: np.ndarray, keep: np.ndarray, j: int):
    """Labels (and their candidates) at position j permuted across the graphs where they are defined."""
    src, dst = np.sort(perm[keep[perm]]), perm[keep[perm]]
    labels = tgt.labels.copy()
    labels[dst, j] = tgt.labels[src, j]
    cands = None
    if tgt.candidates is not None:
        cands = tgt.candidates.copy()
        cands[dst] = tgt.candidates[src]
    return labels, cands


def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(selection, evaluation) graph indices: a seeded random half each (the extra graph to evaluation)."""
    perm = np.random.default_rng([seed, 17]).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def measure_probes(model, objective: Objective, batch: Batch, target: str | TargetFn = "goal_arm", *, layers=None,
                   positions=None, batch_size: int = 500, seed: int = 0, n_splits: int = 5, untrained_model=None,
                   causal: bool = True, progress: bool = False, controls_at: str = "all") -> ProbeResult:
    """Probe every layer x position cell. controls_at: "all" fits the token control and the untrained
    model at every cell (the `probe` command's table); "best" only at the two best cells, which is
    all the report's verdict reads (a third fewer fits; the other cells are null in those grids)."""
    if controls_at not in ("all", "best"):
        raise ConfigError(f"controls_at must be 'all' or 'best', got {controls_at!r}")
    if isinstance(target, str):
        if target not in TARGETS:
            raise ConfigError(f"unknown probe target {target!r}; valid targets: {', '.join(TARGETS)}")
        target = TARGETS[target]
    acts = collect_residuals(model, objective, batch, layers, positions, batch_size, progress)
    tgt: ProbeTarget = target(batch, objective, acts.positions)
    base_acts = collect_residuals(untrained_model, objective, batch, acts.layers, acts.positions, batch_size) if untrained_model is not None else None
    tokens = objective.inputs(batch).numpy()[:, acts.positions]  # (B, n_pos) token at each probed position
    n_l, n_p = len(acts.layers), len(acts.positions)
    acc, lo, hi, ctl, shf, unt, pick = (_grid(n_l, n_p) for _ in range(7))
    perm = np.random.default_rng(seed).permutation(len(batch))
    select, evaluate = split_halves(len(batch), seed)
    n_classes = max(2, batch.candidates.shape[1]) if tgt.candidates is not None else max(2, int(np.unique(tgt.labels[tgt.labels >= 0]).size))
    cells = [(i, j) for j in range(n_p) for i in range(n_l)]
    cells = progress_iter(cells, len(cells), "probes", progress, unit="cell")

    def fit(rows, i, j, X_all=None, labels=None, cands=None):
        X_all = acts.acts if X_all is None else X_all
        y = (tgt.labels if labels is None else labels)[rows, j]
        c = (tgt.candidates if cands is None else cands)
        return probe_accuracy(X_all[rows, i, j], y, acts.graph_ids[rows], None if c is None else c[rows], n_splits, seed)

    def controls(i, j, ev_rows):
        """The token-identity control (Hewitt & Liang) and the untrained model's accuracy at a cell."""
        y_ctl = _control_labels(tokens[ev_rows, j], n_classes, seed + j)
        ctl[i, j] = probe_accuracy(acts.acts[ev_rows, i, j], y_ctl, acts.graph_ids[ev_rows], None, n_splits, seed).mean()
        if base_acts is not None:
            unt[i, j] = fit(ev_rows, i, j, X_all=base_acts.acts).mean()

    shuffles: dict = {}
    for i, j in cells:
        keep = tgt.labels[:, j] >= 0
        sel_rows, ev_rows = select[keep[select]], evaluate[keep[evaluate]]
        if min(len(sel_rows), len(ev_rows)) < 2 * n_splits:
            continue
        if j not in shuffles:  # the same shuffle for every layer at this position
            shuffles[j] = _shuffle_labels(tgt, perm, keep, j)
        shuffled, cand_shuffled = shuffles[j]
        pick[i, j] = fit(sel_rows, i, j).mean() - fit(sel_rows, i, j, labels=shuffled, cands=cand_shuffled).mean()
        ok = fit(ev_rows, i, j)
        acc[i, j] = ok.mean()
        lo[i, j], hi[i, j] = wilson_ci(int(ok.sum()), len(ok))
        shf[i, j] = fit(ev_rows, i, j, labels=shuffled, cands=cand_shuffled).mean()
        if controls_at == "all":
            controls(i, j, ev_rows)
    sel = acc - shf
    labels_by_pos = {v: k for k, v in position_names(batch).items()}
    pos_labels = [labels_by_pos.get(p, str(p)) for p in acts.positions]
    grids = {"accuracy": acc, "lo": lo, "hi": hi, "shuffle": shf, "untrained": unt, "selectivity": sel}
    before, at_decision = _best_cells(pick, grids, acts, batch, pos_labels, objective, model.cfg.n_layers)
    if controls_at == "best":  # the token control and the untrained model only where the verdict reads them
        for cell in (before, at_decision):
            if cell:
                i, j = acts.layers.index(cell["layer"]), acts.positions.index(cell["position"])
                controls(i, j, evaluate[(tgt.labels[:, j] >= 0)[evaluate]])
        before, at_decision = _best_cells(pick, grids, acts, batch, pos_labels, objective, model.cfg.n_layers)
    res = ProbeResult(
        target=tgt.name, description=tgt.description, objective=objective.name, n_graphs=len(batch), layers=acts.layers,
        positions=acts.positions, position_labels=pos_labels, chance=tgt.chance, accuracy=acc.tolist(),
        accuracy_ci=np.stack([lo, hi], -1).tolist(), control_token=ctl.tolist(), control_shuffle=shf.tolist(),
        untrained=unt.tolist(), selectivity=sel.tolist(), selectivity_token=(acc - ctl).tolist(), best=before,
        best_at_decision=at_decision, n_eval=len(evaluate),
        constant_target=bool(np.unique(tgt.labels[tgt.labels >= 0]).size <= 1),
    )
    if causal and before and tgt.name in ("goal_arm", "decision_node") and not res.constant_target:

        res.causal = steer_along_probe(model, objective, batch, acts, tgt, before, seed=seed, batch_size=batch_size).to_dict()
    return res


def _best_cells(pick, grids: dict, acts: Activations, batch: Batch, pos_labels, objective: Objective,
                n_layers: int) -> tuple[dict, dict]:
    """The cell with the highest selection-half score (accuracy - shuffled) among (a) the prompt, up
    to '=', at layers that can still reach the decision (the last layer's output at an earlier
    position feeds nothing downstream), and (b) the decision position, before the last block's
    output; each reported with its evaluation-half figures. Under reversed targets there is no (b):
    their "decision position" lies inside the answer, after the goal and the tokens above it."""
    query = batch.prefix.shape[1] - 1 + objective.decision_index(batch.target.shape[1])
    prompt = np.array([[p <= batch.prefix.shape[1] - 1 and layer < n_layers for p in acts.positions] for layer in acts.layers])
    decision = np.array([[p == query and layer < n_layers and not objective.reverse for p in acts.positions]
                         for layer in acts.layers])

    def best(ok):
        masked = np.where(ok & ~np.isnan(pick) & ~np.isnan(grids["accuracy"]), pick, -np.inf)
        if not np.isfinite(masked).any():
            return {}
        i, j = np.unravel_index(np.argmax(masked), masked.shape)
        g = {k: float(v[i, j]) for k, v in grids.items()}
        return {"layer": acts.layers[i], "position": acts.positions[j], "position_label": pos_labels[j],
                "accuracy": g["accuracy"], "accuracy_ci": [g["lo"], g["hi"]], "selectivity": g["selectivity"],
                "control_shuffle": g["shuffle"], "untrained": None if np.isnan(g["untrained"]) else g["untrained"],
                "selection_score": float(pick[i, j]), "cells_searched": int(np.isfinite(masked).sum())}

    return best(prompt), best(decision)


# Not in the report (it runs the ridge plan-depth profile instead, decision 43): `hansprobe probe`
# and `hansprobe analyse probes`, on all the context's graphs (-n), folds seeded as before (0).
register_analysis(AnalysisSpec(
    name="probes", title="Linear probes", order=45, in_report=False,
    measure=lambda ctx: measure_probes(ctx.model, ctx.objective, ctx.batch, ctx.options["target"], layers=ctx.options["layers"],
                                       positions=ctx.options["positions"], batch_size=ctx.batch_size, seed=ctx.seed,
                                       untrained_model=ctx.untrained_model(), progress=ctx.progress),
    command="probe", command_help="linear probes on the residual stream, with controls and a causal follow-up",
    options=(CommandOption("--target", "what to decode", default="goal_arm", choices=tuple(TARGETS)),
             CommandOption("--layers", "residual layers, 0 = embeddings .. n_layers (default all)", parse="ints"),
             CommandOption("--positions", "input positions: numbers or start, goal, =, a0, a1, ..., all (default the "
                                          "prompt tail and the answer slots)", parse="texts")),
))
