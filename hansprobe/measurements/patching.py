"""Activation patching on path-star: where is the decision computed (or not)?

Clean/corrupted pairs are the same graph with another goal arm, so every position lines up and
only the goal token and the answer differ. Metric: logit(clean answer) - logit(corrupted answer)
at the first label index where the two answers differ (the decision token under forward targets),
normalised (patched - corrupted) / (clean - corrupted) on the batch means; KL(clean || patched) as a
second metric. Sweeps use `transformer_lens.patching` with per-example values (`PatchingResult`,
bootstrap intervals); a text-format model's run the same cells from a held prefix, in chunks
(patching_suffix.py, decision 72), into the same `PatchingResult`. Where the clean-corrupted gap is too small to measure — the mean |gap| per
pair, so that a sign-inconsistent use of the goal still counts — the analysis says so instead of
drawing noise: an indecipherable model has no decision to restore.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import torch

from hansprobe.mechanics.results import Result, fmt_ci, mean_ci, t_ci, wilson_ci
from hansprobe.mechanics.follow import swap_node
from hansprobe.measurements.registry import AnalysisSpec, register_analysis
from hansprobe.errors import ConfigError
from hansprobe.fused import FusedGPT, has_forward_hooks, inference_view, logits_at
from hansprobe.measurements.patching_suffix import SWEEP_ACTIVATION, suffix_sweeps, swap_patched_predictions
from hansprobe.options import CommandOption
from hansprobe.objectives import Objective, successor_indices
from hansprobe.tasks.base import Batch, TokenNames, other_arm, prompt_positions

SWEEPS = ("resid", "attn", "mlp", "heads", "heads-by-pos")
PER_POSITION = {s: a for s, a in SWEEP_ACTIVATION.items() if s != "heads"}  # the per-position sweeps' activations
GAP_MIN = 0.1  # nats: the mean |clean - corrupted| logit difference must lie above this (CI) to be restorable


def goal_swap_pairs(batch: Batch, seed: int = 0) -> tuple[Batch, Batch]:
    """(clean, corrupted): the corrupted graph is the clean one with the goal on another arm
    (same edges in the same order, so positions line up)."""
    if "goal_swap" not in batch.task.counterfactuals:
        raise ConfigError(f"goal-swap pairs need a choice to move the goal between; {batch.task.describe()} has none")
    return batch, batch.task.counterfactuals["goal_swap"](batch, seed)


def edge_order_pairs(batch: Batch, seed: int = 0) -> tuple[Batch, Batch]:
    """(clean, corrupted): the same graph and goal with the edges listed in another order."""
    return batch, batch.task.placebo(batch, seed)


def metric_index(objective: Objective, clean: Batch, corrupted: Batch) -> int:
    """The first label index whose correct token differs between the clean and corrupted runs."""
    differs = (objective.labels(clean) != objective.labels(corrupted)).any(0)
    if not differs.any():
        raise ConfigError("the clean and corrupted answers never differ: nothing to patch")
    return int(differs.nonzero()[0, 0])


def position_labels(batch: Batch) -> list[str]:
    """A name for every input position: u{i} v{i} and the separator of edge i, start, goal, `=`, the
    answer slots a{j}; any other prompt token by its text (e.g. `/` in a goal-first prompt)."""
    p = batch.prefix.shape[1]
    names = [batch.task.token_str(t) if isinstance(batch.task, TokenNames) else "?" for t in batch.prefix[0].tolist()]
    for i, (u, v, sep) in enumerate(zip(batch.edge_parent_pos[0].tolist(), batch.edge_child_pos[0].tolist(),
                                        batch.edge_sep_pos[0].tolist())):
        names[u], names[v] = f"u{i}", f"v{i}"
        names[sep] = names[sep] if sep == p - 1 else ("|" if i < batch.edge_parent.shape[1] - 1 else "/")
    for name, pos in prompt_positions(batch).items():
        names[pos] = name
    return names + [f"a{j}" for j in range(batch.target.shape[1] - 1)]


class PatchSweep(TypedDict):
    """One sweep in one direction (PatchingResultSummary.sweeps[sweep][direction], .heads[direction]):
    the normalised logit difference per cell (0 = the run patched into, 1 = the run patched from),
    its bootstrap CI, and the KL divergence from the patched-into run."""

    normalized: list  # [layer][position], [layer][head] or [layer][position][head]
    ci_low: list
    ci_high: list
    kl: list


class TopComponent(TypedDict):
    """One of the strongest components (PatchingResultSummary.top), as the decision question cites it."""

    component: str  # e.g. "resid L1 @ goal", "head L0H2 (sufficiency)"
    normalized: float


@dataclass
class PatchingResultSummary(Result):
    objective: str
    n_pairs: int
    metric_label_index: int
    metric_position: int
    clean_logit_diff: float
    corrupted_logit_diff: float
    gap: float  # signed mean of logit diff(clean) - logit diff(corrupted)
    gap_ci: tuple[float, float]
    abs_gap: float  # mean |per-pair gap|: what decides `measurable`
    abs_gap_ci: tuple[float, float]
    measurable: bool
    position_labels: list[str]
    sweeps: dict[str, dict[str, PatchSweep]] = field(default_factory=dict)  # "resid|attn|mlp" -> direction -> [L][T] cells
    heads: dict[str, PatchSweep] = field(default_factory=dict)  # direction -> [L][H] (each head's output, all positions)
    heads_by_pos: dict[str, PatchSweep] = field(default_factory=dict)  # direction -> [L][T][H]
    top: list[TopComponent] = field(default_factory=list)  # strongest components
    shortcut: dict | None = None  # teacher-forced shortcut patching: rate of predicting child(w) per layer x index
    gap_min: float | None = None  # the bar `measurable` was decided at (GAP_MIN)

    @property
    def verdict(self) -> str:
        """Whether there is a goal effect to restore, and the strongest components, in a sentence."""
        return self.prose()["verdict"]

    def prose(self) -> dict[str, str]:
        lo, hi = self.abs_gap_ci
        if self.measurable:
            return {"verdict": f"clean-corrupted gap |{self.abs_gap:.3f}| [{lo:.3f}, {hi:.3f}] nats per pair (signed "
                               f"{self.gap:.3f}): measurable; strongest: "
                               + "; ".join(f"{t['component']} {t['normalized']:.2f}" for t in self.top[:3])}
        return {"verdict": f"no decision computation to restore: swapping the goal moves the decision logit difference by "
                           f"|{self.abs_gap:.3f}| [{lo:.3f}, {hi:.3f}] nats per pair (signed {self.gap:.3f} "
                           f"[{self.gap_ci[0]:.3f}, {self.gap_ci[1]:.3f}]), not shown above {self.gap_min}"}

    def text(self) -> str:
        lines = [f"  logit difference clean {self.clean_logit_diff:.3f}, corrupted {self.corrupted_logit_diff:.3f}, "
                 f"gap {fmt_ci(self.gap, self.gap_ci)} nats", f"  {self.verdict}"]
        for t in self.top:
            lines.append(f"  {t['component']:32s} normalised {t['normalized']:+.3f}")
        for i, rates in (self.shortcut or {}).get("move_rate", {}).items():
            lines.append(f"  shortcut patching, index {i}: share predicting child(w) by layer "
                         + ", ".join(f"L{l} {r:.3f}" for l, r in enumerate(rates)))
        return "\n".join(lines)

    def figures(self) -> dict:
        import plotly.graph_objects as go

        figs = {}
        for sweep, by_dir in self.sweeps.items():
            for direction, r in by_dir.items():
                z = np.array(r["normalized"], dtype=float)[:, : self.metric_position + 1]
                fig = go.Figure(go.Heatmap(z=z, x=self.position_labels[: self.metric_position + 1],
                                           y=[f"L{l}" for l in range(z.shape[0])], zmid=0, colorscale="RdBu",
                                           texttemplate="%{z:.2f}"))
                fig.update_layout(title=f"{sweep} patching ({direction}), normalised logit difference; {self.objective}, "
                                        f"{self.n_pairs} pairs", xaxis_title="position", yaxis_title="layer")
                figs[f"patch_{sweep}_{direction}"] = fig
        for direction, r in self.heads.items():
            z = np.array(r["normalized"], dtype=float)
            lo, hi = np.array(r["ci_low"], dtype=float), np.array(r["ci_high"], dtype=float)
            names = [f"L{l}H{h}" for l in range(z.shape[0]) for h in range(z.shape[1])]
            fig = go.Figure(go.Bar(x=names, y=z.ravel(), error_y=dict(type="data", symmetric=False,
                                   array=(hi - z).ravel(), arrayminus=(z - lo).ravel())))
            fig.update_layout(title=f"head output patching, all positions ({direction})", yaxis_title="normalised effect")
            figs[f"patch_heads_{direction}"] = fig
        for direction, r in self.heads_by_pos.items():
            z = np.array(r["normalized"], dtype=float)[:, : self.metric_position + 1]  # (L, T, H)
            rows = z.transpose(0, 2, 1).reshape(-1, z.shape[1])  # one row per head
            fig = go.Figure(go.Heatmap(z=rows, x=self.position_labels[: self.metric_position + 1], zmid=0, colorscale="RdBu",
                                       y=[f"L{l}H{h}" for l in range(z.shape[0]) for h in range(z.shape[2])]))
            fig.update_layout(title=f"head output patching by position ({direction})", xaxis_title="position")
            figs[f"patch_heads_by_pos_{direction}"] = fig
        if self.shortcut:
            figs.update(ShortcutPatchingResult(**self.shortcut).figures())
        return figs


@dataclass
class ShortcutPatchingResult(Result):
    """Per label index i >= 2 and residual layer: the share of graphs predicting the swapped-in
    node's successor after patching resid_pre at r_(i-1)'s position from the swapped run."""

    move_rate: dict  # str(i) -> [rate per layer]
    move_rate_ci: dict  # str(i) -> [[lo, hi] per layer]
    note: str = ""

    def figures(self) -> dict:
        import plotly.graph_objects as go

        fig = go.Figure()
        for i, rates in self.move_rate.items():
            cis = self.move_rate_ci[i]
            fig.add_scatter(x=[f"L{l}" for l in range(len(rates))], y=rates, mode="lines+markers", name=f"index {i}",
                            error_y=dict(type="data", symmetric=False, array=[c[1] - r for r, c in zip(rates, cis)],
                                         arrayminus=[r - c[0] for r, c in zip(rates, cis)]))
        fig.update_layout(yaxis_range=[0, 1.05], title="Shortcut patching: share predicting child(w) after patching "
                          "the residual at r_(i-1) from the swapped run (95% CI)", xaxis_title="residual stream (resid_pre)")
        return {"shortcut_patching": fig}


def _logit_diff_metric(index_pos: int, good: torch.Tensor, bad: torch.Tensor):
    def metric(logits):  # (B, T, V) -> (B,)
        last = logits[:, index_pos].float()
        r = torch.arange(len(last), device=last.device)
        return last[r, good.to(last.device)] - last[r, bad.to(last.device)]
    return metric


def _kl_metric(index_pos: int, reference_logp: torch.Tensor):
    def metric(logits):
        logp = logits[:, index_pos].float().log_softmax(-1)
        ref = reference_logp.to(logp.device)
        return (ref.exp() * (ref - logp)).sum(-1)
    return metric


def _by_position_sweep(tlp, fn, model, tokens, cache, own_cache, metrics, act: str, last_pos: int):
    """A `transformer_lens.patching` sweep over (layer, pos[, head]) that runs only the cells whose patch
    can change the metric, given to the library as its `index_df`: positions up to the metric's
    (a causal model's logits there read nothing later) where the patched-in activation differs from
    the run's own in some pair (an equal one is no patch). The other cells get the unpatched run's
    values, which is what their forward passes return; the result has the full grid's shape
    (docs/decisions.md 52)."""
    import pandas as pd

    names = [tlp.utils.get_act_name(act, layer) for layer in range(model.cfg.n_layers)]
    # (L, T[, H]): does some pair's activation differ there? (resid/attn/mlp (B, T, d); z (B, T, H, dh))
    differs = torch.stack([(cache[n] != own_cache[n]).any(-1).any(0) for n in names])
    differs[:, last_pos + 1:] = False
    axes = ["layer", "pos", "head"][: differs.ndim]  # the library's names for these sweeps' axes
    cells = differs.nonzero()  # (n_cells, ndim)
    res = fn(model, tokens, cache, metrics, index_axis_names=None, index_df=pd.DataFrame(cells.tolist(), columns=axes),
             reduce="none", baseline=True)
    base = res.baseline  # (M, B): the unpatched run's metrics
    grid = base[(slice(None), *([None] * differs.ndim))].expand(base.shape[0], *differs.shape, base.shape[1]).clone()
    grid[(slice(None), *cells.T)] = res.values  # (M, n_cells, B) into (M, L, T[, H], B)
    return tlp.PatchingResult(values=grid, axis_names=axes, index_df=tlp.make_df_from_ranges(list(differs.shape), axes),
                              metric_names=res.metric_names, reduced=False, baseline=base, has_metric_axis=True)


def _normalised(res, baseline_good, baseline_bad, seed) -> PatchSweep:
    """One sweep's per-example `PatchingResult`, normalised on batch means, with bootstrap CIs."""
    ld = res["logit_diff"]
    mean = ld.mean()  # (*axes)
    lo, hi = ld.bootstrap_ci(seed=seed)
    scale = baseline_good - baseline_bad
    norm = ((mean - baseline_bad) / scale).cpu().numpy()
    return PatchSweep(normalized=norm.tolist(), ci_low=((lo - baseline_bad) / scale).cpu().numpy().tolist(),
                      ci_high=((hi - baseline_bad) / scale).cpu().numpy().tolist(),
                      kl=res["kl"].mean().cpu().numpy().tolist())


DIRECTIONS = {"sufficiency": ("sufficiency",), "necessity": ("necessity",), "both": ("sufficiency", "necessity")}


@torch.no_grad()
def measure_patching(model, objective: Objective, batch: Batch, *, sweeps=("resid",), directions=("sufficiency",),
                     seed: int = 0, batch_size: int = 1000, progress: bool | str = False) -> PatchingResultSummary:
    """`sufficiency`: clean activations patched into the corrupted run (does this component carry the
    answer?); `necessity`: corrupted activations patched into the clean run (is it needed?).
    `batch_size` bounds the pairs a pass holds where the passes are chunked (the gap, and every pass
    of a text-format model, `patching_suffix`)."""
    from transformer_lens import patching as tlp

    for s in sweeps:
        if s not in SWEEPS:
            raise ConfigError(f"unknown sweep {s!r}; valid sweeps: {', '.join(SWEEPS)}")
    for d in directions:
        if d not in ("sufficiency", "necessity"):
            raise ConfigError(f"unknown direction {d!r}; use sufficiency, necessity or both")
    with _library_bars(tlp, progress is True):  # its own tqdm bars: at a terminal only
        return _measure(tlp, model, objective, batch, sweeps, directions, seed, batch_size, progress)


@contextmanager
def _library_bars(module, show: bool):
    """transformer_lens.patching draws a tqdm bar per sweep; keep it only when progress is wanted."""
    original = module.tqdm
    if not show:
        module.tqdm = lambda iterable, *a, **k: iterable
    try:
        yield
    finally:
        module.tqdm = original


def _measure(tlp, model, objective, batch, sweeps, directions, seed, batch_size, progress) -> PatchingResultSummary:
    device = next(model.parameters()).device
    clean, corrupted = goal_swap_pairs(batch, seed)
    k = metric_index(objective, clean, corrupted)
    pos = clean.prefix.shape[1] - 1 + k
    good, bad = objective.labels(clean)[:, k], objective.labels(corrupted)[:, k]
    clean_x, corr_x = objective.inputs(clean).to(device), objective.inputs(corrupted).to(device)
    # The gap first, from plain passes (fused unless hooked; the metric reads position pos only); the
    # activation caches are built only where there is a gap to restore.
    clean_logits, corr_logits = (torch.cat([logits_at(model, c[:, :pos + 1], slice(pos, pos + 1))
                                            for c in x.split(batch_size)]) for x in (clean_x, corr_x))  # (B, 1, V)
    ld = _logit_diff_metric(pos, good, bad)
    ld_clean, ld_corr = (_logit_diff_metric(0, good, bad)(lg).cpu().numpy() for lg in (clean_logits, corr_logits))
    gap_vals = ld_clean - ld_corr
    gap_lo, gap_hi = t_ci(gap_vals)
    gap = float(gap_vals.mean())
    abs_lo, abs_hi = mean_ci(np.abs(gap_vals), seed)
    bar = GAP_MIN
    measurable = abs_lo >= bar
    labels = position_labels(clean)
    out = PatchingResultSummary(
        objective=objective.name, n_pairs=len(batch), metric_label_index=k, metric_position=pos,
        clean_logit_diff=float(ld_clean.mean()), corrupted_logit_diff=float(ld_corr.mean()), gap=gap,
        gap_ci=(float(gap_lo), float(gap_hi)), abs_gap=float(np.abs(gap_vals).mean()), abs_gap_ci=(abs_lo, abs_hi),
        measurable=measurable, position_labels=labels, gap_min=bar,
    )
    sweeps = [s for s in sweeps if not (s == "mlp" and model.cfg.attn_only)]  # an attention-only model has no MLP
    if measurable and _runs_after_prefix(model):  # a text-format model: chunked passes from the first patched position
        runs = {"sufficiency": (corr_x, clean_x), "necessity": (clean_x, corr_x)}
        metrics = {"logit_diff": lambda last, rows, own: _logit_diff_metric(0, good[rows], bad[rows])(last[:, None]),
                   "kl": lambda last, rows, own: _kl_metric(0, own.log_softmax(-1))(last[:, None])}
        results = suffix_sweeps(tlp, model, {d: runs[d] for d in directions}, sweeps, pos, metrics, batch_size, progress)
        values = {"sufficiency": (ld_clean.mean(), ld_corr.mean()), "necessity": (ld_corr.mean(), ld_clean.mean())}
        for (direction, s), res in results.items():
            _store(out, direction, s, _normalised(res, *values[direction], seed))
    elif measurable:
        clean_logits, clean_cache = model.run_with_cache(clean_x)
        corr_logits, corr_cache = model.run_with_cache(corr_x)
        ld_clean, ld_corr = ld(clean_logits).cpu().numpy(), ld(corr_logits).cpu().numpy()  # the sweeps' own baselines
        fns = {"resid": tlp.get_act_patch_resid_pre, "attn": tlp.get_act_patch_attn_out, "mlp": tlp.get_act_patch_mlp_out}
        runs = {"sufficiency": (corr_x, clean_cache, corr_cache, clean_logits, ld_clean.mean(), ld_corr.mean()),
                "necessity": (clean_x, corr_cache, clean_cache, corr_logits, ld_corr.mean(), ld_clean.mean())}
        for direction in directions:
            tokens, cache, own_cache, ref_logits, to_val, from_val = runs[direction]
            metrics = {"logit_diff": ld, "kl": _kl_metric(pos, ref_logits[:, pos].float().log_softmax(-1))}
            for s in sweeps:
                if s == "heads":
                    res = tlp.get_act_patch_attn_head_out_all_pos(model, tokens, cache, metrics, reduce="none", baseline=True)
                else:
                    fn = tlp.get_act_patch_attn_head_out_by_pos if s == "heads-by-pos" else fns[s]
                    res = _by_position_sweep(tlp, fn, model, tokens, cache, own_cache, metrics, PER_POSITION[s], pos)
                _store(out, direction, s, _normalised(res, to_val, from_val, seed))
    if measurable:
        out.top = _top_components(out)
    if (objective.teacher_forced and batch.target.shape[1] >= 3 and batch.candidates.shape[1] >= 2
            and batch.arms is not None and batch.task.lookup_indices):  # swaps r_(i-1) for another arm's node
        out.shortcut = shortcut_patching(model, objective, batch, seed, batch_size).to_dict()
    return out


def _store(out: PatchingResultSummary, direction: str, sweep: str, norm: PatchSweep) -> None:
    """A normalised sweep into the summary's field for its kind."""
    if sweep == "heads":
        out.heads[direction] = norm
    elif sweep == "heads-by-pos":
        out.heads_by_pos[direction] = norm
    else:
        out.sweeps.setdefault(sweep, {})[direction] = norm


def _runs_after_prefix(model) -> bool:
    """Whether patched passes can continue from the run's own keys and values (`forward_after`, a
    text-format model) rather than run whole: not where a hook of the caller's sits on the model,
    which must see whole passes."""
    return hasattr(model, "forward_after") and not has_forward_hooks(model)


def _top_components(res: PatchingResultSummary, n: int = 5) -> list[TopComponent]:
    rows = []
    for sweep, by_dir in res.sweeps.items():
        r = by_dir.get("sufficiency") or next(iter(by_dir.values()))
        z = np.array(r["normalized"], dtype=float)[:, : res.metric_position + 1]
        for l, p in zip(*np.unravel_index(np.argsort(-np.abs(z), axis=None)[:n], z.shape)):
            rows.append(TopComponent(component=f"{sweep} L{l} @ {res.position_labels[p]}", normalized=float(z[l, p])))
    for direction, r in res.heads.items():
        z = np.array(r["normalized"], dtype=float)
        for l, h in zip(*np.unravel_index(np.argsort(-np.abs(z), axis=None)[:n], z.shape)):
            rows.append(TopComponent(component=f"head L{l}H{h} ({direction})", normalized=float(z[l, h])))
    return sorted(rows, key=lambda r: -abs(r["normalized"]))[:n]


@torch.no_grad()
def shortcut_patching(model, objective: Objective, batch: Batch, seed: int = 0,
                      batch_size: int = 1000) -> ShortcutPatchingResult:
    """For label indices i >= 2: patch the residual stream at r_(i-1)'s position, layer by layer, from
    a run where r_(i-1) was replaced by a node w of another arm; the share predicting w's successor
    is the causal form of the follow rate (layer 0 = swapping the embedding)."""
    device = next(model.parameters()).device
    n = len(batch)
    length = batch.target.shape[1]
    arm = batch.arms[torch.arange(n), other_arm(batch, seed)]
    x = objective.inputs(batch).to(device)
    p = batch.prefix.shape[1]
    indices = successor_indices(length)
    net = inference_view(model)
    # Fused (nothing hooked on the model): only position p+i-1 differs between the patched run and the
    # clean one, from the patched block on, so it runs alone on the clean keys and values of the
    # positions before it (decision 52); a text-format model likewise from that position's text on,
    # in chunks (decision 72); else the bridge with a hook, a whole pass per layer.
    kv = net.keys_values(x[:, :p + max(indices) - 1]) if isinstance(net, FusedGPT) else None
    move, move_ci = {}, {}
    for i in indices:
        pos = p + i - 1
        w, succ = swap_node(objective, batch, arm, i)
        if _runs_after_prefix(model):
            predicted = [torch.cat(col) for col in zip(*(
                swap_patched_predictions(model, xc, wc.to(device), pos) for xc, wc in zip(x.split(batch_size),
                                                                                        w.split(batch_size))))]
        elif kv is not None:
            swapped_resid = []  # the swapped run's residual entering each block at pos, (B, 1, d_model)
            net.extend(kv, w[:, None].to(device), start=pos, keep_resid=swapped_resid)
            predicted = [net.extend(kv, start=pos, resid=swapped_resid[layer], first=layer)[:, 0].argmax(-1).cpu()
                         for layer in range(model.cfg.n_layers)]
        else:
            swapped = x.clone()
            swapped[:, pos] = w.to(device)
            _, cache = model.run_with_cache(swapped, names_filter=lambda name: name.endswith("hook_resid_pre"))
            predicted = []
            for layer in range(model.cfg.n_layers):
                name = f"blocks.{layer}.hook_resid_pre"

                def hook(act, hook, name=name, pos=pos):
                    act = act.clone()
                    act[:, pos] = cache[name][:, pos]
                    return act

                predicted.append(model.run_with_hooks(x, fwd_hooks=[(name, hook)])[:, pos].argmax(-1).cpu())
        hits = [int((pred == succ).sum()) for pred in predicted]
        move[str(i)], move_ci[str(i)] = [h / n for h in hits], [list(wilson_ci(h, n)) for h in hits]
    return ShortcutPatchingResult(
        move_rate=move, move_rate_ci=move_ci,
        note="share of predictions equal to the swapped-in node's successor after patching resid_pre at r_(i-1)'s "
             "position from the swapped run; the last index can copy the goal from the prompt")


register_analysis(AnalysisSpec(
    name="patching", title="Activation patching", order=50,
    measure=lambda ctx: measure_patching(ctx.model, ctx.objective, ctx.pairs, sweeps=tuple(ctx.options["sweep"]),
                                         directions=DIRECTIONS[ctx.options["direction"]], seed=ctx.seed,
                                         batch_size=ctx.batch_size, progress=ctx.progress),
    command="patch", command_help="activation patching on goal-swap pairs (transformer_lens.patching) and shortcut patching",
    options=(CommandOption("--sweep", "what to patch (repeatable)", default=("resid", "heads"), repeat=True,
                           choices=("resid", "attn", "mlp", "heads", "heads-by-pos")),
             CommandOption("--direction", "sufficiency: clean into corrupted; necessity: corrupted into clean",
                           default="sufficiency", choices=("sufficiency", "necessity", "both"))),
    captions={
        'patch_resid_sufficiency': 'Clean residual stream patched into the goal-swapped run, normalised (1 = clean restored). Drawn only when swapping the goal moves the metric. Look for: where the decision is computed.',
        'patch_heads_sufficiency': "Each head's output (all positions) patched clean into corrupted, with bootstrap CIs.",
        'shortcut_patching': "Patch the residual at r_(i-1) from a run where r_(i-1) was swapped: the share now predicting the swapped node's successor. Look for: ~1 = the answer is read off r_(i-1)'s position.",
    },
))
