"""First-token entropy: is q(r_1 | p) informative about the answer, or uniform over the candidates?

At the decision position (the objective's own input, so for teacher forcing the true start token
r_0 is in place) we take the model's distribution over the full vocabulary, renormalise it over the
d candidate children of the start, and report entropy, mass outside the candidates, the accuracy
among the candidates and the information over uniform, each with a 95% CI, the goal dependence on
paired counterfactuals (goal_dependence.py), and the *indecipherable* verdict of design.md:

- *decided* (not indecipherable) when the goal moves the decision toward it or away from it (the
  signed goal effect of a pair kind), or the candidate accuracy lies above 1/d (even inside the
  band: "weakly decided"), or the information over uniform lies above 0.05 log d — each route
  tested at route_alpha, so that all of them together call a model that ignores the goal decided in
  at most FAMILY_ALPHA of graph draws (docs/decisions.md 53; measured in docs/calibration.md);
- else *not learned* when less than half of the mass is on the candidates ("has not learned the
  candidate set", its own outcome);
- *indecipherable* when the candidate accuracy is shown equivalent to 1/d (two one-sided binomial
  tests against a band of EQUIVALENCE_BAND of the chance-to-perfect range above 1/d and of the
  chance-to-zero range below it), the goal dependence is shown absent for every
  pair kind and the information CI's upper end is <= 0.05 log d;
- *inconclusive* otherwise (too few graphs to tell);
- *not applicable* under reversed targets (no decision is made before the answer: the goal is copied
  first and every later token is a parent lookup).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from scipy import stats

from hansprobe.mechanics.results import Result, fmt_ci, mean_ci, t_ci, wilson_ci
from hansprobe.mechanics.forward import decision_distribution
from hansprobe.measurements.goal_dependence import FAMILY_ALPHA, GoalDependenceResult, measure_goal_dependence, route_alpha
from hansprobe.measurements.registry import AnalysisSpec, register_analysis
from hansprobe.objectives import Objective
from hansprobe.tasks.base import Batch

# Candidate accuracy equivalent to chance: within this fraction of the way from chance to perfect
# above it, and from chance to never below it: [c (1 - b), c + b (1 - c)] for c = 1/d (docs/decisions.md
# 39; at d = 2 the band of decision 4, [0.4, 0.6]).
EQUIVALENCE_BAND = 0.20
EQUIVALENCE_ALPHA = 0.05  # each one-sided test
INFO_FRACTION = 0.05  # design.md: information CI upper end <= 0.05 log d counts as none
CANDIDATE_MASS_MIN = 0.5  # below this mean mass on the candidates the candidate set is "not learned"
OUTCOMES = ("indecipherable", "decided", "not learned", "inconclusive", "not applicable")


@dataclass
class EntropyResult(Result):
    objective: str
    n_graphs: int
    degree: int
    chance: float
    log_d: float
    decision_index: int
    decision_accuracy: float  # argmax over the full vocabulary == decision node (what the model says)
    decision_accuracy_ci: tuple[float, float]
    candidate_accuracy: float  # argmax among the d candidates == decision node (what it would pick): the verdict's
    candidate_accuracy_ci: tuple[float, float]
    equivalence: dict  # two one-sided tests of candidate accuracy against the band around 1/d
    entropy_nats: float  # over the full vocabulary
    entropy_nats_ci: tuple[float, float]
    candidate_entropy_nats: float  # renormalised over the d candidates
    candidate_entropy_nats_ci: tuple[float, float]
    candidate_entropy_frac: float  # candidate entropy / log d (1 = uniform)
    candidate_entropy_frac_ci: tuple[float, float]
    mass_outside_candidates: float
    mass_outside_candidates_ci: tuple[float, float]
    information_nats: float  # mean log q~(correct) - log(1/d)
    information_nats_ci: tuple[float, float]
    indecipherable: bool  # outcome == "indecipherable"
    outcome: str  # one of OUTCOMES
    goal_dependence: dict | None = None  # GoalDependenceResult.to_dict(), or None when not measured (dynamics)
    preference: dict = field(default_factory=dict)  # what a non-uniform guess follows: rate, CI
    per_example_candidate_entropy_frac: list[float] = field(default_factory=list, repr=False)
    per_example_entropy_nats: list[float] = field(default_factory=list, repr=False)
    thresholds: dict = field(default_factory=dict)  # the bars the outcome was decided at (decide's constants)
    candidate_correct: int = 0  # graphs whose top candidate is the goal's: the count the binomial tests read
    information_decision_lo: float | None = None  # the information's lower end one-sided at the route's alpha

    @property
    def verdict(self) -> str:
        """The clause that decided the outcome, with its figures (`decide`, rendered from this result)."""
        return self.prose()["verdict"]

    def prose(self) -> dict[str, str]:
        gd = GoalDependenceResult(**self.goal_dependence) if self.goal_dependence is not None else None
        if self.outcome == "not applicable":
            return {"verdict": gd.reason if gd is not None else "reversed targets: no decision is made before the answer"}
        return {"verdict": decide(self.chance, self.log_d, self.candidate_correct, self.n_graphs, self.equivalence,
                                  self.information_nats_ci, self.information_decision_lo, 1 - self.mass_outside_candidates,
                                  gd)[1]}

    def summary(self) -> dict:
        """The figures without the per-example lists (what the CLI prints as JSON)."""
        d = self.to_dict()
        d.pop("per_example_candidate_entropy_frac")
        d.pop("per_example_entropy_nats")
        if d.get("goal_dependence"):
            d["goal_dependence"].pop("per_pair_delta", None)
        return d

    def text(self) -> str:
        ld, eq = self.log_d, self.equivalence
        lines = [
            f"  decision accuracy        {fmt_ci(self.decision_accuracy, self.decision_accuracy_ci)}   chance 1/d = {self.chance:.3f}",
            f"  entropy, full vocab      {fmt_ci(self.entropy_nats, self.entropy_nats_ci)} nats",
            f"  entropy over candidates  {fmt_ci(self.candidate_entropy_nats, self.candidate_entropy_nats_ci)} nats"
            f" = {fmt_ci(self.candidate_entropy_frac, self.candidate_entropy_frac_ci)} x log d (log d = {ld:.3f})",
            f"  mass outside candidates  {fmt_ci(self.mass_outside_candidates, self.mass_outside_candidates_ci)}",
            f"  information over uniform {fmt_ci(self.information_nats, self.information_nats_ci)} nats (0 = uniform guess, "
            f"{ld:.3f} = certain)"]
        follows = [f"{k} ({v['rate']:.3f})" for k, v in self.preference.items() if v["follows"]]
        if follows:
            lines.append(f"  the top candidate follows: {', '.join(follows)} (chance {self.chance:.3f})")
        lines.append(f"  candidate accuracy       {fmt_ci(self.candidate_accuracy, self.candidate_accuracy_ci)}   (argmax among "
                     f"the {self.degree} candidates; equivalence band [{eq['band'][0]:.3f}, {eq['band'][1]:.3f}], TOST p = "
                     f"{eq['p_value']:.2g})")
        for kind, v in (self.goal_dependence or {}).get("kinds", {}).items():
            lines.append(f"  goal dependence, {kind.replace('_', '-'):<10} signed delta {fmt_ci(v['delta_mean'], v['delta_mean_ci'])} "
                         f"nats ({v['status']}), argmax follows the goal {fmt_ci(v['follow_share'], v['follow_ci'])}; |delta| "
                         f"{fmt_ci(v['abs_delta_mean'], v['abs_delta_ci'])}, relisting the edges {v['placebo_abs_delta_mean']:.3f}")
        lines.append(f"  outcome: {self.outcome.upper()} — {self.verdict}")
        return "\n".join(lines)

    def figures(self) -> dict:
        import plotly.graph_objects as go

        fig = go.Figure()
        fig.add_histogram(x=self.per_example_candidate_entropy_frac, xbins=dict(start=0, end=1.0001, size=0.025),
                          name="candidates (fraction of log d)")
        fig.add_vline(x=1.0, line_dash="dot", annotation_text="uniform over candidates")
        fig.update_layout(
            title=f"Decision-token entropy over the {self.degree} candidates ({self.objective}, {self.n_graphs} graphs); "
                  f"mean {self.candidate_entropy_frac:.2f} log d",
            xaxis_title="H(q~(. | p)) / log d", yaxis_title="graphs", bargap=0.05,
            xaxis_range=[-0.03, 1.05])  # the whole scale, so a pile at 0 (a decided model) shows too
        figs = {"decision_entropy_histogram": fig}
        if self.goal_dependence and self.goal_dependence.get("per_pair_delta"):
            figs.update(GoalDependenceResult(**self.goal_dependence).figures())
        return figs


def equivalence_band(chance: float) -> tuple[float, float]:
    """[c (1 - b), c + b (1 - c)]: the same fraction b = EQUIVALENCE_BAND of the range on each side of
    chance c, so that the band means the same at every d."""
    return chance * (1 - EQUIVALENCE_BAND), chance + EQUIVALENCE_BAND * (1 - chance)


def equivalence_test(correct: int, n: int, chance: float) -> dict:
    """Two one-sided exact binomial tests (scipy.stats.binomtest) of H0: accuracy outside the band
    `equivalence_band(chance)`; equivalent when both reject at EQUIVALENCE_ALPHA."""
    lo, hi = equivalence_band(chance)
    p_lo = stats.binomtest(correct, n, lo, alternative="greater").pvalue
    p_hi = stats.binomtest(correct, n, hi, alternative="less").pvalue
    p = float(max(p_lo, p_hi))
    return {"band": [lo, hi], "p_value": p, "alpha": EQUIVALENCE_ALPHA, "equivalent": p < EQUIVALENCE_ALPHA}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def decide(chance: float, log_d: float, correct: int, n: int, equivalence: dict, info_ci, info_decision_lo: float,
           candidate_mass: float, gd: GoalDependenceResult | None) -> tuple[str, str]:
    """(outcome, the clause that decided it). The order matters: a shown decision wins over a
    missing candidate set, which wins over "at chance" (docs/concepts.md).

    "Decided" has several routes — each pair kind's signed goal effect (toward the goal or away from
    it), the candidate accuracy above chance, the information over uniform above 0.05 log d — and a
    model that ignores the goal must take none of them in more than FAMILY_ALPHA of graph draws, so
    each is tested at route_alpha (Bonferroni; docs/decisions.md 53). An accuracy *below* chance is
    no route: a model that ignores the goal is right in exactly 1/d of graphs in expectation, so a
    sample below chance without a goal effect away from the goal is sampling; a model that does
    steer away from the goal is caught by the signed goal-swap test, far more powerfully."""
    acc = correct / n
    acc_ci = wilson_ci(correct, n)
    band = f"[{equivalence['band'][0]:.3f}, {equivalence['band'][1]:.3f}]"
    acc_txt = f"candidate accuracy {acc:.3f} [{acc_ci[0]:.3f}, {acc_ci[1]:.3f}]"
    info_cut = INFO_FRACTION * log_d
    alpha = route_alpha(len(gd.kinds) if gd is not None else 0)
    level = f"each route at {alpha:.4g}, {FAMILY_ALPHA} over all"
    for k, v in (gd.kinds.items() if gd else []):
        if v["status"] in ("present", "opposite"):
            way = "toward it" if v["status"] == "present" else "away from it"
            lo, hi = v["delta_mean_decision_ci"]
            return "decided", (f"the decision follows the goal: on {k.replace('_', '-')} pairs the candidate log-odds move "
                               f"{way} by {v['delta_mean']:.3f} [{lo:.3f}, {hi:.3f}] nats (signed, {1 - alpha:.2%} interval "
                               f"beyond +-{gd.delta_min}; {level})")
    p_above = float(stats.binomtest(correct, n, chance, alternative="greater").pvalue) if n else 1.0
    if p_above < alpha:
        how = ("weakly decided: inside the band of equivalence, but above chance" if equivalence["equivalent"]
               else "and is not equivalent to it")
        return "decided", (f"the {acc_txt} lies above chance {chance:.3f} (one-sided binomial p = {p_above:.2g} < "
                           f"{alpha:.4g}), {how} (band {band}; {level})")
    if info_decision_lo > info_cut:
        return "decided", (f"information over uniform {info_ci[0]:.3f}..{info_ci[1]:.3f} nats lies above {INFO_FRACTION} "
                           f"log d (one-sided at {alpha:.4g}: lower end {info_decision_lo:.3f}; {level})")
    if candidate_mass < CANDIDATE_MASS_MIN:
        return "not learned", (f"{_pct(1 - candidate_mass)} of the mass is off the {round(1 / chance)} candidates: the model "
                               f"has not learned the candidate set (among them: {acc_txt}, chance {chance:.3f})")
    absent = gd is not None and gd.all_absent
    if equivalence["equivalent"] and absent and info_ci[1] <= info_cut:
        kinds = " and ".join(f"{k.replace('_', '-')} {v['delta_mean']:+.3f} [{v['delta_mean_ci'][0]:+.3f}, "
                             f"{v['delta_mean_ci'][1]:+.3f}]" for k, v in gd.kinds.items())
        return "indecipherable", (f"{acc_txt} is equivalent to chance {chance:.3f} (band {band}, TOST p = "
                                  f"{equivalence['p_value']:.2g}), the goal does not move it toward the goal (signed Δ "
                                  f"{kinds} nats, inside +-{gd.delta_min}) "
                                  f"and the information CI upper end {info_ci[1]:.3f} <= {info_cut:.3f} nats")
    why = []
    if not equivalence["equivalent"]:
        why.append(f"{acc_txt} is neither shown equivalent to chance (band {band}, TOST p = {equivalence['p_value']:.2g}) "
                   "nor shown different from it")
    if gd is None:
        why.append("goal dependence not measured")
    elif not absent:
        why.append("goal dependence is neither shown nor excluded (" + ", ".join(
            f"{k.replace('_', '-')}: {v['status']}" for k, v in gd.kinds.items()) + ")")
    if info_ci[1] > info_cut:
        why.append(f"information CI [{info_ci[0]:.3f}, {info_ci[1]:.3f}] straddles {info_cut:.3f}")
    return "inconclusive", "; ".join(why) + " (more graphs would tell)"


def _preference(top: torch.Tensor, batch: Batch) -> dict:
    """Rates at which the model's top candidate is the lowest label, the highest label, the one
    whose edge is listed first or last in the prompt (each at chance 1/d if the guess ignores it);
    a rule is "followed" when its rate's CI lies above 1/d."""
    d = batch.candidates.shape[1]
    from_start = batch.edge_parent == batch.start[:, None]  # (B, E)
    is_cand = batch.edge_child[:, None, :] == batch.candidates[:, :, None]  # (B, D, E)
    edge_index = (is_cand & from_start[:, None, :]).float().argmax(-1)  # (B, D) where each candidate's edge is
    rules = {"lowest label": torch.zeros_like(top), "highest label": torch.full_like(top, d - 1),
             "edge listed first": edge_index.argmin(1), "edge listed last": edge_index.argmax(1)}
    n = len(top)
    out = {}
    for name, pick in rules.items():
        k = int((top == pick).sum())
        lo, hi = wilson_ci(k, n)
        out[name] = {"rate": k / n, "ci": [lo, hi], "follows": bool(lo > 1 / d)}  # picked more often than chance
    return out


def measure_entropy(model, objective: Objective, batch: Batch, *, batch_size: int = 1000, seed: int = 0,
                    progress: bool = False, forced_logp: torch.Tensor | None = None) -> EntropyResult:
    """Decision-token entropy, information over uniform and goal dependence; `seed` seeds the
    bootstrap CIs and the counterfactual partners. `forced_logp`: the batch's forced label
    log-probs (B, L, V), when the caller has them (the report's one pass)."""
    if forced_logp is None:
        logp = decision_distribution(model, objective, batch, batch_size, progress)
    else:
        logp = forced_logp[:, objective.decision_index(batch.target.shape[1])]
    gd = measure_goal_dependence(model, objective, batch, seed=seed, batch_size=batch_size, clean_logp=logp)  # reuses the clean pass
    return entropy_from_logprobs(logp, objective, batch, seed, gd)


def decision_tensors(logp: torch.Tensor, batch: Batch) -> dict:
    """Per graph, from log q(. | input) at the decision position (B, V): the entropy (nats), the
    candidate-renormalised log q and its entropy (also as a fraction of log d), the mass outside the
    candidates, the information over uniform; and the counts right over the vocabulary and among
    the candidates. The point estimates of entropy_from_logprobs, without its intervals (the
    dynamics analysis reads these per snapshot)."""
    n, d = batch.candidates.shape
    log_d = math.log(d) if d > 1 else 0.0
    p = logp.exp()
    entropy = -(p * logp).sum(-1)  # (B,)
    cand_logp = logp.gather(1, batch.candidates)  # (B, D)
    cand_logq = cand_logp - cand_logp.logsumexp(-1, keepdim=True)  # renormalised over candidates
    cand_entropy = -(cand_logq.exp() * cand_logq).sum(-1)
    rows = torch.arange(n)
    return {"entropy": entropy, "candidate_logq": cand_logq, "candidate_entropy": cand_entropy,
            "candidate_entropy_frac": cand_entropy / log_d if d > 1 else torch.zeros_like(cand_entropy),
            "outside": (1 - cand_logp.exp().sum(-1)).clamp_min(0), "information": cand_logq[rows, batch.goal_arm] + log_d,
            "correct": int((logp.argmax(-1) == batch.candidates[rows, batch.goal_arm]).sum()),
            "candidate_correct": int((cand_logq.argmax(-1) == batch.goal_arm).sum())}


def entropy_from_logprobs(logp: torch.Tensor, objective: Objective, batch: Batch, seed: int = 0,
                          goal_dependence: GoalDependenceResult | None = None, describe: bool = True) -> EntropyResult:
    """The entropy result from log q(. | input) at the decision position, (B, V) on CPU. Without a
    goal-dependence result (training dynamics) the outcome can only be decided, not learned or
    inconclusive, never indecipherable. `describe=False`: no bootstrap intervals for the figures
    no rule reads (NaN instead); the outcome is the same."""
    n, d = batch.candidates.shape
    log_d = math.log(d) if d > 1 else 0.0
    t = decision_tensors(logp, batch)
    correct, cand_correct, cand_logq = t["correct"], t["candidate_correct"], t["candidate_logq"]
    acc_ci = wilson_ci(correct, n)
    cand_ci = wilson_ci(cand_correct, n)
    equivalence = equivalence_test(cand_correct, n, 1 / d)
    e, ce, fr, out_, inf = (t[k].double().numpy() for k in ("entropy", "candidate_entropy", "candidate_entropy_frac",
                                                             "outside", "information"))
    # The intervals a rule reads are analytic (t for means), at the level the rule uses; the bootstrap
    # ones below only describe, and `describe=False` leaves them out (the calibration harness).
    info_ci = tuple(float(x) for x in t_ci(inf))
    alpha = route_alpha(len(goal_dependence.kinds) if goal_dependence is not None else 0)
    info_decision_lo = float(t_ci(inf, level=1 - 2 * alpha)[0])  # one-sided at alpha
    if objective.reverse:
        outcome = "not applicable"
    else:
        outcome, _ = decide(1 / d, log_d, cand_correct, n, equivalence, info_ci, info_decision_lo, 1 - float(out_.mean()),
                            goal_dependence)
    ci = (lambda x: mean_ci(x, seed)) if describe else (lambda x: (float("nan"), float("nan")))
    return EntropyResult(
        objective=objective.name, n_graphs=n, degree=d, chance=1 / d, log_d=log_d,
        decision_index=objective.decision_index(batch.target.shape[1]),
        decision_accuracy=correct / n, decision_accuracy_ci=acc_ci,
        candidate_accuracy=cand_correct / n, candidate_accuracy_ci=cand_ci, equivalence=equivalence,
        entropy_nats=float(e.mean()), entropy_nats_ci=ci(e),
        candidate_entropy_nats=float(ce.mean()), candidate_entropy_nats_ci=ci(ce),
        candidate_entropy_frac=float(fr.mean()), candidate_entropy_frac_ci=ci(fr),
        mass_outside_candidates=float(out_.mean()), mass_outside_candidates_ci=ci(out_),
        information_nats=float(inf.mean()), information_nats_ci=info_ci,
        indecipherable=outcome == "indecipherable", outcome=outcome, candidate_correct=cand_correct,
        information_decision_lo=info_decision_lo,
        goal_dependence=goal_dependence.to_dict() if goal_dependence is not None else None,
        preference=_preference(cand_logq.argmax(-1), batch),
        per_example_candidate_entropy_frac=fr.tolist(), per_example_entropy_nats=e.tolist(),
        thresholds={"equivalence_band": EQUIVALENCE_BAND, "equivalence_alpha": EQUIVALENCE_ALPHA,
                    "information_fraction": INFO_FRACTION, "candidate_mass_min": CANDIDATE_MASS_MIN,
                    "family_alpha": FAMILY_ALPHA},
    )


register_analysis(AnalysisSpec(
    name="entropy", title="First decision token", order=20,
    measure=lambda ctx: measure_entropy(ctx.model, ctx.objective, ctx.batch, batch_size=ctx.batch_size, seed=ctx.seed,
                                        progress=ctx.progress, forced_logp=ctx.forced_logprobs()),
    command="entropy", command_help="first-token entropy vs uniform, information over uniform, indecipherable verdict",
    captions={
        'decision_entropy_histogram': 'Per-graph entropy of the decision token, renormalised over the d candidates, as a fraction of log d. Look for: a pile at 1 = a uniform guess (indecipherable); a pile at 0 = a decision.',
        'goal_dependence': "Per pair: the change of the candidate log-odds at the decision position when only the goal's place moves (goal swap; arm rewire: same tokens and goal label, reached through another first node). Look for: a pile at 0 = the decision ignores the goal; far from 0 = it follows the goal.",
    },
))
