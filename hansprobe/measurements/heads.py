"""Find the lookup mechanism causally, then describe it with attention patterns.

The mechanism is the smallest set of heads whose joint mean ablation drops forced accuracy at the
shortcut indices (label indices 2 .. l-2, where r_i can only be read off r_(i-1)) by at least
DROP_THRESHOLD, found by a greedy search (each step adds the head whose ablation, together with
those already chosen, removes the most accuracy; ties go to the larger loss of log-probability).
Models trained elsewhere lay the lookup out differently (the edge's separator, its parent/child
tokens, a layer-0 head that fills the separator), so attention is never a gate: it describes where
each found head reads at the shortcut queries (the edge's parent, child and separator, the goal,
the start, the previous token, the query itself, elsewhere). Single heads, whole layers and the
heads that attend the edge span are ablated too and reported (docs/analyses.md).
"""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field
from typing import TypedDict
from functools import partial

import numpy as np
import torch

from hansprobe.mechanics.results import Result, fmt_ci, mean_ci, t_ci
from hansprobe.mechanics.forward import chunks
from hansprobe.mechanics.follow import FOLLOW_MAJORITY, FollowResult, measure_follow
from hansprobe.mechanics.patterns import REFERENCE_PATTERNS, PatternFn, query_positions
from hansprobe.measurements.registry import AnalysisContext, AnalysisSpec, register_analysis
from hansprobe.errors import ConfigError
from hansprobe.fused import FusedGPT, has_forward_hooks, inference_view
from hansprobe.options import CommandOption
from hansprobe.progress import progress_bar
from hansprobe.objectives import Objective, autocast, inner_lookup_indices
from hansprobe.tasks.base import Batch
from hansprobe.text_model import TextFormatModel

SCORE_THRESHOLD = 0.5  # "attends the edge span": mass >= this at the shortcut queries (uniform ~3/(q+1) ~ 0.1) ...
UNIFORM_MULTIPLE = 3.0  # ... and >= this many times a uniform head's (a description, not a gate)
DROP_THRESHOLD = 0.5  # the mechanism's joint ablation must remove at least this much forced accuracy at 2..l-2, beyond its drop at the controls
MAX_SET_FRACTION = 0.25  # the lookup set holds at most this share of the model's heads (at least one): a set of every head proves nothing
ABLATION_GRAPHS = 300  # graphs for the ablations: the search chooses on the first half, the drop is measured on the other (CI about +-0.08 around a 0.5 gate)


def max_set(n_layers: int, n_heads: int) -> int:
    """The most heads a lookup set may hold: MAX_SET_FRACTION of them, at least one."""
    return max(1, int(n_layers * n_heads * MAX_SET_FRACTION))


def control_indices(target_len: int, follow: dict | None = None) -> list[int]:
    """Label indices the lookup does not produce, whose accuracy a specific ablation leaves: the copy
    of the first label (the start; the goal under reversed targets), and the last only where the
    follow rate there shows it copied from the prompt rather than looked up (its CI below
    FOLLOW_MAJORITY): a lookup that also makes the last token would otherwise lose half of its
    control score to its own work."""
    copies_last = follow is not None and follow["follow_rate_last_ci"][1] < FOLLOW_MAJORITY
    return [0, target_len - 1] if copies_last else [0]



class Ablation(TypedDict):
    """One ablation, measured on the held-out graphs (HeadsResult.ablations; the lookup question reads them)."""

    kind: str  # "head", "layer" or "group"
    label: str
    pattern: str | None  # the pattern whose high scorers the group is, "search", "user" or None
    heads: list[list[int]]  # [[layer, head], ...]
    mode: str  # "zero" or "mean"
    forced_accuracy: list[float]  # per label index, after the ablation
    decision_accuracy: float
    shortcut_accuracy: float  # forced accuracy at indices 2..l-2
    shortcut_logprob: float  # mean log-probability of the true token there
    control_accuracy: float  # at the control indices
    drop: float  # shortcut accuracy without ablation minus with it
    drop_ci: list[float] | None
    specific_drop: float  # the drop beyond the drop at the control indices


class Mechanism(TypedDict):
    """The causal search's result (HeadsResult.mechanism): what the lookup verdict reads."""

    tried: list[list[int]]  # the set the greedy search ended with
    search: list[dict]  # its steps, on the selection graphs
    max_set: int  # the most heads the set may hold
    selected: bool  # the search's own stop: its specific drop cleared the bar on the selection graphs
    found: bool  # the held-out specific drop's CI lower end clears DROP_THRESHOLD too
    heads: list[list[int]]  # `tried` when found, else []
    ablation_drop: float  # held out: shortcut accuracy without minus with the set ablated
    ablation_drop_ci: list[float] | None
    specific_drop: float  # held out: the drop beyond the drop at the control indices
    specific_drop_ci: list[float] | None
    control_drop: float
    shortcut_accuracy_after: float
    control_accuracy_after: float
    forced_accuracy_after: list[float]
    ablation_graphs: int  # the held-out graphs
    selection_graphs: int  # the graphs the search chose on
    control_indices: list[int]
    n_heads_total: int
    layers_that_break_it: list[int]  # whole layers whose mean ablation drops it by the bar
    edge_pattern: str  # "edge_lookup", or "child_parent_lookup" under reversed targets
    reads: dict  # "LxHy" -> where its attention goes at the shortcut queries, in words
    roles: dict  # "LxHy" -> the prompt roles it attends


class HeadRow(TypedDict):
    """One head (HeadsResult.heads), highest edge-lookup score first."""

    layer: int
    head: int
    edge_lookup_score: float
    edge_lookup_ci: list[float]
    edge_lookup_last: float
    edge_lookup_components: dict  # "parent" / "child" / "separator" -> score
    child_parent_score: float
    other_patterns: dict
    reads: str
    prompt_roles: str
    ablation_drop: float  # mean ablation, held out
    ablation_drop_zero: float
    attends_edge: bool  # among the edge pattern's high scorers
    in_mechanism: bool


@dataclass
class HeadsResult(Result):
    objective: str
    n_graphs: int
    n_layers: int
    n_heads: int
    query_label_indices: list[int]  # the shortcut indices 2..l-2 the scores average over
    last_label_index: int  # l-1, scored apart ("score_last")
    patterns: dict  # pattern -> component -> {"score": [L][H], "ci": [L][H][2], "uniform", "score_last": [L][H]}
    baseline: dict  # forced_accuracy per index, decision_accuracy, shortcut_accuracy, shortcut_logprob
    ablations: list[Ablation]
    heads: list[HeadRow]
    mechanism: Mechanism
    pattern_groups: dict  # pattern -> {"heads", "ablation_drop", "ablation_drop_zero"} for every lookup pattern with high scorers
    follow: dict | None
    thresholds: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """The search's finding in a sentence (`mechanism_text`)."""
        return self.prose()["verdict"]

    def prose(self) -> dict[str, str]:
        return {"verdict": mechanism_text({"mechanism": self.mechanism, "pattern_groups": self.pattern_groups,
                                           "baseline": self.baseline, "thresholds": self.thresholds})}

    def text(self) -> str:
        b, f = self.baseline, self.follow or {}
        lines = [f"  forced accuracy at indices 2..l-2 without ablation {b['shortcut_accuracy']:.3f}",
                 "  head   edge lookup [95% CI]     parent  child  separator  child->parent  ablation drop (mean / zero)  "
                 "in the mechanism"]
        for h in self.heads:
            c = h["edge_lookup_components"]
            lines.append(f"  L{h['layer']}H{h['head']:<3} {fmt_ci(h['edge_lookup_score'], h['edge_lookup_ci'])}  {c['parent']:.3f}   "
                         f"{c['child']:.3f}  {c['separator']:.3f}      {h['child_parent_score']:.3f}          "
                         f"{h['ablation_drop']:+.3f} / {h['ablation_drop_zero']:+.3f}              "
                         f"{'YES' if h['in_mechanism'] else '-'}")
        for a in self.ablations:
            if a["kind"] != "head" and a["mode"] == "mean":
                lines.append(f"  ablate {a['label']:<24} (mean) forced accuracy {' '.join(f'{x:.3f}' for x in a['forced_accuracy'])}")
        if f:
            pos = ", ".join(f"r{i}: {v['rate']:.3f}" for i, v in f["follow_rate_by_position"].items())
            lines.append(f"  follow rate (indices 2..l-2) {fmt_ci(f['follow_rate'], f['follow_rate_ci'])}; by index {pos} "
                         "(the last index apart: under forward targets the goal can be copied from the prompt there)")
        lines.append(f"  verdict: {self.verdict}")
        return "\n".join(lines)

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
            fig.update_layout(title=f"{name}: attention mass on the edge's span at label indices "
                                    f"{self.query_label_indices[0]}..{self.query_label_indices[-1]} "
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
                          title="Ablation: single heads, layers, the search's set and the high-scoring groups")
        figs["ablation"] = fig
        if self.follow:
            figs.update(FollowResult(**self.follow).figures())
        return figs


def pattern_masses(att: torch.Tensor, batch: Batch, objective: Objective, patterns: dict[str, PatternFn]) -> dict:
    """Per-graph attention mass of every head on each pattern component at every query:
    {pattern: {component: ((B, L, H, Q) mass, (B, Q) uniform-head mass)}}. `att` is the heads'
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
            mass = (att * mask[:, None, None].float()).sum(-1)  # (B, L, H, Q)
            out[name][comp] = (mass, mask.sum(-1).float() / (q + 1).float())
    return out


def summarise_masses(masses: dict) -> dict:
    """Per head: the mean over graphs and the shortcut queries (all but the last) with a t interval
    over graphs, the uniform head's mass there, and the last query's mean apart ("score_last")."""
    out = {}
    for name, comps in masses.items():
        out[name] = {}
        for comp, (mass, uniform) in comps.items():
            inner = mass[..., :-1] if mass.shape[-1] > 1 else mass[..., :0]
            per_graph = inner.mean(-1)  # (B, L, H); NaN when there is no shortcut index
            lo, hi = t_ci(per_graph.double().numpy(), axis=0)
            out[name][comp] = {"score": per_graph.mean(0).tolist(), "ci": np.stack([lo, hi], -1).tolist(),
                               "uniform": float(uniform[:, :-1].mean()) if uniform.shape[-1] > 1 else float("nan"),
                               "score_last": mass[..., -1].mean(0).tolist()}
    return out


def score_patterns(att: torch.Tensor, batch: Batch, objective: Objective, patterns: dict[str, PatternFn]) -> dict:
    """Scores from a given attention tensor (B, L, H, Q, T) at the shortcut queries."""
    return summarise_masses(pattern_masses(att, batch, objective, patterns))


def prompt_roles(pattern: torch.Tensor, batch: Batch) -> dict:
    """What a head does inside the edge list, from its full pattern (b, H, T, T) of one layer: at each
    separator, the mass on its own edge's parent, child and itself; at each child token, the mass on
    its own parent and itself. Summed over graphs (divide by the count): {role: {key: (H,)}}."""
    sep, child, parent = batch.edge_sep_pos[0], batch.edge_child_pos[0], batch.edge_parent_pos[0]  # same layout every row
    at_sep, at_child = pattern[:, :, sep], pattern[:, :, child]  # (b, H, E, T)
    e = torch.arange(len(sep))
    return {"separator": {"own parent": at_sep[:, :, e, parent].mean(-1).sum(0), "own child": at_sep[:, :, e, child].mean(-1).sum(0),
                          "itself": at_sep[:, :, e, sep].mean(-1).sum(0)},
            "child token": {"own parent": at_child[:, :, e, parent].mean(-1).sum(0), "itself": at_child[:, :, e, child].mean(-1).sum(0)}}


@torch.no_grad()
def score_heads(model, objective: Objective, batch: Batch, patterns: dict[str, PatternFn], batch_size: int = 1000,
                progress: bool = False) -> tuple[dict, list[torch.Tensor]]:
    """Pattern scores of every head (plus "prompt_roles": what each head does at the separators and
    child tokens), and the per-position mean of every head's z (for mean ablation), from one cached
    pass per chunk holding only the patterns and z. Memory stays bounded: per graph only (L, H)
    masses are kept."""
    device = next(model.parameters()).device
    q = query_positions(batch, objective).to(device)
    n_layers = model.cfg.n_layers
    parts: list[dict] = []
    roles: list[dict] = [{} for _ in range(n_layers)]
    z_sum, n = None, 0
    for chunk in chunks(batch, batch_size, "attention", progress):
        chunk_dev = chunk.to(device)
        with autocast(device):
            _, cache = model.run_with_cache(objective.inputs(chunk_dev),
                                            names_filter=lambda n: n.endswith(("attn.hook_pattern", "attn.hook_z")))
        att = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][:, :, q].float() for l in range(n_layers)], 1).cpu()
        parts.append(pattern_masses(att, chunk, objective, patterns))  # att: (b, L, H, Q, T)
        for l in range(n_layers):
            r = prompt_roles(cache[f"blocks.{l}.attn.hook_pattern"].float().cpu(), chunk)
            roles[l] = {role: {k: v + roles[l].get(role, {}).get(k, 0) for k, v in keys.items()} for role, keys in r.items()}
        zs = [cache[f"blocks.{l}.attn.hook_z"].float().sum(0) for l in range(n_layers)]  # (T, H, d_head)
        z_sum = zs if z_sum is None else [a + b for a, b in zip(z_sum, zs)]
        n += len(chunk)
    merged = {name: {comp: (torch.cat([p[name][comp][0] for p in parts]), torch.cat([p[name][comp][1] for p in parts]))
                     for comp in parts[0][name]} for name in parts[0]}
    scores = summarise_masses(merged)
    scores["prompt_roles"] = {role: {k: [(roles[l][role][k] / n).tolist() for l in range(n_layers)] for k in keys}
                              for role, keys in roles[0].items()}  # role -> key -> [L][H]
    return scores, [z / n for z in z_sum]


def _ablation_hooks(heads: list[tuple[int, int]], mode: str, mean_z: list[torch.Tensor]):
    """The bridge's `hook_z` hooks for a zero or mean ablation of `heads` (the hooked path of `forced_accuracy`)."""
    def make(layer, hs):
        def hook(z, hook):  # z: (B, T, H, d_head)
            z = z.clone()
            z[:, :, hs] = 0.0 if mode == "zero" else mean_z[layer][: z.shape[1], hs].to(z.dtype)
            return z
        return hook

    return [(f"blocks.{l}.attn.hook_z", make(l, hs)) for l, hs in _by_layer(heads).items()]


def _by_layer(heads) -> dict[int, list[int]]:
    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        by_layer.setdefault(int(l), []).append(int(h))
    return by_layer


def _ablated_logits(model, objective: Objective, chunk: Batch, heads, mode: str, mean_z, resid_pre) -> torch.Tensor:
    """Forced logits (b, L, V) with `heads` ablated. When nothing else is hooked on the model, the
    fused forward runs from the first ablated block on the clean residual entering it
    (`resid_pre(net)`, kept per chunk by the caller: the blocks before are unchanged by the
    ablation), the last block at the label positions only; a text-format model runs its bridge from
    that block too (`TextFormatModel.forward`'s `start_at`), with `hook_z` hooks; else the bridge
    with `hook_z` hooks (docs/decisions.md 51)."""
    if not heads:
        return objective.forced_logits(model, chunk)
    net = inference_view(model)
    first = min(_by_layer(heads))
    if isinstance(model, TextFormatModel) and not has_forward_hooks(model):  # from the first ablated block on
        start = (first, resid_pre(model)[first])  # the clean residual, taken before the ablation's hooks go on
        with model.hooks(fwd_hooks=_ablation_hooks(heads, mode, mean_z)), autocast(chunk.prefix.device):
            return model(objective.inputs(chunk), start_at=start)[:, objective.label_slice(chunk)].float()
    if not isinstance(net, FusedGPT):
        with model.hooks(fwd_hooks=_ablation_hooks(heads, mode, mean_z)):
            return objective.forced_logits(model, chunk)
    by_layer = _by_layer(heads)
    replace = {l: (hs, None if mode == "zero" else mean_z[l]) for l, hs in by_layer.items()}
    with autocast(chunk.prefix.device):
        return net.run_from(first, resid_pre(net)[first], positions=objective.label_slice(chunk), replace_z=replace).float()


@torch.no_grad()
def forced_accuracy(model, objective: Objective, batch: Batch, batch_size: int = 1000, heads=(), mode: str = "mean",
                    mean_z: list[torch.Tensor] | None = None, resid_cache: dict | None = None,
                    controls: list[int] | None = None) -> dict:
    """Forced accuracy per label index (optionally with `heads` zero- or mean-ablated: `mode`,
    `mean_z` per layer (T, H, d_head)), decision and shortcut accuracy, and the mean log-probability
    of the right token at the shortcut indices (the search's tie-break). `resid_cache`: a dict that
    keeps the clean residuals of `batch` between calls (the many ablations of one batch). `controls`:
    the control indices (control_indices; default: the first alone)."""
    device = next(model.parameters()).device
    heads = [tuple(h) for h in heads]
    ok, lp = [], []
    cache = resid_cache if resid_cache is not None else {}
    for j, chunk in enumerate(batch.split(batch_size)):
        chunk = chunk.to(device)

        def resid_pre(net, chunk=chunk, key=(id(batch), batch_size, j)):
            if key not in cache:  # the batch is kept with its residuals, so its id is not reused meanwhile
                with autocast(device):
                    cache[key] = (batch, net.resid_pre(objective.inputs(chunk)))
            return cache[key][1]

        logits = _ablated_logits(model, objective, chunk, heads, mode, mean_z, resid_pre)  # (b, L, V)
        labels = objective.labels(chunk)  # (b, L)
        ok.append((logits.argmax(-1) == labels).float().cpu())
        lp.append(logits.log_softmax(-1).gather(-1, labels[..., None])[..., 0].cpu())
    ok = torch.cat(ok)  # (B, L)
    acc, logp = ok.mean(0).tolist(), torch.cat(lp).mean(0).tolist()
    length = len(acc)
    idx, ctl = inner_lookup_indices(length), (controls if controls is not None else control_indices(length))
    return {"forced_accuracy": acc, "decision_accuracy": acc[objective.decision_index(length)],
            "shortcut_accuracy": float(np.mean([acc[i] for i in idx])) if idx else float("nan"),
            "shortcut_logprob": float(np.mean([logp[i] for i in idx])) if idx else float("nan"),
            "control_accuracy": float(np.mean([acc[i] for i in ctl])),
            "per_graph": ok[:, idx].mean(1).double().numpy() if idx else None,  # for the drop's interval; not serialised
            "per_graph_control": ok[:, ctl].mean(1).double().numpy()}


def specific_drop(base: dict, ablated: dict) -> float:
    """The drop of shortcut accuracy beyond the drop at the control indices (floored at 0): what an
    ablation removes of the lookup and not of everything else."""
    return (base["shortcut_accuracy"] - ablated["shortcut_accuracy"]) - max(0.0, base["control_accuracy"] - ablated["control_accuracy"])


def _drop_ci(base: dict, ablated: dict, seed: int, specific: bool = False) -> list | None:
    """Bootstrap 95% CI of the mean per-graph drop of shortcut accuracy (the same graphs with and
    without the ablation, so the interval is paired); `specific`: minus the per-graph drop at the
    control indices."""
    if base.get("per_graph") is None or ablated.get("per_graph") is None:
        return None
    drop = base["per_graph"] - ablated["per_graph"]
    if specific:
        drop = drop - (base["per_graph_control"] - ablated["per_graph_control"])
    return list(mean_ci(drop, seed))


def _check_heads(model, heads) -> None:
    for l, h in heads:
        if not (0 <= l < model.cfg.n_layers and 0 <= h < model.cfg.n_heads):
            raise ConfigError(f"head L{l}H{h} does not exist: the model has {model.cfg.n_layers} layers x {model.cfg.n_heads} heads")


def _high_scorers(scores: dict, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    span = scores["span"]
    return [(l, h) for l in range(n_layers) for h in range(n_heads)
            if span["score"][l][h] >= SCORE_THRESHOLD and span["score"][l][h] >= UNIFORM_MULTIPLE * span["uniform"]]


def _search(model, objective: Objective, batch: Batch, batch_size: int, mean_z, base: dict, singles: dict,
            n_layers: int, n_heads: int, resid_cache: dict | None = None, controls: list[int] | None = None,
            seed: int = 0) -> dict:
    """Greedy search, on the selection graphs, for the smallest head set (at most `max_set` heads)
    whose joint mean ablation drops shortcut accuracy by >= DROP_THRESHOLD beyond its drop at the
    control indices (`specific_drop`). Step 1 reuses the single-head ablations."""
    everyone = [(l, h) for l in range(n_layers) for h in range(n_heads)]
    cap = max_set(n_layers, n_heads)
    chosen, steps = [], []
    while len(chosen) < cap and base["shortcut_accuracy"] >= DROP_THRESHOLD:  # else nothing to break
        trials = {}
        for head in everyone:
            if head in chosen:
                continue
            trials[head] = singles[head] if not chosen else forced_accuracy(
                model, objective, batch, batch_size, chosen + [head], "mean", mean_z, resid_cache, controls)
        best = max(trials, key=lambda h: (round(specific_drop(base, trials[h]), 3), -trials[h]["shortcut_logprob"]))
        chosen.append(best)
        stats = trials[best]
        steps.append({"add": list(best), "shortcut_accuracy": stats["shortcut_accuracy"],
                      "control_accuracy": stats["control_accuracy"], "drop": base["shortcut_accuracy"] - stats["shortcut_accuracy"],
                      "specific_drop": specific_drop(base, stats), "shortcut_logprob": stats["shortcut_logprob"]})
        # stop once the drop clears the bar with its interval (the bar "found" is held to on the other
        # half), not as a point estimate: a set just over it here would fall under it there half the time
        ci = _drop_ci(base, stats, seed, specific=True)
        steps[-1]["specific_drop_ci"] = ci
        if (ci[0] if ci else specific_drop(base, stats)) >= DROP_THRESHOLD:
            break
    last = steps[-1] if steps else {}
    return {"tried": [list(h) for h in chosen], "search": steps, "max_set": cap,
            "selected": bool(steps) and (last["specific_drop_ci"][0] if last.get("specific_drop_ci")
                                         else last["specific_drop"]) >= DROP_THRESHOLD}


READ_COMPONENTS = ("parent", "child", "separator")  # of the looked-up edge
OTHER_TOKENS = {"goal": "goal", "start": "start", "previous_token": "previous token", "current_token": "the query itself"}


def describe_reads(scores: dict, edge_pattern: str, layer: int, head: int) -> dict:
    """Where one head's attention goes at the shortcut queries, in words: the looked-up edge's
    parent, child and separator, the next edge's parent, the other edges' tokens by role, the goal,
    the start, '=', the previous token, the query itself, earlier answer tokens, and the rest."""
    out = {f"edge {c}": scores[edge_pattern][c]["score"][layer][head] for c in READ_COMPONENTS}
    out.update({label: scores[p]["token"]["score"][layer][head] for p, label in OTHER_TOKENS.items()})
    if "context" in scores:
        out.update({c: v["score"][layer][head] for c, v in scores["context"].items() if c != "span"})
    out["elsewhere"] = max(0.0, 1.0 - sum(out.values()))
    return out


def describe_roles(scores: dict, layer: int, head: int) -> dict:
    """{role: {key: mass}} inside the edge list: at separators and at child tokens."""
    return {role: {k: v[layer][head] for k, v in keys.items()} for role, keys in scores["prompt_roles"].items()}


def reads_text(reads: dict, roles: dict | None = None, top: int = 3) -> str:
    """The head's top attention targets at the shortcut queries, and, when most of it goes elsewhere,
    its strongest role inside the edge list (e.g. a layer-0 head that copies the parent into the separator)."""
    parts = sorted(reads.items(), key=lambda kv: -kv[1])[:top]
    text = ", ".join(f"{v:.2f} on {k}" for k, v in parts)
    if roles and reads.get("elsewhere", 0) > 0.5:
        role, key, v = max(((r, k, v) for r, keys in roles.items() for k, v in keys.items() if k != "itself"),
                           key=lambda t: t[2])
        text += f" (inside the edge list: from each {role}, {v:.2f} on its {key})"
    return text


class _Ablations:
    """Head ablations measured on the held-out graphs, each in both modes (zero and mean), every
    one kept as a row of the result; `raw` keeps the full measurement per (heads, mode)."""

    def __init__(self, model, objective, held_out: Batch, batch_size: int, mean_z, resid_cache: dict, forced, seed: int):
        self.model, self.objective, self.held_out, self.batch_size = model, objective, held_out, batch_size
        self.mean_z, self.resid_cache, self.forced, self.seed = mean_z, resid_cache, forced, seed
        self.base = forced(model, objective, held_out, batch_size)
        self.rows: list[dict] = []
        self.raw: dict = {}

    def __call__(self, kind: str, label: str, heads, pattern=None) -> dict:
        out = {}
        for mode in ("zero", "mean"):
            res = self.forced(self.model, self.objective, self.held_out, self.batch_size, heads, mode, self.mean_z,
                              self.resid_cache)
            row = {"kind": kind, "label": label, "pattern": pattern, "heads": [list(h) for h in heads], "mode": mode,
                   **{k: v for k, v in res.items() if not k.startswith("per_graph")},
                   "drop": self.base["shortcut_accuracy"] - res["shortcut_accuracy"],
                   "drop_ci": _drop_ci(self.base, res, self.seed), "specific_drop": specific_drop(self.base, res)}
            self.rows.append(row)
            out[mode] = row
            self.raw[(tuple(map(tuple, heads)), mode)] = res
        return out


def measure_heads(model, objective: Objective, batch: Batch, *, batch_size: int = 1000, seed: int = 0,
                  patterns: dict[str, PatternFn] | None = None, extra_groups: list[list[tuple[int, int]]] = (),
                  progress: bool = False, ablation_graphs: int = ABLATION_GRAPHS) -> HeadsResult:
    """Find the lookup mechanism by ablation (greedy search; single heads, layers, groups), describe
    it with attention scores on the reference patterns (plus `patterns`, user functions of (batch,
    objective) -> {component: (B, Q, T) bool}) and measure the follow rate. `extra_groups` are
    further head groups to ablate jointly."""
    _check_heads_request(model, objective, batch, extra_groups)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    scores, mean_z = score_heads(model, objective, batch, {**REFERENCE_PATTERNS, **(patterns or {})}, batch_size, progress)
    follow = None
    if batch.candidates.shape[1] >= 2 and batch.arms is not None:  # the swap takes a node of another arm
        follow = measure_follow(model, objective, batch, seed=seed, batch_size=batch_size).to_dict()
    controls = control_indices(batch.target.shape[1], follow)
    forced = partial(forced_accuracy, controls=controls)
    ablation = batch[:ablation_graphs]  # a drop of 0.5 needs no more (the scores above use every graph)
    half = max(1, len(ablation) // 2)
    selection, held_out = ablation[:half], ablation[half:]  # the search chooses on one half; every reported drop is the other's
    resid_cache: dict = {}  # the clean residuals of the two halves, shared by all their ablations
    ablate = _Ablations(model, objective, held_out, batch_size, mean_z, resid_cache, forced, seed)
    single, layers = {}, {}
    with closing(progress_bar(n_layers * (n_heads + 1), "head ablations", progress or False, unit="ablation")) as bar:
        for l in range(n_layers):
            for h in range(n_heads):
                single[(l, h)] = ablate("head", f"L{l}H{h}", [(l, h)])
                bar.update(1)
        for l in range(n_layers):
            layers[l] = ablate("layer", f"layer {l}", [(l, h) for h in range(n_heads)])
            bar.update(1)
    mechanism = _find_mechanism(model, objective, selection, ablate, batch_size, mean_z, resid_cache, forced, controls, seed)
    if len(mechanism["heads"]) > 1:
        ablate("group", "search: " + "+".join(f"L{l}H{h}" for l, h in mechanism["heads"]),
               [tuple(h) for h in mechanism["heads"]], "search")
    mechanism["layers_that_break_it"] = [l for l in range(n_layers) if layers[l]["mean"]["drop"] >= DROP_THRESHOLD]
    edge_pattern = "child_parent_lookup" if objective.reverse else "edge_lookup"
    mechanism["edge_pattern"] = edge_pattern
    mechanism["reads"] = {f"L{l}H{h}": describe_reads(scores, edge_pattern, l, h) for l, h in mechanism["heads"]}
    mechanism["roles"] = {f"L{l}H{h}": describe_roles(scores, l, h) for l, h in mechanism["heads"]}
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
    length = held_out.target.shape[1]
    return HeadsResult(
        objective=objective.name, n_graphs=len(batch), n_layers=n_layers, n_heads=n_heads,
        query_label_indices=inner_lookup_indices(length), last_label_index=length - 1, patterns=scores,
        baseline={k: v for k, v in ablate.base.items() if not k.startswith("per_graph")},
        ablations=ablate.rows, heads=_head_rows(scores, single, mechanism, pattern_groups, edge_pattern, n_layers, n_heads),
        mechanism=mechanism, pattern_groups=pattern_groups, follow=follow,
        thresholds={"score": SCORE_THRESHOLD, "uniform_multiple": UNIFORM_MULTIPLE, "drop": DROP_THRESHOLD,
                    "follow_majority": FOLLOW_MAJORITY,
                    "max_set": max_set(n_layers, n_heads), "max_set_fraction": MAX_SET_FRACTION},
    )


def _check_heads_request(model, objective: Objective, batch: Batch, extra_groups) -> None:
    if objective.teacherless:
        raise ConfigError(f"head scores need teacher-forced inputs (r_(i-1) at the query); objective {objective.name!r} has none")
    if len(batch.task.lookup_indices) < 2:  # an inner lookup index besides the last (the goal, also in the prompt)
        raise ConfigError(f"no lookup to find in {batch.task.describe()}: " + (batch.task.no_lookup_reason or
                          "it declares no label index that is read off the previous one"))
    for group in extra_groups:
        _check_heads(model, group)


def _find_mechanism(model, objective, selection: Batch, ablate: _Ablations, batch_size, mean_z, resid_cache, forced,
                    controls, seed) -> dict:
    """The greedy search for the smallest head set, chosen on `selection`, its drops measured on the
    held-out graphs (`ablate.held_out`)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    sel_base = forced(model, objective, selection, batch_size)
    # the search's first step reads these; below DROP_THRESHOLD it has nothing to break and takes no step
    sel_singles = {} if sel_base["shortcut_accuracy"] < DROP_THRESHOLD else {
        (l, h): forced(model, objective, selection, batch_size, [(l, h)], "mean", mean_z, resid_cache)
        for l in range(n_layers) for h in range(n_heads)}
    mechanism = _search(model, objective, selection, batch_size, mean_z, sel_base, sel_singles, n_layers, n_heads,
                        resid_cache, controls, seed)
    base, held_out = ablate.base, ablate.held_out
    tried = [tuple(h) for h in mechanism["tried"]]
    stats = forced(model, objective, held_out, batch_size, tried, "mean", mean_z, resid_cache) if tried else base
    mechanism.update(
        ablation_drop=base["shortcut_accuracy"] - stats["shortcut_accuracy"],
        control_drop=base["control_accuracy"] - stats["control_accuracy"], specific_drop=specific_drop(base, stats),
        shortcut_accuracy_after=stats["shortcut_accuracy"], control_accuracy_after=stats["control_accuracy"],
        forced_accuracy_after=stats["forced_accuracy"], ablation_drop_ci=_drop_ci(base, stats, seed),
        specific_drop_ci=_drop_ci(base, stats, seed, specific=True), ablation_graphs=len(held_out),
        selection_graphs=len(selection))
    # found when the held-out specific drop clears the bar with its interval, not as a point estimate
    # on 150 graphs; `controls` says which indices the specific drop is measured against
    drop_lo = (mechanism["specific_drop_ci"] or [mechanism["specific_drop"]])[0]
    mechanism["found"] = bool(mechanism["selected"] and drop_lo >= DROP_THRESHOLD)
    mechanism["control_indices"] = controls
    mechanism["n_heads_total"] = n_layers * n_heads
    mechanism["heads"] = mechanism["tried"] if mechanism["found"] else []
    return mechanism


def _head_rows(scores, single, mechanism, pattern_groups, edge_pattern, n_layers, n_heads) -> list[dict]:
    """One row per head: its attention scores, what it reads, its ablation drops; highest edge score first."""
    in_set = set(map(tuple, mechanism["heads"]))
    high = set(map(tuple, pattern_groups.get(edge_pattern, {}).get("heads", [])))
    comps = scores["edge_lookup"]
    heads = []
    for l in range(n_layers):
        for h in range(n_heads):
            heads.append({
                "layer": l, "head": h,
                "edge_lookup_score": comps["span"]["score"][l][h], "edge_lookup_ci": comps["span"]["ci"][l][h],
                "edge_lookup_last": comps["span"]["score_last"][l][h],
                "edge_lookup_components": {c: comps[c]["score"][l][h] for c in READ_COMPONENTS},
                "child_parent_score": scores["child_parent_lookup"]["span"]["score"][l][h],
                "other_patterns": {p: scores[p]["token"]["score"][l][h] for p in OTHER_TOKENS},
                "reads": describe_reads(scores, edge_pattern, l, h), "prompt_roles": describe_roles(scores, l, h),
                "ablation_drop": single[(l, h)]["mean"]["drop"], "ablation_drop_zero": single[(l, h)]["zero"]["drop"],
                "attends_edge": (l, h) in high, "in_mechanism": (l, h) in in_set,
            })
    heads.sort(key=lambda r: -r["edge_lookup_score"])
    return heads


def mechanism_text(heads: Mapping) -> str:
    """The search's finding in a sentence, from a heads result's figures (its `mechanism`,
    `pattern_groups`, `baseline` and `thresholds`): the result's "verdict" in JSON, which the lookup
    question cites."""
    mech, base, bars = heads["mechanism"], heads["baseline"], heads["thresholds"]
    attending = heads["pattern_groups"].get(mech["edge_pattern"])
    also = (f"; the heads that attend the edge span ({', '.join(f'L{l}H{h}' for l, h in attending['heads'])}) drop it by "
            f"{attending['ablation_drop']:.3f} together" if attending else "; no head puts >= "
            f"{bars['score']} of its attention on the edge span")
    total = mech.get("n_heads_total") or mech["max_set"]
    halves = (f"chosen on {mech['selection_graphs']} graphs, measured on {mech['ablation_graphs']} others; at most "
              f"{mech['max_set']} of the {total} heads ({mech['max_set'] / total:.0%})")
    which = ("the copies at the first and last index" if len(mech.get("control_indices", [0, 1])) > 1
             else "the copy at the first index; the last is looked up too, by its follow rate")
    ctl = f"the controls ({which}) go from {base['control_accuracy']:.3f} to {mech['control_accuracy_after']:.3f}"
    if mech["found"]:
        names = ", ".join(f"L{l}H{h}" for l, h in mech["heads"])
        reads = "; ".join(f"{k} reads {reads_text(v, mech['roles'][k])}" for k, v in mech["reads"].items())
        ci = mech.get("specific_drop_ci")
        drop = f"specific drop {mech['specific_drop']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"specific drop {mech['specific_drop']:.2f}"
        return (f"lookup mechanism {names}: mean-ablating {'it' if len(mech['heads']) == 1 else 'them together'} drops "
                f"forced accuracy at indices 2..l-2 from {base['shortcut_accuracy']:.3f} to "
                f"{mech['shortcut_accuracy_after']:.3f} while {ctl} ({drop}; {halves}); at the shortcut queries {reads}{also}")
    if base["shortcut_accuracy"] < bars["drop"]:
        return (f"forced accuracy at indices 2..l-2 is only {base['shortcut_accuracy']:.3f}: there is no lookup to break"
                + also)
    tried = ", ".join(f"L{l}H{h}" for l, h in mech["tried"])
    return (f"no set of at most {mech['max_set']} of the {total} heads ({mech['max_set'] / total:.0%}; greedy search: "
            f"{tried}) drops forced accuracy at indices 2..l-2 by "
            f">= {bars['drop']} beyond its drop at the controls (on the held-out half: {mech['ablation_drop']:.3f} at "
            f"indices 2..l-2 from {base['shortcut_accuracy']:.3f}, while {ctl})"
            + (f"; whole layers {mech['layers_that_break_it']} do" if mech["layers_that_break_it"] else "") + also)


def _heads_skip(ctx: AnalysisContext) -> str | None:
    if ctx.objective.teacherless:
        return f"{ctx.objective.name} inputs hold no previous answer token"
    if len(ctx.task.lookup_indices) < 2:
        return ctx.task.no_lookup_reason or "the task declares no lookup index"
    return None


register_analysis(AnalysisSpec(
    name="heads", title="Heads: attention lookups and ablations", order=30, skip=_heads_skip,
    measure=lambda ctx: measure_heads(ctx.model, ctx.objective, ctx.mechanism_batch, batch_size=ctx.batch_size, seed=ctx.seed,
                                      extra_groups=ctx.options["ablate"], progress=ctx.progress),
    command="heads", command_help="edge-lookup head scores, head/group/layer ablations and the counterfactual follow rate",
    options=(CommandOption("--ablate", "also ablate this group of heads jointly (repeatable), e.g. --ablate 1.0,1.2",
                           parse="heads", default=(), repeat=True, metavar="L.H[,L.H...]"),),
    captions={
        'edge_lookup_scores': 'Attention mass each head puts on the edge (r_(i-1), r_i) — parent, child and the separator after it — at the queries holding r_(i-1), indices 2..l-2 (the last index, where the goal can be copied, is in report.json as score_last). A description of the layout, not a gate: models trained elsewhere read the edge through other tokens.',
        'child_parent_lookup_scores': "The same for the reverse lookup (from a child to its parent's edge), which reverse targets need. Look for: it replacing the forward lookup under the reverse objective.",
        'edge_lookup_components': "Where inside the edge the lookup lands. Look for: mass on the separator, which layer 0 fills with the edge's content.",
        'ablation': 'Forced accuracy at label indices 2..l-2 after zero / mean ablation of single heads, whole layers, the set found by the greedy search and the heads that attend the edge span. Look for: the smallest set that breaks it; single heads that do not matter but a group that does (redundant heads).',
        'follow_rate': "Swap r_(i-1) for a node on another arm: the share of graphs answering that node's successor. Look for: ~1 means r_i is read off r_(i-1) alone; the control (a node with no successor) shows what is left.",
    },
))
