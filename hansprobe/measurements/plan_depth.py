"""Where the decision is planned, if anywhere: a depth profile of linear probes, with the null of the
whole search and a causal check (docs/decisions.md 43).

Targets (from the structure metadata): the sub-goal chain, hop j = the node j edges above the goal
on the goal path (j = 1 .. h, h = l - 2 on path-star; hop h *is* the decision node r1), each an
identity scored among the d nodes at that depth of the candidate arms (chance 1/d); and, where the
edges come after the goal (goal-first layouts), "this edge is on the goal path" at each edge's
parent, child and separator token (rows pooled over edges; chance: the commoner answer).

Cells: the input of every block that writes to the residual stream (a block whose attention and MLP
add nothing on these graphs is skipped, so appending blocks that compute nothing leaves the answer
unchanged), at every position from the goal token up to the decision position: a position before
the goal cannot hold anything about the goal under the causal mask. Under the multi-token objective
the final residual at the prompt positions counts too: its extra heads read it.

Statistics. Graphs are split (seeded) into a training half and selection and evaluation quarters.
Every cell's probe is fitted on the training half for the true labels and for SHUFFLES relabellings
(labels permuted across graphs) at once (one multi-output ridge solve); the selection quarter picks
the best cell of each search, the evaluation quarter gives every reported figure. The null of the
whole search: each relabelling runs the same selection, and the p-value is the share of relabellings
whose selected cell does at least as well on the evaluation quarter (the max statistic). Selectivity
is paired per evaluation graph (the true probe's correctness minus the mean of the relabelled
probes'), with a t interval. A plan cell must also pass a causal check: on goal-swap pairs, patching
the clean run's component along the probe's two candidate directions (the clean and the swapped
decision node) into the swapped run at that cell moves the decision back toward the clean answer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import torch

from hansprobe.mechanics.activations import resid_hook
from hansprobe.mechanics.results import Result, t_ci, wilson_ci
from hansprobe.mechanics.forward import chunks
from hansprobe.measurements.patching import GAP_MIN, goal_swap_pairs, position_labels
from hansprobe.measurements.registry import AnalysisSpec, register_analysis
from hansprobe.objectives import Objective, autocast
from hansprobe.tasks.base import Batch, prompt_positions

SHUFFLES = 49  # relabellings for the whole-search null: the smallest p-value is 1/50
RIDGE_ALPHA = 10.0  # on standardised residuals; a least-squares linear probe (docs/decisions.md 43)
INERT = 1e-6  # a block whose output moves the residual by less than this (relative) computes nothing here
# Besides each search's chosen cell, the other cells before the answer where the probe reads the target are
# patched too, the most selective first, at most this many per target (each costs five patched passes on
# the pairs: the bound keeps the report's speed; the evidence says how many passed and how many were checked).
CAUSAL_CELLS = 6


@dataclass
class _Target:
    name: str  # "hop1" .. "hop{h}" (the last = "decision node"), or "edge_on_goal_path"
    label: str  # in words
    labels: np.ndarray  # (B,) graph-level node id, or (B, E) 0/1 for the edge target
    candidates: np.ndarray | None  # (B, d) node ids to score among, or None (binary)
    chance: float
    index: int | None = None  # the target index of the node (None for the edge target)


def targets(batch: Batch) -> list[_Target]:
    """The sub-goal chain (hop 1 = the goal's parent .. hop h = the decision node) and, where the
    edges follow the goal, the edge target."""
    length = batch.target.shape[1]
    h = length - 2
    d = batch.candidates.shape[1]
    out = []
    for j in range(1, h + 1):
        i = length - 1 - j  # target index of the node j hops above the goal
        if i == 1:
            cands = batch.candidates.numpy()
        elif batch.arms is not None:
            cands = batch.arms[:, :, i - 1].numpy()  # (B, d) the nodes at depth i of every arm
        else:
            continue  # a tree's branches are not paths: only the decision node has d candidates
        name = "decision node" if i == 1 else f"hop {j}"
        words = "the decision node r1" if i == 1 else f"the node {j} hop{'s' if j > 1 else ''} above the goal (r{i})"
        out.append(_Target(name, words, batch.target[:, i].numpy(), cands, 1 / d, i))
    if _edges_follow_goal(batch):  # 0 off the goal path, else the edge's place counted from the goal (1 = into it)
        hit = batch.edge_child[:, :, None] == batch.target[:, None, 1:]  # (B, E, l-1): child is target index i+1
        place = torch.where(hit.any(-1), length - 1 - hit.int().argmax(-1), torch.zeros_like(batch.edge_child))
        commonest = float(np.bincount(place.numpy().ravel()).max() / place.numel())  # chance: the commonest class
        out.append(_Target("edge on goal path", "which edge of the goal path an edge is, counted from the goal (0: off it)",
                           place.numpy(), None, commonest))
    return out


def _edges_follow_goal(batch: Batch) -> bool:
    return bool((batch.edge_parent_pos[0] > prompt_positions(batch)["goal"]).all())


def decision_position(objective: Objective, batch: Batch) -> int:
    return batch.prefix.shape[1] - 1 + objective.decision_index(batch.target.shape[1])


@torch.no_grad()
def _residuals(model, objective: Objective, batch: Batch, positions: list[int], batch_size: int):
    """Residuals (B, n_layers + 1, n_pos, d_model) at the input of every block and the final output,
    and each block's largest change of the residual relative to its size (to find inert blocks)."""
    n = model.cfg.n_layers
    device = next(model.parameters()).device
    names = [resid_hook(k) for k in range(n + 1)]
    pos = torch.tensor(positions, device=device)
    acts, moved, size = [], torch.zeros(n), torch.zeros(())
    for chunk in chunks(batch, batch_size, "plan depth"):
        with autocast(device):
            _, cache = model.run_with_cache(objective.inputs(chunk.to(device)), names_filter=lambda name: name in names)
        full = [cache[name].float() for name in names]  # n+1 x (b, T, d)
        for k in range(n):
            moved[k] = torch.maximum(moved[k], (full[k + 1] - full[k]).abs().max().cpu())
        size = torch.maximum(size, max(r.abs().max() for r in full).cpu())
        acts.append(torch.stack([r[:, pos] for r in full], 1).cpu().numpy())
    return np.concatenate(acts), (moved / size.clamp_min(1e-12)).tolist()


def _ridge(X: np.ndarray, Y: np.ndarray):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge(alpha=RIDGE_ALPHA)).fit(X, Y)


def _labellings(tgt: _Target, perms: np.ndarray):
    """(K+1, B, ...) labels and candidates: the true ones first, then each relabelling (graphs permuted)."""
    idx = np.concatenate([np.arange(perms.shape[1])[None], perms])  # (K+1, B)
    return tgt.labels[idx], (None if tgt.candidates is None else tgt.candidates[idx])


def _correct(scores: np.ndarray, labels: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
    """scores (K+1, n, C) -> correctness (K+1, n): the best-scoring candidate (or class) is the label."""
    if cands is None:
        return scores.argmax(-1) == labels
    picked = np.take_along_axis(scores, cands, -1).argmax(-1)  # (K+1, n)
    return np.take_along_axis(cands, picked[..., None], -1)[..., 0] == labels


def _fit_cell(X: np.ndarray, tgt: _Target, labs, cands, rows_by_split, n_classes: int):
    """Fit a cell's probe for every labelling on the training graphs; correctness per graph on the
    selection and evaluation graphs: two (K+1, n_split) arrays, and the true probe's fitted pipeline."""
    train, sel, ev = rows_by_split
    K1 = labs.shape[0]
    if tgt.candidates is None:  # the edge target: X (B, E, d), labels (K+1, B, E) classes, rows pooled over edges
        e, d = X.shape[1], X.shape[-1]
        n_cls = int(labs.max()) + 1
        onehot = np.zeros((len(train), e, K1, n_cls), np.float32)
        np.put_along_axis(onehot, labs[:, train].transpose(1, 2, 0)[..., None], 1.0, -1)
        pipe = _ridge(X[train].reshape(-1, d), onehot.reshape(len(train) * e, -1))

        def score(rows):
            s = pipe.predict(X[rows].reshape(-1, d)).reshape(len(rows), e, K1, n_cls).argmax(-1)  # (n, E, K+1)
            return (s.transpose(2, 0, 1) == labs[:, rows]).mean(-1)  # (K+1, n) share of the graph's edges right
        return score(sel), score(ev), pipe
    onehot = np.zeros((len(train), K1, n_classes), np.float32)
    np.put_along_axis(onehot, labs[:, train].T[..., None], 1.0, -1)
    pipe = _ridge(X[train], onehot.reshape(len(train), -1))

    def score(rows):
        s = pipe.predict(X[rows]).reshape(len(rows), K1, n_classes).transpose(1, 0, 2)  # (K+1, n, C)
        return _correct(s, labs[:, rows], cands[:, rows]).astype(float)
    return score(sel), score(ev), pipe


class ProbeCell(TypedDict):
    """A search's chosen cell (PlanDepthResult.searches["target|kind"]): where the probe reads the
    target and how well, on the evaluation graphs. The plan question reads these."""

    target: str
    label: str
    kind: str  # "before" (a block input before the decision position) or "at" (the decision position)
    layer: int  # the residual probed: k = the input of block k
    positions: list[int]
    position_label: str
    chance: float
    accuracy: float
    accuracy_ci: list[float]
    selectivity: float  # accuracy minus its relabelled copies', paired per graph
    selectivity_ci: list[float]
    control_shuffle: float
    null_p: float  # the whole search's: the max over cells under each relabelling
    null_max: float | None
    cells_searched: int


class PatchEffect(TypedDict):
    """The share of the goal's effect on the decision that a patch restores, with its bootstrap CI."""

    normalized: float
    ci: list[float]


class CausalCheck(TypedDict):
    """Patching one cell from goal-swap partners (PlanDepthResult.causal, and each of causal_cells'
    "checked"): along the probe's directions, along random ones, and the whole residual."""

    layer: int
    positions: list[int]
    n_pairs: int
    gap: float
    gap_ci: list[float]
    probe_directions: PatchEffect
    random_directions: PatchEffect
    whole_residual: PatchEffect


@dataclass
class PlanDepthResult(Result):
    objective: str
    n_graphs: int
    n_eval: int
    shuffles: int
    hops: int  # backward hops from the goal to the decision node
    blocks: list[int]  # the blocks whose input is probed (inert ones left out)
    inert_blocks: list[int]
    decision_position: int
    position_labels: list[str]  # of the probed positions
    layers: list[int]  # residual layers probed (k = the input of block k; n_layers = the final output)
    profile: dict = field(default_factory=dict)  # target -> {"accuracy": [layer][pos], "ci": ..., "chance": c}
    searches: dict[str, ProbeCell] = field(default_factory=dict)  # "target|kind" -> the selected cell
    causal: dict[str, CausalCheck] = field(default_factory=dict)  # "target|kind" -> patching from goal-swap partners there
    # "target|before" -> the other cells before the answer where the probe reads the target (paired selectivity CI
    # above 0), most selective first, each with its patching; at most CAUSAL_CELLS of them, of `passing` in all
    causal_cells: dict = field(default_factory=dict)
    applicable: str = ""  # why the question does not apply ("" when it does)
    gap: float | None = None  # decision logit difference clean - goal-swapped, mean over the evaluation pairs (nats)
    gap_ci: list | None = None
    n_pairs: int = 0
    gap_min: float | None = None  # GAP_MIN: the goal effect's CI must clear this for the cells to be patched (nats; as applied)

    def figures(self) -> dict:
        import plotly.graph_objects as go

        names = ["embed" if k == 0 else (f"after L{k - 1}") for k in self.layers]
        line = go.Figure()
        for name, prof in self.profile.items():
            acc = np.array(prof["accuracy"], dtype=float)
            if "by_role" in prof:  # the edge target: one cell per token role, rows pooled over edges
                acc = np.array(list(prof["by_role"].values()), dtype=float).T  # (layers, roles)
            best = [float(np.nanmax(row)) if np.isfinite(row).any() else None for row in acc]
            line.add_scatter(x=names, y=best, mode="lines+markers", name=f"{name} (chance {prof['chance']:.2f})")
        line.update_layout(yaxis_range=[0, 1.05], xaxis_title="residual stream (block input)",
                           yaxis_title="held-out probe accuracy (best position)",
                           title=f"Plan depth profile ({self.objective}, {self.n_eval} evaluation graphs; {self.hops} hops "
                                 f"from goal to decision)")
        figs = {"plan_depth_profile": line}
        dec = self.profile.get("decision node")
        if dec:
            figs["plan_depth_decision_node"] = go.Figure(go.Heatmap(
                z=dec["accuracy"], x=self.position_labels, y=names, zmin=0, zmax=1, colorscale="Blues",
                texttemplate="%{z:.2f}")).update_layout(title="Decision-node probe: held-out accuracy per block input x position")
        return figs


def measure_plan_depth(model, objective: Objective, batch: Batch, *, seed: int = 0, batch_size: int = 500,
                       shuffles: int = SHUFFLES) -> PlanDepthResult:
    """Probe every target at every cell (module docstring), run each search (per target: before the
    decision position, and at it) with its whole-search null, and the causal check at each search's
    chosen cell."""

    n_layers = model.cfg.n_layers
    p_dec = decision_position(objective, batch)
    goal = prompt_positions(batch)["goal"]
    all_labels = position_labels(batch)
    positions = list(range(goal, p_dec + 1))
    acts, moved = _residuals(model, objective, batch, positions, batch_size)  # (B, n_layers+1, n_pos, d)
    inert = [k for k in range(n_layers) if moved[k] < INERT]
    blocks = [k for k in range(n_layers) if k not in inert]
    res = PlanDepthResult(objective=objective.name, n_graphs=len(batch), n_eval=0, shuffles=shuffles,
                          hops=batch.target.shape[1] - 2, blocks=blocks, inert_blocks=inert, decision_position=p_dec,
                          position_labels=[all_labels[p] for p in positions], layers=[], gap_min=GAP_MIN)
    if objective.reverse:
        res.applicable = ("reversed targets: the answer runs from the goal back to the start, so the decision node is "
                          "reached by lookups from the goal, not planned ahead")
        return res
    if len(batch) < 40:
        res.applicable = f"{len(batch)} graphs are too few to split four ways (need >= 40)"
        return res
    # The input of each block that writes (a position is read later only through the attention of the
    # blocks from there on), and the final output where extra heads read it (prompt positions only).
    layers = blocks + ([n_layers] if objective.extra_heads else [])
    res.layers = layers
    rng = np.random.default_rng([seed, 43])
    order = rng.permutation(len(batch))
    q = len(batch) // 4
    train, sel, ev = np.sort(order[: 2 * q]), np.sort(order[2 * q: 3 * q]), np.sort(order[3 * q:])
    res.n_eval = len(ev)
    perms = np.stack([rng.permutation(len(batch)) for _ in range(shuffles)])  # (K, B)
    n_classes = int(batch.task.d_vocab)
    pairs = goal_swap_pairs(batch[torch.from_numpy(ev)], seed)
    gaps = _decision_gap(model, objective, pairs, batch_size)
    res.gap, res.gap_ci, res.n_pairs = float(gaps.mean()), [float(v) for v in t_ci(gaps)], len(gaps)
    follows = res.gap_ci[0] > res.gap_min  # without a goal effect to restore there is nothing to check causally
    sites: dict = {}
    roles = {"each edge's parent token": batch.edge_parent_pos[0].tolist(),
             "each edge's child token": batch.edge_child_pos[0].tolist(),
             "each edge's separator": batch.edge_sep_pos[0].tolist()}
    ctx = _Cells(model, objective, acts, layers, positions, all_labels, p_dec, (train, sel, ev), n_classes, roles)
    for tgt in targets(batch):
        cells, fits = _probe_target(res, ctx, tgt, perms)
        for kind in ("before", "at"):
            _search_target(res, ctx, tgt, kind, cells, fits, pairs, follows, sites, seed, batch_size)
    return res


@dataclass
class _Cells:
    """What probing a target at every cell needs: the residuals at the block inputs and positions,
    the split of the graphs (train, selection, evaluation) and where each edge role sits."""

    model: object
    objective: Objective
    acts: torch.Tensor  # (B, n_layers+1, n_pos, d_model)
    layers: list  # the block inputs probed (and the final output where extra heads read it)
    positions: list  # absolute positions from the goal to the decision
    all_labels: list  # every position's label
    p_dec: int  # the decision position
    split: tuple  # (train, selection, evaluation) graph indices
    n_classes: int
    roles: dict  # edge role -> positions (the edge target: one probe per role)

    def before(self, c) -> bool:
        return isinstance(c[1], str) or self.positions[c[1]] < self.p_dec


def _probe_target(res: PlanDepthResult, ctx: _Cells, tgt, perms) -> tuple[dict, dict]:
    """Fit `tgt`'s probe (and its relabelled copies) at every cell; write its profile into `res`.
    Returns (cells: (layer index, position index or role) -> (selection, evaluation) scores,
    fits: the same keys -> (the true probe, its positions))."""
    labs, cands = _labellings(tgt, perms)
    n_layers, positions, (_, _, ev) = ctx.model.cfg.n_layers, ctx.positions, ctx.split
    acc = np.full((len(ctx.layers), len(positions)), np.nan)
    lo, hi = acc.copy(), acc.copy()
    cells, fits = {}, {}  # (li, pj or role) -> (sel (K+1, n), ev (K+1, n)); the fitted true probes
    for li, layer in enumerate(ctx.layers):
        if tgt.candidates is None:  # the edge target: one probe per token role, rows pooled over edges
            for role, where in ctx.roles.items():
                cols = [positions.index(p) for p in where]
                s, e, pipe = _fit_cell(ctx.acts[:, layer][:, cols], tgt, labs, cands, ctx.split, ctx.n_classes)
                cells[(li, role)], fits[(li, role)] = (s, e), (pipe, where)
            continue
        for pj, p in enumerate(positions):
            if layer == n_layers and p >= ctx.p_dec:
                continue  # the final output at the decision position is the answer itself
            s, e, pipe = _fit_cell(ctx.acts[:, layer, pj], tgt, labs, cands, ctx.split, ctx.n_classes)
            cells[(li, pj)], fits[(li, pj)] = (s, e), (pipe, [p])
            acc[li, pj] = e[0].mean()
            lo[li, pj], hi[li, pj] = wilson_ci(int(round(e[0].sum())), len(ev))
    res.profile[tgt.name] = {"label": tgt.label, "chance": tgt.chance, "accuracy": acc.tolist(),
                             "ci": np.stack([lo, hi], -1).tolist()}
    if tgt.candidates is None:
        res.profile[tgt.name]["by_role"] = {role: [float(cells[(li, role)][1][0].mean()) for li in range(len(ctx.layers))]
                                            for role in ctx.roles}
    return cells, fits


def _search_target(res: PlanDepthResult, ctx: _Cells, tgt, kind: str, cells: dict, fits: dict, pairs, follows: bool,
                   sites: dict, seed: int, batch_size: int) -> None:
    """`tgt`'s search among the cells before the decision position ("before") or at it ("at"), and the
    causal check at its chosen cell (and, before the answer, at the other readable cells)."""
    keep = ctx.before if kind == "before" else (lambda c: not ctx.before(c))
    chosen = _search({c: v for c, v in cells.items() if keep(c)})
    if chosen is None:
        return
    n_layers, layers, model, objective = ctx.model.cfg.n_layers, ctx.layers, ctx.model, ctx.objective
    (li, pj), figures = chosen
    pipe, where = fits[(li, pj)]
    key = f"{tgt.name}|{kind}"
    res.searches[key] = ProbeCell(target=tgt.name, label=tgt.label, kind=kind, layer=layers[li], positions=where,
                                  position_label=pj if isinstance(pj, str) else ctx.all_labels[where[0]],
                                  chance=tgt.chance, **figures)
    # Causal check where a plan could be claimed: the probe reads more than its relabelled copies
    # (CI), the goal moves the decision, and the cell feeds the decision (the final output at a
    # prompt position feeds only the extra heads).
    if not (follows and figures["selectivity_ci"][0] > 0 and layers[li] < n_layers):
        return
    res.causal[key] = probe_patching(model, objective, pairs, pipe, tgt, layers[li], where, ctx.n_classes, sites, seed,
                                     batch_size)
    if kind == "before":  # the answer "no sub-goal is used" must not rest on the chosen cell alone
        res.causal_cells[key] = _other_cells(
            {c: v for c, v in cells.items() if keep(c) and c != (li, pj) and layers[c[0]] < n_layers},
            lambda c: probe_patching(model, objective, pairs, fits[c][0], tgt, layers[c[0]], fits[c][1],
                                     ctx.n_classes, sites, seed, batch_size),
            lambda c: {"layer": layers[c[0]], "positions": fits[c][1],
                       "position_label": c[1] if isinstance(c[1], str) else ctx.all_labels[fits[c][1][0]]})


def _other_cells(cells: dict, patch, where) -> dict:
    """The cells (besides the chosen one) where the probe reads the target — the paired selectivity's
    t interval on the evaluation graphs above 0 — most selective first; the first CAUSAL_CELLS of them
    patched (`patch(cell)`), each with `where(cell)`."""
    passing = []
    for c, (_, e) in cells.items():
        paired = e[0] - e[1:].mean(0)
        lo, hi = t_ci(paired)
        if lo > 0:
            passing.append((float(paired.mean()), c, [float(lo), float(hi)]))
    passing.sort(key=lambda t: -t[0])
    checked = [{**where(c), "selectivity": sel, "selectivity_ci": ci, **patch(c)} for sel, c, ci in passing[:CAUSAL_CELLS]]
    return {"passing": len(passing), "checked": checked}


@torch.no_grad()
def _decision_gap(model, objective: Objective, pairs, batch_size: int) -> np.ndarray:
    """Per pair: logit(clean decision) - logit(swapped decision) at the decision position, in the clean
    run minus in the swapped run (> 0 where the decision follows the goal)."""
    clean, swapped = pairs
    k = objective.decision_index(clean.target.shape[1])
    a, b = objective.labels(clean)[:, k], objective.labels(swapped)[:, k]
    device = next(model.parameters()).device
    out = []
    for run in (clean, swapped):
        ld = []
        for start in range(0, len(run), batch_size):
            rows = slice(start, start + batch_size)
            with autocast(device):
                logits = objective.forced_logits(model, run[rows].to(device))[:, k].float().cpu()  # (b, V)
            r = torch.arange(len(logits))
            ld.append((logits[r, a[rows]] - logits[r, b[rows]]).numpy())
        out.append(np.concatenate(ld))
    return out[0] - out[1]


def _search(cells: dict):
    """The selected cell: the earliest block input among the cells whose selection-quarter accuracy
    is within one standard error of the best (the one-standard-error rule: where a target is first
    readable is where it is formed; later cells may hold it after it was used). The same selection
    for every relabelling gives the whole search's null (the max statistic on the evaluation quarter).
    Cell keys are (layer index, position index or role)."""
    if not cells:
        return None
    keys = list(cells)
    sel = np.stack([cells[c][0].mean(-1) for c in keys])  # (cells, K+1)
    ev = np.stack([cells[c][1].mean(-1) for c in keys])
    best = sel.max(0)  # (K+1,)
    se = np.sqrt(best * (1 - best) / cells[keys[0]][0].shape[1])
    depth = np.array([c[0] for c in keys], dtype=float)[:, None]  # (cells, 1)
    pick = np.where(sel >= best - se - 1e-12, depth * 10 - sel, np.inf).argmin(0)  # (K+1,) under each labelling
    observed = ev[pick[0], 0]
    null = ev[pick[1:], np.arange(1, ev.shape[1])]  # (K,)
    e = cells[keys[pick[0]]][1]  # (K+1, n) the chosen cell's evaluation correctness
    paired = e[0] - e[1:].mean(0)  # per evaluation graph: true minus relabelled
    s_lo, s_hi = t_ci(paired)
    lo, hi = wilson_ci(int(round(e[0].sum())), e.shape[1])
    return keys[pick[0]], {
        "accuracy": float(observed), "accuracy_ci": [lo, hi], "selectivity": float(paired.mean()),
        "selectivity_ci": [float(s_lo), float(s_hi)], "control_shuffle": float(e[1:].mean()),
        "null_p": float((1 + (null >= observed - 1e-12).sum()) / (len(null) + 1)),
        "null_max": float(null.max()) if len(null) else None, "cells_searched": len(keys)}


@torch.no_grad()
def probe_patching(model, objective: Objective, pairs, pipe, tgt: _Target, layer: int,
                   positions: list[int], n_classes: int, sites: dict, seed: int, batch_size: int,
                   n_random: int = 3) -> dict:
    """On goal-swap pairs (clean = the evaluation graphs, swapped = the goal on another arm):
    the swapped run with the clean run's residual component along the probe's directions at (layer,
    positions) — for an identity target the two classes that differ between the pair (the clean and
    the swapped node), for the edge target its one direction. Normalised like activation patching,
    (patched - swapped) / (clean - swapped) of the decision logit difference, with a paired bootstrap
    CI; beside it the whole residual at those positions and random subspaces of the same size."""
    from scipy import stats

    from hansprobe.mechanics.steering import _Site

    clean, swapped = pairs
    k = objective.decision_index(clean.target.shape[1])
    a, b = objective.labels(clean)[:, k], objective.labels(swapped)[:, k]  # (n,) the two decision nodes
    if layer not in sites:
        sites[layer] = (_Site(model, objective, clean, layer, batch_size), _Site(model, objective, swapped, layer, batch_size))
    site_c, site_x = sites[layer]
    pos = torch.tensor(positions)
    x_clean = site_c.resid[:, pos].float().cpu()  # (n, P, d)
    ld_clean = site_c.logit_diff(a, b, positions, None)
    ld_swapped = site_x.logit_diff(a, b, positions, None)
    scaler, ridge = pipe[0], pipe[-1]
    if tgt.candidates is None:  # the true labelling's class weights (its columns come first): one subspace
        n_cls = int(tgt.labels.max()) + 1
        W = torch.tensor(ridge.coef_[:n_cls] / scaler.scale_[None, :], dtype=torch.float32)  # (C, d)
        basis = torch.linalg.qr(W.T)[0].expand(len(a), -1, -1)  # (n, d, C)
    else:  # the true labelling's class weights come first, in the raw residual basis
        W = torch.tensor(ridge.coef_[:n_classes] / scaler.scale_[None, :], dtype=torch.float32)  # (C, d)
        here, there = clean.target[:, tgt.index], swapped.target[:, tgt.index]  # the node at this depth in each run
        basis = torch.linalg.qr(torch.stack([W[here], W[there]], -1))[0]  # (n, d, 2) orthonormal per pair

    def logit_diff(q):
        """The swapped run with the clean residual's component in span(q) (all of it: q None) at the positions."""
        def edit(x, r):  # x (b, P, d)
            delta = x_clean[r].to(x.device) - x.float()
            if q is not None:
                qq = q[r].to(x.device)  # (b, d, k)
                delta = torch.einsum("bdk,bpk->bpd", qq, torch.einsum("bdk,bpd->bpk", qq, delta))
            return (x.float() + delta).to(x.dtype)
        return site_x.logit_diff(a, b, positions, edit)

    gen = torch.Generator().manual_seed(seed)
    whole = logit_diff(None)
    probe = logit_diff(basis)
    rand = [logit_diff(torch.linalg.qr(torch.randn(len(a), basis.shape[1], basis.shape[2], generator=gen))[0])
            for _ in range(n_random)]
    gap = ld_clean - ld_swapped

    def norm(patched):
        def ratio(p, c, g):
            return (p - c).mean() / g.mean() if abs(g.mean()) > 1e-9 else np.nan
        value = float(ratio(patched, ld_swapped, gap))
        if len(patched) < 3 or not np.isfinite(value):
            return PatchEffect(normalized=value, ci=[value, value])
        ci = stats.bootstrap((patched, ld_swapped, gap), ratio, paired=True, vectorized=False, n_resamples=999,
                             random_state=np.random.default_rng(seed), method="percentile").confidence_interval
        return PatchEffect(normalized=value, ci=[float(ci.low), float(ci.high)])

    return CausalCheck(layer=layer, positions=positions, n_pairs=len(a), gap=float(gap.mean()),
                       gap_ci=[float(v) for v in t_ci(gap)], probe_directions=norm(probe),
                       random_directions=norm(np.mean(rand, 0)), whole_residual=norm(whole))


register_analysis(AnalysisSpec(
    name="plan_depth", title="Plan depth profile", order=40,
    measure=lambda ctx: measure_plan_depth(ctx.model, ctx.objective, ctx.mechanism_batch, seed=ctx.seed,
                                           batch_size=min(ctx.batch_size, 500)),
    captions={
        "plan_depth_profile": "For each target (the sub-goal chain from the goal's parent to the decision node), the "
                              "held-out accuracy of a linear probe at the best position, at the input of each block. "
                              "Look for: the chain rising one hop per block, and the decision node readable before the "
                              "answer position.",
        "plan_depth_decision_node": "Decision-node probe accuracy per block input and position (evaluation graphs).",
    },
))
