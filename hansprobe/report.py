"""The shortcut-detection report: run every analysis on one or more checkpoints, answer four
questions with their evidence, and write `report.json` (schema in docs/report.md) and a
self-contained `report.html` (hansprobe.report_html).

The report only composes the analyses; each verdict rule below restates an analysis's own rule
(docs/concepts.md) except `plan_represented`, whose threshold is the report's (docs/decisions.md).
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hansprobe.analyses.base import _jsonable, null_pass_probability
from hansprobe.errors import CheckpointError, ConfigError

FORMAT = "hansprobe-report"
FORMAT_VERSION = 2  # 2: five questions (clever_hans_failure, lookup, ...), "not learned", notes
DEFAULT_SEED = 1234  # the analysis seed of every command; training never uses it

QUESTIONS = {  # display order: the combined verdict first
    "clever_hans_failure": "Clever-Hans failure?",
    "lookup": "Later tokens read off the previous one?",
    "indecipherable": "First decision token indecipherable?",
    "decision_computed": "Decision computed from the goal?",
    "plan_represented": "Plan represented before the answer?",
}
ANSWERS = ("yes", "no", "inconclusive", "not applicable", "not learned")
# A probe cell counts as evidence of a plan only if it beats shuffled labels by this much AND its
# interval (on graphs its selection did not use) clears chance, the shuffled control and the
# untrained model (docs/decisions.md 12).
PLAN_SELECTIVITY = 0.10
NULL_PASS_WARN = 0.01  # a plan yes whose cells would pass this often with no information says to re-measure
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
    notes: list = field(default_factory=list)  # where two answers read together need a sentence (consistency_notes)
    figures: dict = field(default_factory=dict, repr=False)  # analysis -> {name: plotly Figure}; not serialised

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("figures")
        return _jsonable(d)


def _ci(v, ci, digits=None) -> str:
    """`v [lo, hi]` with as many decimals as the interval supports: the last printed digit one order
    of magnitude below its half-width (2 to 4 decimals; 3 for a degenerate interval). report.json
    keeps full precision."""
    if digits is None:
        half = (ci[1] - ci[0]) / 2 if None not in ci else 0.0
        digits = 3 if not half > 0 else max(2, min(4, 1 - math.floor(math.log10(half))))
    return f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _verdict(answer: str, evidence: str, **values) -> dict:
    return {"answer": answer, "evidence": evidence, "values": _jsonable(values)}


# --- the questions ------------------------------------------------------------------------------
def _kind(name: str) -> str:
    return name.replace("_", "-")


def _gd_text(kind: str, v: dict) -> str:
    return (f"{_kind(kind)} pairs: |Δ| {_ci(v['abs_delta_mean'], v['abs_delta_ci'])} nats ({_ci(v['excess_mean'], v['excess_ci'])} "
            f"beyond relisting the edges), signed {_ci(v['delta_mean'], v['delta_mean_ci'])}, argmax follows the goal in "
            f"{v['follow_share']:.3f} of pairs")


def lookup_verdict(objective_name: str, behaviour: dict, heads: dict | None, why_not: str | None = None) -> dict:
    """yes when a set of heads is found whose joint ablation breaks forced accuracy at indices 2..l-2
    (the heads analysis's causal search) AND the counterfactual follow rate's CI lies above 1/2; no
    when neither; inconclusive when only one. Under reversed targets r_i = parent(r_(i-1)) is the
    correct rule: the same question then asks about the child -> parent lookup."""
    if heads is None:
        return _verdict("not applicable", why_not or f"{objective_name} inputs hold no previous answer token")
    reverse = objective_name.startswith("reverse")
    idx = heads.get("query_label_indices") or list(range(2, len(behaviour["forced_accuracy"]) - 1))
    forced = "; ".join(f"r{i} {_ci(behaviour['forced_accuracy'][i], behaviour['forced_accuracy_ci'][i])}" for i in idx)
    mech = heads["mechanism"]
    follow = heads.get("follow")
    follows = follow is not None and follow["follow_rate_ci"][0] > FOLLOW_MAJORITY
    parts = [f"forced accuracy {forced}"]
    if follow is not None:
        parts.append(f"swapping r_(i-1) for another arm's node makes it answer that node's {'parent' if reverse else 'child'} "
                     f"in {_ci(follow['follow_rate'], follow['follow_rate_ci'])} of graphs (indices {idx[0]}..{idx[-1]})")
    parts.append(heads["verdict"])
    if reverse:
        parts.append("under reversed targets this child -> parent lookup is the correct rule, not a shortcut")
    found = bool(mech["found"])
    answer = "yes" if found and follows else "no" if not found and not follows else "inconclusive"
    broke = (f"ablating {'+'.join(f'L{l}H{h}' for l, h in mech['heads'])} breaks it" if found
             else "no set of heads breaks it by ablation")
    moved = ("swapping r_(i-1) redirects the answer (follow-rate CI above 1/2)" if follows
             else "swapping r_(i-1) does not reliably redirect the answer" if follow is not None
             else "the follow rate was not measured")
    clause = f"{'and' if found == follows else 'but'} ".join([broke + " ", moved])
    return _verdict(answer, f"{clause} — " + "; ".join(parts), heads=mech["heads"], ablation_drop=mech["ablation_drop"],
                    ablation_drop_ci=mech.get("ablation_drop_ci"), ablation_graphs=mech.get("ablation_graphs"),
                    reads=mech.get("reads", {}), follow_rate=follow["follow_rate"] if follow else None,
                    follow_rate_ci=follow["follow_rate_ci"] if follow else None,
                    forced_accuracy={str(i): behaviour["forced_accuracy"][i] for i in idx})


INDECIPHERABLE_ANSWER = {"indecipherable": "yes", "decided": "no", "not learned": "not learned",
                         "inconclusive": "inconclusive", "not applicable": "not applicable"}


def indecipherable_verdict(entropy: dict) -> dict:
    """The entropy analysis's outcome (design.md's rule): the clause that decided it first, then the figures."""
    e = entropy
    answer = INDECIPHERABLE_ANSWER[e["outcome"]]
    parts = [e["verdict"]]
    if answer == "not applicable":  # a question without an object carries no values (docs/report.md); the numbers stay in analyses.entropy
        return _verdict(answer, e["verdict"])
    parts += [f"decision accuracy over the whole vocabulary {_ci(e['decision_accuracy'], e['decision_accuracy_ci'])}",
              f"information over uniform {_ci(e['information_nats'], e['information_nats_ci'])} nats",
              f"candidate entropy {_ci(e['candidate_entropy_frac'], e['candidate_entropy_frac_ci'])} x log d",
              f"mass outside the candidates {e['mass_outside_candidates']:.3f}"]
    follows = [f"{k} {_ci(v['rate'], v['ci'])}" for k, v in e.get("preference", {}).items() if v["follows"]]
    if follows:
        parts.append("the top candidate is the " + "; ".join(follows) + f" (chance {e['chance']:.3f})")
    return _verdict(answer, "; ".join(parts), outcome=e["outcome"], candidate_accuracy=e["candidate_accuracy"],
                    candidate_accuracy_ci=e["candidate_accuracy_ci"], decision_accuracy=e["decision_accuracy"],
                    decision_accuracy_ci=e["decision_accuracy_ci"], chance=e["chance"], equivalence=e["equivalence"],
                    information_nats=e["information_nats"], information_nats_ci=e["information_nats_ci"],
                    candidate_entropy_frac=e["candidate_entropy_frac"],
                    mass_outside_candidates=e["mass_outside_candidates"],
                    follows=[k for k, v in e.get("preference", {}).items() if v["follows"]])


def decision_verdict(entropy: dict, patching: dict | None = None) -> dict:
    """yes when both counterfactual kinds move the decision (goal swap: only the goal token moves;
    arm rewire: the same tokens and goal label, the goal reached through another first node), by the
    bias-invariant |Δ| of the candidate log-odds; no when the goal swap does not move it, or when it
    does but the rewire does not (a label cue, not the graph); inconclusive otherwise. The evidence
    names where activation patching restores the decision, or what the decision follows instead."""
    gd = entropy.get("goal_dependence")
    if not gd or not gd.get("applicable"):
        return _verdict("not applicable", (gd or {}).get("reason") or "goal dependence was not measured")
    kinds = gd["kinds"]
    status = {k: v["status"] for k, v in kinds.items()}
    figures = "; ".join(_gd_text(k, v) for k, v in kinds.items())
    swap, rewire = status.get("goal_swap"), status.get("arm_rewire", "n/a")
    follows = [f"the {k} ({v['rate']:.3f})" for k, v in entropy.get("preference", {}).items() if v["follows"]]
    instead = (f"; the decision follows {', '.join(follows)} instead" if follows else "")
    if swap == "present" and rewire in ("present", "n/a"):
        answer, clause = "yes", "the decision moves with the goal on both kinds of counterfactual pairs"
        if patching and patching.get("measurable") and patching.get("top"):
            clause += "; patching restores it at " + ", ".join(f"{t['component']} ({t['normalized']:.2f})"
                                                            for t in patching["top"][:3])
    elif swap == "absent":
        answer, clause = "no", (f"moving the goal to another arm does not move the decision (not by {gd['delta_min']} nats more "
                                f"than relisting the edges does){instead}")
    elif swap == "present" and rewire == "absent":
        answer, clause = "no", ("the decision moves with the goal token but not when the same goal is reached through "
                                f"another first node: it keys on a label, not on the graph{instead}")
    else:
        answer, clause = "inconclusive", f"goal dependence is not clear ({', '.join(f'{_kind(k)}: {v}' for k, v in status.items())})"
    return _verdict(answer, f"{clause}; {figures}", **{k: {kk: v[kk] for kk in ("status", "abs_delta_mean", "abs_delta_ci",
                    "excess_mean", "excess_ci", "delta_mean", "delta_mean_ci", "follow_share", "follow_ci")}
                    for k, v in kinds.items()})


@dataclass
class _PlanCell:
    """One probe cell judged by the plan rule: whether it passes, its evidence text, why it fails, and
    how often a cell with no information would pass the same bars (None without a held-out count)."""

    best: dict
    where: str
    ok: bool
    text: str
    why: str
    null_p: float | None


def _plan_cell(probes: dict, best: dict, where_kind: str) -> _PlanCell:
    lo, hi = best["accuracy_ci"]
    untrained = best.get("untrained")
    bar = max(probes["chance"], best["control_shuffle"], untrained if untrained is not None else 0.0)
    ok = best["selectivity"] >= PLAN_SELECTIVITY and lo > bar
    null_p = (null_pass_probability(int(probes["n_eval"]), probes["chance"], best["control_shuffle"] + PLAN_SELECTIVITY, bar)
              if probes.get("n_eval") else None)
    where = "embeddings" if best["layer"] == 0 else f"after block {best['layer'] - 1}"
    failed = ([f"selectivity {best['selectivity']:+.3f} < {PLAN_SELECTIVITY:+.2f}"] if best["selectivity"] < PLAN_SELECTIVITY else [])
    if lo <= bar:
        failed.append(f"the accuracy CI's lower end {lo:.3f} does not clear {bar:.3f} (the highest of chance, shuffled "
                      "labels and the untrained model)")
    text = (f"{where_kind} ({where} at '{best['position_label']}', best of {best['cells_searched']} cells on the selection "
            f"half): accuracy {best['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] on {probes.get('n_eval') or 'the other'} held-out "
            f"graphs, selectivity {best['selectivity']:+.3f} over shuffled labels (needs >= {PLAN_SELECTIVITY:+.2f})"
            + (f", untrained model {untrained:.3f}" if untrained is not None else ""))
    return _PlanCell(best, where_kind, ok, text, "; ".join(failed), null_p)


def plan_verdict(probes: dict) -> dict:
    """yes when the best goal-arm probe cell strictly before the answer, or at the decision position
    before the last block, beats shuffled labels by >= PLAN_SELECTIVITY and its accuracy's Wilson CI
    (on the evaluation half, which the cell's selection did not use) lies above chance, the
    shuffled-label control and the untrained model's accuracy there; otherwise no."""
    cells = [(probes.get("best") or {}, "before the answer"), (probes.get("best_at_decision") or {}, "at the decision position")]
    results = [_plan_cell(probes, b, w) for b, w in cells if b]
    if not results:
        return _verdict("no", f"no probe cell before the answer could be measured ({probes['target']})")
    yes = [r for r in results if r.ok]
    # Two cells are tested, so a yes by chance has at most the sum of their null pass probabilities
    # (Bonferroni); with few held-out graphs that is a few percent, and a sweep of many runs meets one
    # (docs/study-objectives.md: one in 63 runs, gone on 2,000 fresh graphs).
    nulls = [r.null_p for r in results if r.null_p is not None]
    null_p = min(1.0, sum(nulls)) if nulls else None
    if yes:
        clause = f"{yes[0].where}, the probe reads the goal arm beyond every control"
        if null_p is not None:
            clause += (f" (a cell with no goal-arm information clears these bars on {probes['n_eval']} held-out graphs "
                       f"with probability at most {null_p:.2g}"
                       + ("; re-measure on more graphs (--mechanism-graphs) before believing it)" if null_p >= NULL_PASS_WARN
                          else ")"))
    else:
        clause = "no cell clears the bars (" + "; ".join(f"{r.where}: {r.why}" for r in results) + ")"
    evidence = f"{clause} — {probes['target']} probe (chance {probes['chance']:.3f}): " + "; ".join(r.text for r in results)
    if probes.get("constant_target"):
        evidence = (f"the {probes['target']} is the same in every graph of this task (a label cue), so a probe has nothing "
                    f"to decode: {evidence}")
    causal = probes.get("causal")
    if causal:
        evidence += (f"; steering along the prompt cell's probe moves the decision logit difference by "
                     f"{causal['steer_probe']['mean_change']:+.3f} (random directions {causal['steer_random']['mean_change']:+.3f})")
    chosen = (yes or results)[0]
    b = chosen.best
    return _verdict("yes" if yes else "no", evidence, where=chosen.where, layer=b["layer"], position=b["position_label"],
                    accuracy=b["accuracy"], accuracy_ci=b["accuracy_ci"], selectivity=b["selectivity"],
                    chance=probes["chance"], null_pass_probability=null_p,
                    cells={r.where: {k: r.best[k] for k in ("layer", "position_label", "accuracy", "accuracy_ci", "selectivity")}
                           for r in results})


def failure_verdict(objective_name: str, verdicts: dict, dynamics: dict | None) -> dict:
    """The Clever-Hans failure is the conjunction: the lookup carries the later tokens AND the first
    decision is indecipherable AND it is not computed from the goal (AND, where snapshots exist, the
    later tokens were learned and r_1 never). no as soon as one part says no (naming it)."""
    if objective_name.startswith("reverse"):
        return _verdict("not applicable", "reversed targets make no decision before the answer (the goal is copied first)")
    if objective_name in ("teacherless", "reverse-teacherless"):  # partial-teacherless trains on the true prefix too
        return _verdict("not applicable", "teacherless inputs hold no previous answer token: the Clever-Hans failure is a "
                        "failure of teacher-forced training")
    lk, ind, dec = (verdicts[k]["answer"] for k in ("lookup", "indecipherable", "decision_computed"))
    against = []
    if lk == "no":
        against.append("later tokens are not read off the previous one")
    if ind == "no":
        against.append("the first decision is not indecipherable")
    if ind == "not learned":
        against.append("the model has not learned the candidate set (a different failure: not trained far enough)")
    if dec == "yes":
        against.append("the decision is computed from the goal")
    parts = {"lookup": lk, "indecipherable": ind, "decision computed": dec}
    summary = ", ".join(f"{k} {v}" for k, v in parts.items())
    if against:
        return _verdict("no", f"{'; '.join(against)} ({summary})", parts=parts)
    if lk == "not applicable":
        return _verdict("not applicable", f"no lookup to measure: {verdicts['lookup']['evidence']}")
    if (lk, ind, dec) != ("yes", "yes", "no"):
        return _verdict("inconclusive", f"a part is inconclusive ({summary})", parts=parts)
    if dynamics and "skipped" not in dynamics:
        learned = dynamics["learned_at"]  # per label index; 1 is the decision, 2..l-2 the lookup's
        later = range(2, len(learned) - 1)
        order = (f"learning order over {len(dynamics['steps'])} snapshots: "
                 + ", ".join(f"r{i} at step {learned[i]}" if learned[i] is not None else f"r{i} never" for i in range(len(learned))))
        if learned[1] is not None or any(learned[i] is None for i in later):
            return _verdict("inconclusive", f"the snapshots disagree: {order} ({summary})", parts=parts)
        return _verdict("yes", f"the lookup carries r2..r{len(learned) - 2}, r1 is at chance and ignores the goal; {order}",
                        parts=parts)
    return _verdict("yes", "the lookup carries the later tokens, the first decision is at chance and ignores the goal "
                    "(no snapshots kept: the learning order is not checked)", parts=parts)


def consistency_notes(verdicts: dict, entropy: dict, patching: dict | None) -> list[str]:
    """Where two answers could be read as contradicting each other, say what they mean together."""
    a = {k: v["answer"] for k, v in verdicts.items()}
    notes = []
    if a["plan_represented"] == "yes" and a["decision_computed"] == "no":
        notes.append("A probe reads the goal arm, but the decision does not move with the goal: the information is in the "
                     "residual stream and the decision does not use it.")
    if a["lookup"] == "yes" and a["decision_computed"] == "yes":
        notes.append("Later tokens are read off the previous one AND the decision is computed from the goal: the lookup is "
                     "the correct conditional here (a planning model has it too), not a failure.")
    if a["decision_computed"] == "yes" and entropy.get("information_nats_ci") and entropy["information_nats_ci"][1] <= 0:
        notes.append("The goal moves the decision although the information over uniform is <= 0: a real goal signal "
                     "under a label preference that costs more log score than it gains.")
    swap = ((entropy.get("goal_dependence") or {}).get("kinds") or {}).get("goal_swap", {}).get("status")
    if a["decision_computed"] == "no" and patching and patching.get("measurable") and swap == "present":
        notes.append("Activation patching finds a goal-token effect to restore, but the counterfactual pairs say the "
                     "decision does not follow the goal through the graph; the patching maps that label effect.")
    if a["indecipherable"] == "yes" and entropy.get("candidate_entropy_frac", 1) < 0.9:
        notes.append("The first decision is at chance but not uniform: the model guesses with a preference that is "
                     "not tied to the goal (see what it follows in the evidence).")
    return notes


# --- running it --------------------------------------------------------------------------------
def _graphs(settings: ReportSettings, task, n: int):
    if settings.data is not None:
        return _read_data(settings.data, task, n)
    return task.generate(n, settings.seed)


def _read_data(path, task, limit):
    from hansprobe.tasks import get_task_spec

    spec = get_task_spec(task.name)
    if spec.read_text is None:
        raise ConfigError(f"--data reads text files of tasks that have a text format; {task.name} has none")
    return spec.read_text(path, task, limit)


def _first(batch, n: int):
    return batch if len(batch) <= n else next(iter(batch.split(n)))


def measure_checkpoint(path: str | Path, settings: ReportSettings = ReportSettings(), progress=None) -> CheckpointReport:
    """Every analysis on one checkpoint, then the four verdicts. `progress` is a tqdm bar to advance
    (one tick per analysis) or None."""
    from hansprobe.analyses import AnalysisContext, registered
    from hansprobe.checkpoint import load_checkpoint, model_from_config, package_versions

    path = Path(path)
    ck = load_checkpoint(path, device=settings.device)
    model, obj, task = ck.model, ck.objective, ck.task
    batch = _graphs(settings, task, settings.n_graphs)
    mech = _first(batch, settings.mechanism_graphs)  # the costly analyses take a prefix of the same graphs
    pairs = _first(batch, settings.patch_pairs)
    ctx = AnalysisContext(path=path, config=ck.config, model=model, objective=obj, task=task, batch=batch,
                          mechanism_batch=mech, pairs=pairs, seed=settings.seed, batch_size=settings.batch_size,
                          device=settings.device, probe_target=settings.probe_target,
                          untrained_model=lambda: model_from_config(ck.config, settings.device)[0])  # probe baseline
    analyses, figures = {}, {}
    for spec in registered():  # every registered analysis, in report order (analyses/registry.py)
        reason = spec.skip(ctx)
        if reason:
            analyses[spec.name] = {"skipped": reason}
        else:
            res = spec.measure(ctx)
            analyses[spec.name] = spec.summarise(res)
            figures[spec.name] = res.figures()
        if progress is not None:
            progress.set_postfix_str(f"{path.name}: {spec.name}")
            progress.update(1)

    heads = analyses["heads"] if "skipped" not in analyses["heads"] else None
    no_heads = analyses["heads"].get("skipped")
    verdicts = {
        "lookup": lookup_verdict(obj.name, analyses["behaviour"], heads, no_heads),
        "indecipherable": indecipherable_verdict(analyses["entropy"]),
        "decision_computed": decision_verdict(analyses["entropy"], analyses["patching"]),
        "plan_represented": plan_verdict(analyses["probes"]),
    }
    verdicts = {"clever_hans_failure": failure_verdict(obj.name, verdicts, analyses["dynamics"]), **verdicts}
    notes = consistency_notes(verdicts, analyses["entropy"], analyses["patching"])
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
                            notes=notes, figures=figures)


def n_analyses() -> int:
    """Progress ticks per checkpoint: one per registered analysis."""
    from hansprobe.analyses import registered

    return len(registered())


def training_curve_figure(rows: list[dict], name: str):
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.22, subplot_titles=("training loss", "held-out accuracy (logged while training)"))
    steps = [r["step"] for r in rows]
    fig.add_scatter(x=steps, y=[r.get("train_loss") for r in rows], mode="lines+markers", name="train loss", row=1, col=1)
    fig.add_scatter(x=steps, y=[r.get("exact_match") for r in rows], mode="lines+markers", name="exact match", row=2, col=1)
    fig.add_scatter(x=steps, y=[r.get("decision_accuracy") for r in rows], mode="lines+markers", name="decision accuracy",
                    row=2, col=1)
    fig.update_xaxes(title_text="training step")
    fig.update_layout(title=f"Training curve of {name} (metrics.jsonl)")
    return fig


class LineProgress:
    """The tqdm calls measure_checkpoint makes, as one flushed line on stderr per step (with elapsed
    time and a naive ETA), for output that is not a terminal."""

    def __init__(self, total: int):
        import sys
        import time

        self.total, self.done, self.text, self.t0, self.time = total, 0, "", time.perf_counter(), time.perf_counter
        print(f"report: {total} analyses to run ({n_analyses()} per checkpoint)", file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str) -> None:
        self.text = text

    def update(self, n: int = 1) -> None:
        import sys

        self.done += n
        elapsed = self.time() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        print(f"report: {self.done}/{self.total} {self.text} done ({elapsed:.0f} s elapsed, ~{eta:.0f} s left)",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def expand_checkpoint_dirs(paths: list[str | Path]) -> list[Path]:
    """Checkpoint directories as given; a directory without config.json that holds checkpoint
    directories (e.g. checkpoints/controls/) stands for those, sorted by name."""
    out = []
    for p in map(Path, paths):
        if p.is_dir() and (p / "sweep.json").is_file() and (p / "runs").is_dir():  # a sweep directory: its runs
            p = p / "runs"
        inner = sorted(c for c in p.iterdir() if (c / "config.json").is_file()) if p.is_dir() and not (p / "config.json").exists() else []
        out += inner or [p]
    if not out:
        raise ConfigError("give at least one checkpoint directory")
    return out


def build_report(paths: list[str | Path], settings: ReportSettings = ReportSettings(), progress: bool | str = False,
                 on_checkpoint=None) -> dict:
    """Measure every checkpoint; returns {"json": report dict, "checkpoints": [CheckpointReport]}.
    `on_checkpoint(built)` is called after each checkpoint with the report so far (same shape; its
    "pending" lists the checkpoints still to measure), so that a caller can write and print it."""
    from hansprobe import __version__

    paths = expand_checkpoint_dirs(paths)
    names = [Path(p).name for p in paths]
    if len(set(names)) != len(names):
        raise ConfigError(f"two checkpoints share a directory name ({', '.join(names)}); the report labels columns by it")
    from hansprobe.checkpoint import read_config
    from hansprobe.tasks import task_from_dict

    for p in paths:  # fail on a bad checkpoint or a --data file that does not fit before measuring anything
        task = task_from_dict(read_config(p)["task"])
        if settings.data is not None:
            _read_data(settings.data, task, 1)
    bar = None
    if progress == "lines":  # not a terminal (nohup, CI, a log file): one plain line per analysis
        bar = LineProgress(n_analyses() * len(paths))
    elif progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_analyses() * len(paths), desc="report", unit="analysis")
    def built(reports):
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "hansprobe": __version__,
               "settings": asdict(settings), "questions": QUESTIONS,
               "answers": list(ANSWERS), "thresholds": _thresholds(),
               "checkpoints": [r.to_dict() for r in reports], "pending": names[len(reports):]}
        return {"json": _jsonable(doc), "checkpoints": reports}

    reports = []
    try:
        for p in paths:
            reports.append(measure_checkpoint(p, settings, bar))
            if on_checkpoint is not None and len(reports) < len(paths):
                on_checkpoint(built(reports))
    finally:
        if bar is not None:
            bar.close()
    result = built(reports)
    if on_checkpoint is not None:
        on_checkpoint(result)
    return result


def _thresholds() -> dict:
    from hansprobe.analyses import entropy, goal_dependence, heads

    return {"plan_selectivity": PLAN_SELECTIVITY, "plan_null_pass_warn": NULL_PASS_WARN, "follow_majority": FOLLOW_MAJORITY,
            "equivalence_band": entropy.EQUIVALENCE_BAND, "equivalence_alpha": entropy.EQUIVALENCE_ALPHA,
            "information_fraction": entropy.INFO_FRACTION, "candidate_mass_min": entropy.CANDIDATE_MASS_MIN,
            "goal_dependence_delta_min": goal_dependence.DELTA_MIN, "lookup_drop": heads.DROP_THRESHOLD,
            "lookup_max_set": heads.MAX_SET}


def write_report(out_dir: str | Path, paths: list[str | Path], settings: ReportSettings = ReportSettings(),
                 progress: bool | str = False, on_checkpoint=None) -> dict:
    """Measure, then write out_dir/report.json and out_dir/report.html atomically, holding a lock on
    out_dir so that two reports cannot interleave their files. Returns the JSON dict."""
    from hansprobe.checkpoint import run_lock

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a directory to write report.html and report.json into")

    with run_lock(out_dir):
        return _measure_and_write(out_dir, paths, settings, progress, on_checkpoint)


def _measure_and_write(out_dir: Path, paths, settings: ReportSettings, progress: bool, on_checkpoint=None) -> dict:
    import json

    from hansprobe.checkpoint import publish_together
    from hansprobe.report_html import render_html

    def publish(built):
        """Write the report so far: a killed run keeps every checkpoint it finished, and the page
        says which are still pending."""
        data = (json.dumps(built["json"], sort_keys=True, indent=1) + "\n").encode()
        # The page carries the hash of the JSON it was drawn from, and both are switched together.
        page = render_html(built["json"], built["checkpoints"], json_sha256=hashlib.sha256(data).hexdigest())
        publish_together(out_dir, {"report.json": data, "report.html": page.encode()})
        if on_checkpoint is not None:
            on_checkpoint(built)

    return build_report(paths, settings, progress, on_checkpoint=publish)["json"]


SHA_META = re.compile(r'<meta name="hansprobe-report-json-sha256" content="([0-9a-f]{64})">')


def read_report(out_dir: str | Path) -> dict:
    """report.json of a report directory, after checking that report.html was drawn from these very
    bytes (an interrupted write is first finished or discarded, `checkpoint.recover_staging`)."""
    import json

    from hansprobe.checkpoint import recover_staging, run_lock

    out_dir = Path(out_dir)
    if (out_dir / ".staging").exists():
        with run_lock(out_dir):
            recover_staging(out_dir)
    try:
        data = (out_dir / "report.json").read_bytes()
        page = (out_dir / "report.html").read_text(encoding="utf-8")
    except OSError as e:
        raise CheckpointError(f"{out_dir} is not a complete report directory ({e.strerror}: {e.filename}); "
                              "run hansprobe report again") from None
    m = SHA_META.search(page)
    if not m or m.group(1) != hashlib.sha256(data).hexdigest():
        raise CheckpointError(f"{out_dir}/report.html and report.json come from different report runs; run "
                              "hansprobe report again")
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{out_dir}/report.json is not valid JSON ({e}); run hansprobe report again") from None

