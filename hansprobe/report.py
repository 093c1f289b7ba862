"""The shortcut-detection report: run every analysis on one or more checkpoints, answer four
questions with their evidence, and write `report.json` (schema in docs/report.md) and a
self-contained `report.html` (hansprobe.report_html).

The report only composes the analyses; each verdict rule below restates an analysis's own rule
(docs/concepts.md) except `plan_represented`, whose threshold is the report's (docs/decisions.md).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from hansprobe.analyses.base import _jsonable
from hansprobe.errors import ConfigError

FORMAT = "hansprobe-report"
FORMAT_VERSION = 1
DEFAULT_SEED = 1234  # the analysis seed of every command; training never uses it

QUESTIONS = {
    "clever_hans": "Clever-Hans shortcut present?",
    "indecipherable": "First decision token indecipherable?",
    "plan_represented": "Plan represented before the answer?",
    "decision_computed": "Decision computed?",
}
# A probe cell counts as evidence of a plan only if it beats shuffled labels by this much AND its
# interval, corrected for the number of cells searched, clears chance (docs/decisions.md).
PLAN_SELECTIVITY = 0.10
FOLLOW_MAJORITY = 0.5  # the follow-rate CI must lie above this for the behavioural signature


@dataclass
class ReportSettings:
    """What the report measures on. Every checkpoint gets fresh graphs of its own task from `seed`
    (or the graphs of `data`, an NTF file that must fit every checkpoint's task)."""

    n_graphs: int = 2000  # behaviour and entropy (the model cards' sample: same graphs for the same seed)
    mechanism_graphs: int = 1000  # heads, probes, dynamics: the first of those graphs
    patch_pairs: int = 200  # goal-swap pairs for activation patching: the first of those graphs
    seed: int = DEFAULT_SEED
    data: str | None = None
    probe_target: str = "goal_arm"
    batch_size: int = 1000
    device: str = "cpu"

    def __post_init__(self):
        if self.n_graphs < 10 or self.mechanism_graphs < 10 or self.patch_pairs < 2:
            raise ConfigError("the report needs at least 10 graphs (-n, --mechanism-graphs) and 2 patching pairs (--patch-pairs)")


@dataclass
class CheckpointReport:
    name: str
    path: str
    config: dict
    provenance: dict
    training_curve: list
    verdicts: dict  # question key -> {"answer", "evidence", "values"}
    analyses: dict  # analysis name -> its Result.to_dict(), or {"skipped": reason}
    figures: dict = field(default_factory=dict, repr=False)  # analysis -> {name: plotly Figure}; not serialised

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("figures")
        return _jsonable(d)


def _ci(v, ci, digits=3) -> str:
    return f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _verdict(answer: str, evidence: str, **values) -> dict:
    return {"answer": answer, "evidence": evidence, "values": _jsonable(values)}


# --- the four questions ------------------------------------------------------------------------
def clever_hans_verdict(objective_name: str, behaviour: dict, heads: dict | None, why_not: str | None = None) -> dict:
    """Forward targets: yes when the heads analysis names Clever-Hans heads (high forward edge-lookup
    score and joint ablation drop >= 0.5) AND the counterfactual follow rate's CI lies above 1/2; no
    when neither; inconclusive when only one. Reversed targets: r_i = parent(r_(i-1)) is the correct
    rule there, not a shortcut, so following r_(i-1) is no evidence; the answer rests on the heads."""
    if heads is None:
        return _verdict("not applicable", why_not or f"{objective_name} inputs hold no previous answer token, so there "
                        "is no r_(i-1) to read r_i off")
    reverse = objective_name.startswith("reverse")
    idx = list(range(2, len(behaviour["forced_accuracy"])))
    forced = "; ".join(f"r{i} {_ci(behaviour['forced_accuracy'][i], behaviour['forced_accuracy_ci'][i])}" for i in idx)
    group = heads["clever_hans_group"]
    named = bool(group["heads"])
    follow = heads.get("follow")
    follows = follow is not None and follow["follow_rate_ci"][0] > FOLLOW_MAJORITY
    parts = [f"forced accuracy {forced}"]
    if follow is not None:
        parts.append(f"follow rate {_ci(follow['follow_rate'], follow['follow_rate_ci'])} (indices 2..l-2"
                     + ("; under reversed targets following r_(i-1) is the correct rule)" if reverse else ")"))
    if named:
        parts.append(f"forward lookup heads {', '.join(f'L{l}H{h}' for l, h in group['heads'])}, joint ablation drop "
                     f"{group['ablation_drop']:.3f}")
    else:
        parts.append(heads["verdict"])
    if reverse:
        answer = "yes" if named else "no"
    else:
        answer = "yes" if named and follows else "no" if not named and not follows else "inconclusive"
    return _verdict(answer, "; ".join(parts), heads=group["heads"], ablation_drop=group["ablation_drop"],
                    follow_rate=follow["follow_rate"] if follow else None,
                    follow_rate_ci=follow["follow_rate_ci"] if follow else None,
                    forced_accuracy={str(i): behaviour["forced_accuracy"][i] for i in idx})


def indecipherable_verdict(entropy: dict) -> dict:
    """The entropy analysis's verdict, unchanged (design.md's definition)."""
    e = entropy
    parts = [f"decision accuracy {_ci(e['decision_accuracy'], e['decision_accuracy_ci'])} vs 1/d = {e['chance']:.3f}",
             f"information over uniform {_ci(e['information_nats'], e['information_nats_ci'])} nats",
             f"candidate entropy {_ci(e['candidate_entropy_frac'], e['candidate_entropy_frac_ci'])} x log d",
             f"mass outside the candidates {e['mass_outside_candidates']:.3f}"]
    follows = [f"{k} {_ci(v['rate'], v['ci'])}" for k, v in e.get("preference", {}).items() if v["follows"]]
    if follows:
        parts.append("the guess is not uniform; its top candidate is the " + "; ".join(follows))
    return _verdict("yes" if e["indecipherable"] else "no", "; ".join(parts),
                    decision_accuracy=e["decision_accuracy"], decision_accuracy_ci=e["decision_accuracy_ci"],
                    chance=e["chance"], information_nats=e["information_nats"],
                    information_nats_ci=e["information_nats_ci"], candidate_entropy_frac=e["candidate_entropy_frac"],
                    follows=[k for k, v in e.get("preference", {}).items() if v["follows"]])


def plan_verdict(probes: dict) -> dict:
    """yes: the most selective probe cell before the answer beats shuffled labels by >= PLAN_SELECTIVITY
    and its accuracy's Wilson interval, Bonferroni-corrected for the cells searched, lies above chance,
    the shuffled-label control and the untrained model's accuracy there; otherwise no."""
    from hansprobe.analyses.base import wilson_ci

    best = probes.get("best") or {}
    if not best:
        return _verdict("no", f"no probe cell before the answer could be measured ({probes['target']})")
    n_cells = int(best.get("cells_searched") or 1)  # the cells the best one was picked from
    n = int(probes["n_graphs"])
    lo, hi = wilson_ci(round(best["accuracy"] * n), n, level=1 - 0.05 / n_cells)
    untrained = None
    if probes.get("untrained") and best["layer"] in probes.get("layers", []) and best["position"] in probes.get("positions", []):
        u = probes["untrained"][probes["layers"].index(best["layer"])][probes["positions"].index(best["position"])]
        untrained = u if u is not None and u == u else None
    bar = max(probes["chance"], best["control_shuffle"], untrained if untrained is not None else 0.0)
    yes = best["selectivity"] >= PLAN_SELECTIVITY and lo > bar
    where = "embeddings" if best["layer"] == 0 else f"after block {best['layer'] - 1}"
    evidence = (f"{probes['target']} probe, best of {n_cells} cells before the answer ({where} at '{best['position_label']}'): "
                f"accuracy {best['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] (CI corrected for {n_cells} cells), selectivity "
                f"{best['selectivity']:+.3f} over shuffled labels (chance {probes['chance']:.3f}; needs >= {PLAN_SELECTIVITY:+.2f})"
                + (f"; the untrained model reaches {untrained:.3f} there" if untrained is not None else ""))
    causal = probes.get("causal")
    if causal:
        evidence += (f"; steering along it moves the decision logit difference by {causal['steer_probe']['mean_change']:+.3f} "
                     f"(random directions {causal['steer_random']['mean_change']:+.3f})")
    return _verdict("yes" if yes else "no", evidence, layer=best["layer"], position=best["position_label"],
                    accuracy=best["accuracy"], accuracy_ci_corrected=[lo, hi], cells=n_cells,
                    selectivity=best["selectivity"], chance=probes["chance"])


def decision_verdict(patching: dict) -> dict:
    """The patching analysis's rule: yes when swapping the goal moves the metric by >= 0.1 nats with a
    CI excluding 0, and then where the clean run's activations restore it."""
    p = patching
    gap = f"goal swap moves logit(clean) - logit(corrupted) at label index {p['metric_label_index']} by {_ci(p['gap'], p['gap_ci'])} nats"
    if not p["measurable"]:
        return _verdict("no", f"{gap}: no decision computation to restore", gap=p["gap"], gap_ci=p["gap_ci"])
    top = "; ".join(f"{t['component']} restores {t['normalized']:.2f}" for t in p["top"][:3])
    return _verdict("yes", f"{gap}; {top}", gap=p["gap"], gap_ci=p["gap_ci"], top=p["top"][:3])


# --- running it --------------------------------------------------------------------------------
def _graphs(settings: ReportSettings, task, n: int):
    from hansprobe.tasks import read_ntf

    if settings.data is not None:
        return read_ntf(settings.data, task=task, limit=n)
    return task.generate(n, settings.seed)


def _first(batch, n: int):
    return batch if len(batch) <= n else next(iter(batch.split(n)))


def measure_checkpoint(path: str | Path, settings: ReportSettings = ReportSettings(), progress=None) -> CheckpointReport:
    """Every analysis on one checkpoint, then the four verdicts. `progress` is a tqdm bar to advance
    (one tick per analysis) or None."""
    from hansprobe.analyses import measure_behaviour, measure_dynamics, measure_entropy
    from hansprobe.analyses.heads import measure_heads
    from hansprobe.analyses.patching import measure_patching
    from hansprobe.analyses.probes import measure_probes
    from hansprobe.checkpoint import load_checkpoint, model_from_config, package_versions

    path = Path(path)
    ck = load_checkpoint(path, device=settings.device)
    model, obj, task, bs = ck.model, ck.objective, ck.task, settings.batch_size
    batch = _graphs(settings, task, settings.n_graphs)
    mech = _first(batch, settings.mechanism_graphs)  # the costly analyses take a prefix of the same graphs
    analyses, figures = {}, {}

    def step(name, fn, skip_reason=None):
        if skip_reason:
            analyses[name] = {"skipped": skip_reason}
        else:
            res = fn()
            analyses[name] = res.summary() if hasattr(res, "summary") else res.to_dict()
            figures[name] = res.figures()
        if progress is not None:
            progress.set_postfix_str(f"{path.name}: {name}")
            progress.update(1)

    step("behaviour", lambda: measure_behaviour(model, obj, batch, bs))
    step("entropy", lambda: measure_entropy(model, obj, batch, bs, seed=settings.seed))
    no_heads = (f"{obj.name} inputs hold no previous answer token" if obj.teacherless else
                "the path is too short for a shortcut (path_len < 3)" if task.target_len < 3 else None)
    step("heads", lambda: measure_heads(model, obj, mech, bs, seed=settings.seed), skip_reason=no_heads)
    untrained, _ = model_from_config(ck.config, settings.device)  # the probe's untrained-model baseline
    step("probes", lambda: measure_probes(model, obj, mech, settings.probe_target, batch_size=min(bs, 500),
                                          seed=settings.seed, untrained_model=untrained))
    pairs = _first(batch, settings.patch_pairs)
    step("patching", lambda: measure_patching(model, obj, pairs, sweeps=("resid", "heads"), seed=settings.seed))
    has_snapshots = (path / "snapshots").is_dir() and any((path / "snapshots").iterdir())
    step("dynamics", lambda: measure_dynamics(path, mech, device=settings.device, batch_size=bs),
         skip_reason=None if has_snapshots else "the run kept no snapshots (train --snapshot-at STEPS)")

    heads = analyses["heads"] if "skipped" not in analyses["heads"] else None
    if heads is not None and heads.get("follow"):
        from hansprobe.analyses.follow import FollowResult

        figures["heads"].update(FollowResult(**heads["follow"]).figures())
    verdicts = {
        "clever_hans": clever_hans_verdict(obj.name, analyses["behaviour"], heads, no_heads),
        "indecipherable": indecipherable_verdict(analyses["entropy"]),
        "plan_represented": plan_verdict(analyses["probes"]),
        "decision_computed": decision_verdict(analyses["patching"]),
    }
    cfg = ck.config
    provenance = {
        "trained_with": cfg.get("versions", {}), "measured_with": package_versions(), "training_seed": cfg.get("seed"),
        "steps": cfg.get("step"), "graphs": ({"data": settings.data} if settings.data else {"seed": settings.seed}),
        "n_graphs": len(batch), "mechanism_graphs": len(mech), "patch_pairs": len(pairs), "device": settings.device,
    }
    curve = ck.metrics
    figures["training"] = {"training_curve": training_curve_figure(curve, path.name)} if curve else {}
    return CheckpointReport(name=path.name, path=str(path), config={k: v for k, v in cfg.items() if k != "metrics"},
                            provenance=provenance, training_curve=curve, verdicts=verdicts, analyses=analyses,
                            figures=figures)


N_ANALYSES = 6  # progress ticks per checkpoint


def training_curve_figure(rows: list[dict], name: str):
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "held-out accuracy (logged while training)"))
    steps = [r["step"] for r in rows]
    fig.add_scatter(x=steps, y=[r.get("train_loss") for r in rows], mode="lines+markers", name="train loss", row=1, col=1)
    fig.add_scatter(x=steps, y=[r.get("exact_match") for r in rows], mode="lines+markers", name="exact match", row=1, col=2)
    fig.add_scatter(x=steps, y=[r.get("decision_accuracy") for r in rows], mode="lines+markers", name="decision accuracy",
                    row=1, col=2)
    fig.update_xaxes(title_text="training step")
    fig.update_layout(title=f"Training curve of {name} (metrics.jsonl)")
    return fig


def build_report(paths: list[str | Path], settings: ReportSettings = ReportSettings(), progress: bool = False) -> dict:
    """Measure every checkpoint; returns {"json": report dict, "checkpoints": [CheckpointReport]}."""
    from hansprobe import __version__

    if not paths:
        raise ConfigError("give at least one checkpoint directory")
    names = [Path(p).name for p in paths]
    if len(set(names)) != len(names):
        raise ConfigError(f"two checkpoints share a directory name ({', '.join(names)}); the report labels columns by it")
    from hansprobe.checkpoint import read_config
    from hansprobe.tasks import read_ntf, task_from_dict

    for p in paths:  # fail on a bad checkpoint or a --data file that does not fit before measuring anything
        task = task_from_dict(read_config(p)["task"])
        if settings.data is not None:
            read_ntf(settings.data, task=task, limit=1)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=N_ANALYSES * len(paths), desc="report", unit="analysis")
    try:
        reports = [measure_checkpoint(p, settings, bar) for p in paths]
    finally:
        if bar is not None:
            bar.close()
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "hansprobe": __version__,
           "settings": asdict(settings), "questions": QUESTIONS,
           "thresholds": {"plan_selectivity": PLAN_SELECTIVITY, "follow_majority": FOLLOW_MAJORITY},
           "checkpoints": [r.to_dict() for r in reports]}
    return {"json": _jsonable(doc), "checkpoints": reports}


def write_report(out_dir: str | Path, paths: list[str | Path], settings: ReportSettings = ReportSettings(),
                 progress: bool = False) -> dict:
    """Measure, then write out_dir/report.json and out_dir/report.html atomically. Returns the JSON dict."""
    import json

    from hansprobe.checkpoint import atomic_write_bytes
    from hansprobe.report_html import render_html

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a directory to write report.html and report.json into")
    built = build_report(paths, settings, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "report.json", (json.dumps(built["json"], sort_keys=True, indent=1) + "\n").encode())
    atomic_write_bytes(out_dir / "report.html", render_html(built["json"], built["checkpoints"]).encode())
    return built["json"]

