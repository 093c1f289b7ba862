"""First-token entropy: is q(r_1 | p) informative about the answer, or uniform over the candidates?

At the decision position (the objective's own input, so for teacher forcing the true start token
r_0 is in place) we take the model's distribution over the full vocabulary, renormalise it over the
d candidate children of the start, and report entropy, mass outside the candidates and the
information over uniform, each with a 95% CI, plus the *indecipherable* verdict of design.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats

from hansprobe.analyses.base import Result, chunks, wilson_ci
from hansprobe.objectives import Objective
from hansprobe.tasks.base import Batch

CHANCE_BAND = 0.05  # design.md: accuracy CI within +-0.05 of 1/d counts as chance
INFO_FRACTION = 0.05  # design.md: information CI upper end <= 0.05 log d counts as none


def mean_ci(values: np.ndarray, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap CI of the mean (scipy.stats.bootstrap, BCa), seeded for reproducibility."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or np.ptp(values) == 0:
        m = float(values.mean()) if len(values) else float("nan")
        return (m, m)
    # batch bounds memory: BCa's jackknife would otherwise hold an (n, n-1) array (3 GB at n = 20,000);
    # the intervals are the same with or without it.
    res = stats.bootstrap((values,), np.mean, confidence_level=level, n_resamples=2000, batch=200,
                          vectorized=True, random_state=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


@dataclass
class EntropyResult(Result):
    objective: str
    n_graphs: int
    degree: int
    chance: float
    log_d: float
    decision_index: int
    decision_accuracy: float  # argmax over the full vocabulary == decision node
    decision_accuracy_ci: tuple[float, float]
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
    indecipherable: bool
    verdict: str
    preference: dict = field(default_factory=dict)  # what a non-uniform guess follows: rate, CI
    per_example_candidate_entropy_frac: list[float] = field(default_factory=list, repr=False)
    per_example_entropy_nats: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        """The figures without the per-example lists (what the CLI prints as JSON)."""
        d = self.to_dict()
        d.pop("per_example_candidate_entropy_frac")
        d.pop("per_example_entropy_nats")
        return d

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
        return {"decision_entropy_histogram": fig}


def _verdict(acc_ci, info_ci, chance, log_d) -> tuple[bool, str]:
    at_chance = acc_ci[0] <= chance <= acc_ci[1] or (chance - CHANCE_BAND <= acc_ci[0] and acc_ci[1] <= chance + CHANCE_BAND)
    no_info = info_ci[1] <= INFO_FRACTION * log_d
    text = (f"decision accuracy CI [{acc_ci[0]:.3f}, {acc_ci[1]:.3f}] {'is' if at_chance else 'is not'} at chance {chance:.3f}; "
            f"information CI upper end {info_ci[1]:.3f} nats {'<=' if no_info else '>'} {INFO_FRACTION} log d = {INFO_FRACTION * log_d:.3f}")
    return at_chance and no_info, text


@torch.no_grad()
def decision_distribution(model, objective: Objective, batch: Batch, batch_size: int = 1000,
                          progress: bool = False) -> torch.Tensor:
    """log q(. | input) at the decision position for every graph, batched: (B, V) float32 on CPU."""
    device = next(model.parameters()).device
    k = objective.decision_index(batch.target.shape[1])
    out = [objective.forced_logits(model, chunk.to(device))[:, k].log_softmax(-1).cpu() for chunk in chunks(batch, batch_size, "entropy", progress)]
    return torch.cat(out)


def _preference(top: torch.Tensor, batch: Batch) -> dict:
    """Rates at which the model's top candidate is the lowest label, the highest label, the one
    whose edge is listed first or last in the prompt (each at chance 1/d if the guess ignores it)."""
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
        out[name] = {"rate": k / n, "ci": [lo, hi], "follows": bool(lo > 1 / d or hi < 1 / d)}
    return out


def measure_entropy(model, objective: Objective, batch: Batch, batch_size: int = 1000, seed: int = 0,
                    progress: bool = False) -> EntropyResult:
    """Decision-token entropy and information over uniform; `seed` seeds the bootstrap CIs."""
    return entropy_from_logprobs(decision_distribution(model, objective, batch, batch_size, progress), objective, batch, seed)


def entropy_from_logprobs(logp: torch.Tensor, objective: Objective, batch: Batch, seed: int = 0) -> EntropyResult:
    """The entropy result from log q(. | input) at the decision position, (B, V) on CPU."""
    n, d = batch.candidates.shape
    log_d = math.log(d) if d > 1 else 0.0
    p = logp.exp()
    entropy = -(p * logp).sum(-1)  # (B,)
    cand_logp = logp.gather(1, batch.candidates)  # (B, D)
    cand_logq = cand_logp - cand_logp.logsumexp(-1, keepdim=True)  # renormalised over candidates
    cand_entropy = -(cand_logq.exp() * cand_logq).sum(-1)
    outside = (1 - cand_logp.exp().sum(-1)).clamp_min(0)
    rows = torch.arange(n)
    info = cand_logq[rows, batch.goal_arm] + log_d
    correct = int((logp.argmax(-1) == batch.candidates[rows, batch.goal_arm]).sum())
    acc_ci = wilson_ci(correct, n)
    frac = cand_entropy / log_d if d > 1 else torch.zeros_like(cand_entropy)
    e, ce, fr, out_, inf = (t.double().numpy() for t in (entropy, cand_entropy, frac, outside, info))
    info_ci = mean_ci(inf, seed)
    indecipherable, verdict = _verdict(acc_ci, info_ci, 1 / d, log_d)
    return EntropyResult(
        objective=objective.name, n_graphs=n, degree=d, chance=1 / d, log_d=log_d,
        decision_index=objective.decision_index(batch.target.shape[1]),
        decision_accuracy=correct / n, decision_accuracy_ci=acc_ci,
        entropy_nats=float(e.mean()), entropy_nats_ci=mean_ci(e, seed),
        candidate_entropy_nats=float(ce.mean()), candidate_entropy_nats_ci=mean_ci(ce, seed),
        candidate_entropy_frac=float(fr.mean()), candidate_entropy_frac_ci=mean_ci(fr, seed),
        mass_outside_candidates=float(out_.mean()), mass_outside_candidates_ci=mean_ci(out_, seed),
        information_nats=float(inf.mean()), information_nats_ci=info_ci,
        indecipherable=indecipherable, verdict=verdict,
        preference=_preference(cand_logq.argmax(-1), batch),
        per_example_candidate_entropy_frac=fr.tolist(), per_example_entropy_nats=e.tolist(),
    )
