"""The one shape of every analysis: model + task batch in, a Result out that serialises to JSON
and draws its plotly figures. The report and the CLI only compose these."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import torch

from hansprobe.progress import progress_iter  # noqa: F401  (the analyses import it from here)
from scipy import stats

from hansprobe.storage import jsonable


def chunks(batch, size: int, desc: str, progress: bool | str = False):
    """Consecutive sub-batches for batched forward passes, with progress when asked (progress_iter)."""
    return progress_iter(batch.split(size), -(-len(batch) // size), desc, progress)


@torch.no_grad()
def label_logprobs(model, objective, batch, batch_size: int = 1000, desc: str = "forced pass",
                   progress: bool | str = False) -> torch.Tensor:
    """log q(. | forced input) at every label position for every graph, batched: (B, L, V) on CPU."""
    device = next(model.parameters()).device
    return torch.cat([objective.forced_logits(model, c.to(device)).log_softmax(-1).cpu()
                      for c in chunks(batch, batch_size, desc, progress)])


@torch.no_grad()
def decision_distribution(model, objective, batch, batch_size: int = 1000,
                          progress: bool = False) -> torch.Tensor:
    """log q(. | input) at the decision position for every graph, batched: (B, V) float32 on CPU."""
    from hansprobe.fused import logits_at
    from hansprobe.objectives import autocast

    device = next(model.parameters()).device
    out = []
    for chunk in chunks(batch, batch_size, "entropy", progress):
        chunk = chunk.to(device)
        at = objective.label_slice(chunk).start + objective.decision_index(chunk.target.shape[1])  # the decision's position
        with autocast(device):  # a causal model: the input is cut after the one position read
            logits = logits_at(model, objective.inputs(chunk)[:, :at + 1], slice(at, at + 1))[:, 0].float()
        out.append(logits.log_softmax(-1).cpu())
    return torch.cat(out)


def wilson_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (scipy.stats.binomtest)."""
    if n == 0:
        return (float("nan"), float("nan"))
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return (float(ci.low), float(ci.high))


def t_ci(values, axis: int = 0, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Student-t interval of the mean along `axis` (scipy.stats.t), for many means at once."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    mean = values.mean(axis)
    if n < 2:
        return mean, mean
    sem = stats.sem(values, axis=axis)
    half = np.where(sem > 0, sem * stats.t.ppf(0.5 + level / 2, n - 1), 0.0)
    return mean - half, mean + half


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


_jsonable = jsonable  # the analyses' name for it; defined below them, in storage


@dataclass
class Result:
    """Base class: subclasses are dataclasses of plain numbers/lists and implement `figures()`."""

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, **kw)

    def figures(self) -> dict:
        """Named plotly figures (`plotly.graph_objects.Figure`)."""
        return {}

    def text(self) -> str:
        """The result for a terminal, as its command prints it below a one-line header (the
        checkpoint, objective, task). Default: the summary as indented JSON."""
        return json.dumps(self.summary() if hasattr(self, "summary") else self.to_dict(), sort_keys=True, indent=1)


def fmt_ci(v, ci) -> str:
    """`0.503 [0.481, 0.525]`: a value with its interval, three decimals (terminal output)."""
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
