"""Find the Clever-Hans heads: score every head against reference attention patterns at the
shortcut queries, then test the high scorers causally by zero- and mean-ablating them (alone, as a
group, and layer by layer) and measuring forced accuracy.

A head is called a *Clever-Hans head* only when it scores high on the forward edge lookup AND the
joint ablation of all such heads drops forced accuracy at the shortcut positions (label indices
2 .. l-2) by at least DROP_THRESHOLD (docs/heads.md justifies both thresholds).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from hansprobe.analyses.base import Result, chunks, t_ci
from hansprobe.analyses.follow import measure_follow
from hansprobe.analyses.patterns import REFERENCE_PATTERNS, PatternFn, query_positions
from hansprobe.errors import ConfigError
from hansprobe.objectives import Objective, autocast
from hansprobe.tasks.base import Batch

SCORE_THRESHOLD = 0.5  # mass on the edge's span at the shortcut queries (uniform gives ~3/(q+1) ~ 0.1)
UNIFORM_MULTIPLE = 3.0  # and at least this many times what a uniform head would give
DROP_THRESHOLD = 0.5  # joint ablation must remove at least this much forced accuracy at indices 2..l-2


def shortcut_indices(target_len: int) -> list[int]:
    """Label indices read only through the shortcut: 2 .. l-2 (the last can copy the goal); l-1 if that is empty."""
    return list(range(2, target_len - 1)) or [target_len - 1]


@dataclass
class HeadsResult(Result):
    objective: str
    n_graphs: int
    n_layers: int
    n_heads: int
    query_label_indices: list[int]
    patterns: dict  # pattern -> component -> {"score": [L][H], "ci": [L][H][2], "uniform": float}
    baseline: dict  # forced_accuracy per index, decision_accuracy, shortcut_accuracy
    ablations: list  # {"kind", "pattern", "heads", "mode", "forced_accuracy", "decision_accuracy", "shortcut_accuracy", "drop"}
    heads: list  # one per layer/head, see measure_heads
    clever_hans_group: dict
    pattern_groups: dict  # pattern -> {"heads", "ablation_drop", "ablation_drop_zero"} for every lookup pattern with high scorers
    follow: dict | None
    thresholds: dict = field(default_factory=dict)
    verdict: str = ""

    def figures(self) -> dict:
        import plotly.graph_objects as go

        figs = {}
        for name in ("edge_lookup", "child_parent_lookup"):
            if name not in self.patterns:
                continue
            total = np.array(self.patterns[name]["span"]["score"])
            fig = go.Figure(go.Heatmap(z=total, x=[f"H{h}" for h in range(self.n_heads)],
                                       y=[f"L{l}" for l in range(self.n_layers)], zmin=0, zmax=1,
                                       colorscale="Blues", text=np.round(total, 2), texttemplate="%{text}"))
            fig.update_layout(title=f"{name}: attention mass on the edge's span at the shortcut queries "
                                    f"({self.objective}, {self.n_graphs} graphs; uniform head "
                                    f"{self.patterns[name]['span']['uniform']:.2f})",
                              xaxis_title="head", yaxis_title="layer", yaxis_autorange="reversed")
            figs[f"{name}_scores"] = fig
        comps = ["parent", "child", "separator"]
        fig = go.Figure()
        for c in comps:
            fig.add_bar(name=c, x=[f"L{h['layer']}H{h['head']}" for h in self.heads],
                        y=[h["edge_lookup_components"][c] for h in self.heads])
        fig.update_layout(barmode="stack", yaxis_range=[0, 1], yaxis_title="attention mass",
                          title="Edge lookup by component: parent, child, separator after the edge")
        figs["edge_lookup_components"] = fig
        rows = [a for a in self.ablations if a["mode"] == "mean"]
        fig = go.Figure(go.Bar(x=[a["label"] for a in rows], y=[a["shortcut_accuracy"] for a in rows],
                               name="mean ablation"))
        fig.add_bar(x=[a["label"] for a in self.ablations if a["mode"] == "zero"],
                    y=[a["shortcut_accuracy"] for a in self.ablations if a["mode"] == "zero"], name="zero ablation")
        fig.add_hline(y=self.baseline["shortcut_accuracy"], line_dash="dot", annotation_text="no ablation")
        fig.update_layout(barmode="group", yaxis_range=[0, 1.05], yaxis_title="forced accuracy, indices 2..l-2",
                          title="Ablation: single heads, layers and the high-scoring groups")
        figs["ablation"] = fig
        return figs


def pattern_masses(att: torch.Tensor, batch: Batch, objective: Objective, patterns: dict[str, PatternFn]) -> dict:
    """Per-graph attention mass of every head on each pattern component, mean over the shortcut
    queries: {pattern: {component: ((B, L, H) mass, (B,) uniform-head mass)}}. `att` is the heads'
    attention rows at the queries, (B, L, H, Q, T). Edge patterns also get their "span" (the sum)."""
    q = query_positions(batch, objective)
    causal = torch.arange(att.shape[-1])[None, :] <= q[:, None]  # (Q, T) keys a query can see
    out = {}
    for name, fn in patterns.items():
        comps = fn(batch, objective)
        if "span" not in comps and len(comps) > 1:
            comps = {**comps, "span": torch.stack(list(comps.values())).any(0)}
        out[name] = {}
        for comp, mask in comps.items():
            mask = mask & causal[None]  # (B, Q, T)
            mass = (att * mask[:, None, None].float()).sum(-1).mean(-1)  # (B, L, H)
            out[name][comp] = (mass, (mask.sum(-1).float() / (q + 1).float()).mean(-1))
    return out


def summarise_masses(masses: dict) -> dict:
    """Mean per head with a t interval over graphs, and the uniform head's mass."""
    out = {}
    for name, comps in masses.items():
        out[name] = {}
        for comp, (mass, uniform) in comps.items():
            lo, hi = t_ci(mass.double().numpy(), axis=0)
            out[name][comp] = {"score": mass.mean(0).tolist(), "ci": np.stack([lo, hi], -1).tolist(),
                               "uniform": float(uniform.mean())}
    return out


def score_patterns(att: torch.Tensor, batch: Batch, objective: Objective, patterns: dict[str, PatternFn]) -> dict:
    """Scores from a given attention tensor (B, L, H, Q, T) at the shortcut queries."""
    return summarise_masses(pattern_masses(att, batch, objective, patterns))


@torch.no_grad()
def score_heads(model, objective: Objective, batch: Batch, patterns: dict[str, PatternFn], batch_size: int = 1000,
                progress: bool = False) -> tuple[dict, list[torch.Tensor]]:
    """Pattern scores of every head, and the per-position mean of every head's z (for mean
    ablation), from one cached pass per chunk holding only the patterns and z. Memory stays
    bounded: per graph only (L, H) masses are kept."""
    device = next(model.parameters()).device
    q = query_positions(batch, objective).to(device)
    n_layers = model.cfg.n_layers
    parts: list[dict] = []
    z_sum, n = None, 0
    for chunk in chunks(batch, batch_size, "attention", progress):
        chunk_dev = chunk.to(device)
        with autocast(device):
            _, cache = model.run_with_cache(objective.inputs(chunk_dev),
                                            names_filter=lambda n: n.endswith(("attn.hook_pattern", "attn.hook_z")))
        att = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][:, :, q].float() for l in range(n_layers)], 1).cpu()
        parts.append(pattern_masses(att, chunk, objective, patterns))  # att: (b, L, H, Q, T)
        zs = [cache[f"blocks.{l}.attn.hook_z"].float().sum(0) for l in range(n_layers)]  # (T, H, d_head)
        z_sum = zs if z_sum is None else [a + b for a, b in zip(z_sum, zs)]
        n += len(chunk)
    merged = {name: {comp: (torch.cat([p[name][comp][0] for p in parts]), torch.cat([p[name][comp][1] for p in parts]))
                     for comp in parts[0][name]} for name in parts[0]}
    return summarise_masses(merged), [z / n for z in z_sum]


def _ablation_hooks(heads: list[tuple[int, int]], mode: str, mean_z: list[torch.Tensor]):
    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        by_layer.setdefault(l, []).append(h)

    def make(layer, hs):
        def hook(z, hook):  # z: (B, T, H, d_head)
            z = z.clone()
            z[:, :, hs] = 0.0 if mode == "zero" else mean_z[layer][: z.shape[1], hs].to(z.dtype)
            return z
        return hook

    return [(f"blocks.{l}.attn.hook_z", make(l, hs)) for l, hs in by_layer.items()]


@torch.no_grad()
def forced_accuracy(model, objective: Objective, batch: Batch, batch_size: int = 1000, hooks=()) -> dict:
    """Forced accuracy per label index (optionally under hooks), decision and shortcut accuracy."""
    device = next(model.parameters()).device
    ok = []
    with model.hooks(fwd_hooks=list(hooks)):
        for chunk in batch.split(batch_size):
            chunk = chunk.to(device)
            ok.append((objective.forced_logits(model, chunk).argmax(-1) == objective.labels(chunk)).float().cpu())
    acc = torch.cat(ok).mean(0).tolist()
    length = len(acc)
    return {"forced_accuracy": acc, "decision_accuracy": acc[objective.decision_index(length)],
            "shortcut_accuracy": float(np.mean([acc[i] for i in shortcut_indices(length)]))}


def _check_heads(model, heads) -> None:
    for l, h in heads:
        if not (0 <= l < model.cfg.n_layers and 0 <= h < model.cfg.n_heads):
            raise ConfigError(f"head L{l}H{h} does not exist: the model has {model.cfg.n_layers} layers x {model.cfg.n_heads} heads")


def _high_scorers(scores: dict, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    span = scores["span"]
    return [(l, h) for l in range(n_layers) for h in range(n_heads)
            if span["score"][l][h] >= SCORE_THRESHOLD and span["score"][l][h] >= UNIFORM_MULTIPLE * span["uniform"]]


def measure_heads(model, objective: Objective, batch: Batch, batch_size: int = 1000, seed: int = 0,
                  patterns: dict[str, PatternFn] | None = None, extra_groups: list[list[tuple[int, int]]] = (),
                  progress: bool = False) -> HeadsResult:
    """Score every head on the reference patterns (plus `patterns`, user functions of (batch,
    objective) -> {component: (B, Q, T) bool}), ablate heads, groups and layers, and measure the
    follow rate. `extra_groups` are further head groups to ablate jointly."""
    if objective.teacherless:
        raise ConfigError(f"head scores need teacher-forced inputs (r_(i-1) at the query); objective {objective.name!r} has none")
    if batch.target.shape[1] < 3:
        raise ConfigError("the shortcut needs path_len >= 3 (a label index i >= 2)")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    for group in extra_groups:
        _check_heads(model, group)
    scores, mean_z = score_heads(model, objective, batch, {**REFERENCE_PATTERNS, **(patterns or {})}, batch_size, progress)
    base = forced_accuracy(model, objective, batch, batch_size)

    ablations = []

    def ablate(kind, label, heads, pattern=None):
        rows = {}
        for mode in ("zero", "mean"):
            res = forced_accuracy(model, objective, batch, batch_size, _ablation_hooks(heads, mode, mean_z))
            row = {"kind": kind, "label": label, "pattern": pattern, "heads": [list(h) for h in heads], "mode": mode, **res,
                   "drop": base["shortcut_accuracy"] - res["shortcut_accuracy"]}
            ablations.append(row)
            rows[mode] = row
        return rows

    single = {(l, h): ablate("head", f"L{l}H{h}", [(l, h)]) for l in range(n_layers) for h in range(n_heads)}
    for l in range(n_layers):
        ablate("layer", f"layer {l}", [(l, h) for h in range(n_heads)])
    pattern_groups = {}
    for name in ("edge_lookup", "child_parent_lookup"):
        group = _high_scorers(scores[name], n_layers, n_heads)
        if group:
            rows = ablate("group", f"{name} heads", group, name)
            pattern_groups[name] = {"heads": [list(h) for h in group], "ablation_drop": rows["mean"]["drop"],
                                    "ablation_drop_zero": rows["zero"]["drop"],
                                    "shortcut_accuracy_after": rows["mean"]["shortcut_accuracy"]}
    for group in extra_groups:
        ablate("group", "+".join(f"L{l}H{h}" for l, h in group), list(group), "user")

    forward = pattern_groups.get("edge_lookup")
    group_ok = forward is not None and forward["ablation_drop"] >= DROP_THRESHOLD
    high = set(map(tuple, forward["heads"])) if forward else set()
    heads = []
    for l in range(n_layers):
        for h in range(n_heads):
            comps = scores["edge_lookup"]
            heads.append({
                "layer": l, "head": h,
                "edge_lookup_score": comps["span"]["score"][l][h], "edge_lookup_ci": comps["span"]["ci"][l][h],
                "edge_lookup_components": {c: comps[c]["score"][l][h] for c in ("parent", "child", "separator")},
                "child_parent_score": scores["child_parent_lookup"]["span"]["score"][l][h],
                "other_patterns": {p: scores[p]["token"]["score"][l][h] for p in ("goal", "start", "previous_token")},
                "ablation_drop": single[(l, h)]["mean"]["drop"], "ablation_drop_zero": single[(l, h)]["zero"]["drop"],
                "high_score": (l, h) in high, "clever_hans": group_ok and (l, h) in high,
            })
    heads.sort(key=lambda r: -r["edge_lookup_score"])
    ch_group = {"heads": [[r["layer"], r["head"]] for r in heads if r["clever_hans"]],
                "ablation_drop": forward["ablation_drop"] if forward else 0.0,
                "ablation_drop_zero": forward["ablation_drop_zero"] if forward else 0.0,
                "shortcut_accuracy_after": forward["shortcut_accuracy_after"] if forward else base["shortcut_accuracy"]}
    follow = None
    if batch.candidates.shape[1] >= 2:
        follow = measure_follow(model, objective, batch, seed=seed, batch_size=batch_size).to_dict()
    return HeadsResult(
        objective=objective.name, n_graphs=len(batch), n_layers=n_layers, n_heads=n_heads,
        query_label_indices=list(range(2, batch.target.shape[1])), patterns=scores, baseline=base,
        ablations=ablations, heads=heads, clever_hans_group=ch_group, pattern_groups=pattern_groups, follow=follow,
        thresholds={"score": SCORE_THRESHOLD, "uniform_multiple": UNIFORM_MULTIPLE, "drop": DROP_THRESHOLD},
        verdict=_verdict(ch_group, pattern_groups, base, group_ok),
    )


def _verdict(ch_group, pattern_groups, base, group_ok) -> str:
    if group_ok:
        names = ", ".join(f"L{l}H{h}" for l, h in ch_group["heads"])
        return (f"Clever-Hans heads {names}: they put >= {SCORE_THRESHOLD} of their attention on the edge (r_(i-1), r_i) "
                f"and ablating them together (mean) drops forced accuracy at indices 2..l-2 from "
                f"{base['shortcut_accuracy']:.3f} to {ch_group['shortcut_accuracy_after']:.3f}")
    if "edge_lookup" in pattern_groups:
        g = pattern_groups["edge_lookup"]
        return (f"heads {g['heads']} score high on the forward edge lookup but ablating them together drops forced "
                f"accuracy by only {g['ablation_drop']:.3f} (< {DROP_THRESHOLD}): no causal evidence, no Clever-Hans heads named")
    other = pattern_groups.get("child_parent_lookup")
    if other:
        return (f"no head scores high on the forward edge lookup; heads {other['heads']} do the child->parent lookup "
                f"instead (joint mean ablation drop {other['ablation_drop']:.3f}); not a forward Clever-Hans mechanism")
    return "no head scores high on the forward edge lookup or the child->parent lookup"
