"""Inference-time search: can a better decoder recover the decision that greedy decoding misses?

The argument under study says no: when q(r1 | p) carries no information about the goal, no amount of
search over q finds the goal's arm more often than a guesser would. This analysis decodes the
mechanism graphs with greedy decoding, beam search (widths 2, d and 2d, ranked by sequence
log-likelihood), temperature sampling (T = 0.7 and 1.0) with a majority vote over k samples,
likelihood-ranked best-of-k, and oracle-verified pass@k (a sample counts when it is right: the
upper bound of any verifier). Each row is compared with a guesser uniform over the d candidates given
the same budget: 1/d for one answer, 1 - (1 - 1/d)^k for k verified tries.

A row's `accuracy` is the decision's: the chosen answer's decision token is right (pass@k: at least
one of the k samples' is). `exact_match` beside it asks the whole path (pass@k: at least one sample
is the true path, the issue's oracle). `beats_uniform` is true only when the decision accuracy's
exact lower bound at the family-wise level lies above the guesser's: the strategies share
FAMILY_ALPHA by Bonferroni (docs/decisions.md 59), so the answer "yes" is wrong at most that often
on a model whose decision ignores the goal, whichever strategy would have said it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from scipy import stats

from hansprobe.mechanics.forward import chunks
from hansprobe.mechanics.results import Result
from hansprobe.measurements.goal_dependence import FAMILY_ALPHA
from hansprobe.mechanics.results import ci_text
from hansprobe.measurements.registry import AnalysisSpec, register_analysis
from hansprobe.objectives import Objective
from hansprobe.search import beam_search, majority, most_likely, sample
from hansprobe.tasks.base import Batch

TEMPERATURES = (0.7, 1.0)
VOTES = (1, 4, 16)  # samples per majority vote
BEST_OF = (4, 16)  # samples ranked by likelihood
PASS_AT = (1, 2, 4, 8)  # oracle-verified tries (drawn at T = 1)
# Decoded answers held at once (graphs x samples or beams) per graph of --batch-size: a row's forward
# costs what a graph's does, and 4 rows per graph keep the default batch (1000) near the 4,096 rows
# decoding held before --batch-size bounded it (a text model's full-vocabulary logits made 800 rows
# of a 124M model 10 GiB: docs/benchmarks.md).
ROWS_PER_GRAPH = 4


@dataclass
class InferenceResult(Result):
    objective: str
    n_graphs: int
    degree: int
    family_alpha: float
    ci_level: float  # the level of every accuracy_ci: 1 - 2 * family_alpha / len(rows) (two-sided exact)
    rows: list[dict] = field(default_factory=list)  # strategy, family, k, temperature, width, accuracy(+_ci), exact_match(+_ci), uniform_accuracy, beats_uniform, p_value
    seed: int = 0

    def summary(self) -> dict:
        return self.to_dict()

    def figures(self) -> dict:
        import plotly.graph_objects as go

        passes = [r for r in self.rows if r["family"] == "pass@k"]
        fig = go.Figure()
        ks = [r["k"] for r in passes]
        fig.add_scatter(x=ks, y=[r["accuracy"] for r in passes], mode="lines+markers", name="pass@k (decision; oracle-verified)",
                        error_y=dict(type="data", symmetric=False,
                                     array=[r["accuracy_ci"][1] - r["accuracy"] for r in passes],
                                     arrayminus=[r["accuracy"] - r["accuracy_ci"][0] for r in passes]))
        fig.add_scatter(x=ks, y=[r["exact_match"] for r in passes], mode="lines+markers", name="pass@k (true path)")
        fig.add_scatter(x=ks, y=[r["uniform_accuracy"] for r in passes], mode="lines", line_dash="dot",
                        name=f"uniform guesser over {self.degree} candidates")
        greedy = self.rows[0]
        fig.add_hline(y=greedy["accuracy"], line_dash="dash", annotation_text=f"greedy {greedy['accuracy']:.2f}")
        fig.update_layout(xaxis_type="log", xaxis_tickvals=ks, yaxis_range=[0, 1.05], xaxis_title="k (samples, T = 1)",
                          yaxis_title="share of graphs solved",
                          title=(f"Inference-time search ({self.objective}, {self.n_graphs} graphs; CIs at "
                                 f"{self.ci_level:.2%}, family-wise over {len(self.rows)} strategies)"))
        return {"pass_at_k": fig}

    def text(self) -> str:
        lines = ["  strategy                 decision accuracy              exact match   uniform  beats"]
        for r in self.rows:
            lines.append(f"  {r['strategy']:<24} {ci_text(r['accuracy'], r['accuracy_ci'], 3):<30} {r['exact_match']:>11.3f}"
                         f"  {r['uniform_accuracy']:>7.3f}  {'yes' if r['beats_uniform'] else 'no'}")
        return "\n".join(lines + [f"  CIs exact at {self.ci_level:.2%} (family-wise alpha {self.family_alpha} over "
                                  f"{len(self.rows)} strategies)"])


def strategies(d: int) -> list[dict]:
    """Every strategy in row order, with what it is (the row's fields): greedy, beams of widths 2, d
    and 2d, then per temperature the votes and likelihood-ranked best-of-k, then pass@k at T = 1."""
    rows = [dict(strategy="greedy", family="greedy", k=1, temperature=None, width=None)]
    rows += [dict(strategy=f"beam {w}", family="beam", k=1, temperature=None, width=w) for w in sorted({2, d, 2 * d})]
    for t in TEMPERATURES:
        rows += [dict(strategy=f"vote of {k} at T={t}", family="vote", k=k, temperature=t, width=None) for k in VOTES]
        rows += [dict(strategy=f"best of {k} at T={t}", family="best-of", k=k, temperature=t, width=None) for k in BEST_OF]
    rows += [dict(strategy=f"pass@{k}", family="pass@k", k=k, temperature=1.0, width=None) for k in PASS_AT]
    return rows


@torch.no_grad()
def decode_all(model, objective: Objective, batch: Batch, seed: int = 0, greedy: bool = True,
               batch_size: int = 1000, progress: bool | str = False) -> dict[str, torch.Tensor]:
    """strategy name -> (B, L) chosen answers, or (B, k, L) for pass@k's tries, in label order, on CPU
    (greedy decoding too unless `greedy` is False); at most ROWS_PER_GRAPH x `batch_size` rows at once
    (one graph's rows at least). `progress`: per chunk of graphs (progress.progress_bar)."""
    device = next(model.parameters()).device
    todo = [s for s in strategies(int(batch.candidates.shape[1])) if greedy or s["family"] != "greedy"]
    n = max(max(VOTES), max(BEST_OF), max(PASS_AT))
    per_graph = n * len(TEMPERATURES) + sum(s["width"] for s in todo if s["family"] == "beam")  # rows held per graph
    # every draw at once, per graph (the samples do not depend on the chunking)
    uniforms = torch.rand(len(batch), n * len(TEMPERATURES), batch.target.shape[1],
                          generator=torch.Generator().manual_seed(int(seed)))
    out: dict[str, list] = {}
    per_chunk, start = max(1, ROWS_PER_GRAPH * batch_size // per_graph), 0
    for chunk in chunks(batch, per_chunk, "search", progress):
        u, start = uniforms[start:start + len(chunk)], start + len(chunk)
        chunk = chunk.to(device)
        drawn = dict(zip(TEMPERATURES, sample(model, objective, chunk, n, TEMPERATURES, u)))
        for s in todo:
            fam, k = s["family"], s["k"]
            if fam == "greedy":
                got = objective.decode(model, chunk)
            elif fam == "beam":
                got = beam_search(model, objective, chunk, s["width"])
            elif fam == "vote":
                got = majority(drawn[s["temperature"]].tokens[:, :k])
            elif fam == "best-of":
                got = most_likely(drawn[s["temperature"]], k)
            else:  # pass@k: the first k tries
                got = drawn[s["temperature"]].tokens[:, :k]
            out.setdefault(s["strategy"], []).append(got.cpu())
    return {name: torch.cat(v) for name, v in out.items()}


def measure_inference(model, objective: Objective, batch: Batch, *, seed: int = 0,
                      greedy_ok: torch.Tensor | None = None, batch_size: int = 1000,
                      progress: bool | str = False) -> InferenceResult:
    """Every strategy's decision accuracy and exact match on `batch`, against the uniform guesser.
    greedy_ok: per graph and label, whether greedy decoding is right (B, L) bool, when the caller has
    decoded `batch` already (the report's shared pass). batch_size: graphs per forward pass (decode_all)."""
    answers = decode_all(model, objective, batch, seed, greedy=greedy_ok is None, batch_size=batch_size, progress=progress)
    labels = objective.labels(batch).cpu()  # (B, L)
    k_dec = objective.decision_index(labels.shape[1])
    if greedy_ok is not None:
        answers = {"greedy": torch.where(greedy_ok, labels, -1), **answers}  # a wrong token as -1: only rightness is read
    d = int(batch.candidates.shape[1])
    n = len(labels)
    todo = strategies(d)
    level = 1 - 2 * FAMILY_ALPHA / len(todo)
    rows = []
    for fam in todo:
        a = answers[fam["strategy"]]
        if fam["family"] == "pass@k":  # any of the k tries, (B, k, L)
            dec = (a[:, :, k_dec] == labels[:, None, k_dec]).any(1)
            exact = (a == labels[:, None]).all(-1).any(1)
            uniform = 1 - (1 - 1 / d) ** fam["k"]
        else:
            dec, exact, uniform = a[:, k_dec] == labels[:, k_dec], (a == labels).all(-1), 1 / d
        c, e = int(dec.sum()), int(exact.sum())
        test = stats.binomtest(c, n, uniform, alternative="greater")
        ci = stats.binomtest(c, n).proportion_ci(confidence_level=level, method="exact")  # two-sided: its lower end is the one-sided bound at alpha / m
        eci = stats.binomtest(e, n).proportion_ci(confidence_level=level, method="exact")
        rows.append({**fam, "accuracy": c / n, "accuracy_ci": [float(ci.low), float(ci.high)],
                     "exact_match": e / n, "exact_match_ci": [float(eci.low), float(eci.high)],
                     "uniform_accuracy": uniform, "beats_uniform": bool(ci.low > uniform), "p_value": float(test.pvalue)})
    return InferenceResult(objective=objective.name, n_graphs=n, degree=d, family_alpha=FAMILY_ALPHA, ci_level=level,
                           rows=rows, seed=seed)


def _skip(ctx) -> str | None:
    if getattr(ctx.batch, "candidates", None) is None:
        return f"{ctx.task.describe()} has no candidate set to search over"
    return None


register_analysis(AnalysisSpec(
    name="inference", title="Inference-time search", order=22, skip=_skip,
    measure=lambda ctx: measure_inference(ctx.model, ctx.objective, ctx.mechanism_batch, seed=ctx.seed,
                                          greedy_ok=ctx.correctness()[1][:len(ctx.mechanism_batch)],
                                          batch_size=ctx.batch_size, progress=ctx.progress),
    captions={
        "pass_at_k": "Share of graphs where at least one of k samples (T = 1) has the right decision (and is the true "
                     "path), beside a guesser uniform over the d candidates with k tries. Look for: a model whose "
                     "decision ignores the goal follows the uniform curve, so no verifier could do better than "
                     "guessing; a planner is at 1 from k = 1.",
    },
))
