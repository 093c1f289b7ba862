"""The one shape of every measurement: model + task batch in, a Result out that serialises to JSON
and draws its plotly figures (the report and the CLI only compose these); and the intervals every
measurement reports (scipy.stats)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from hansprobe.storage import jsonable


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


@dataclass
class Result:
    """Base class: subclasses are dataclasses of plain numbers/lists and implement `figures()`.
    Sentences about a result are rendered from its figures (`prose()`), never written by the
    measuring code: `to_dict` adds them under their keys, so the JSON carries them too."""

    def to_dict(self) -> dict:
        return jsonable({**asdict(self), **self.prose()})

    def prose(self) -> dict[str, str]:
        """key -> a sentence rendered from this result's fields (none by default)."""
        return {}

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


def ci_text(v, ci, digits=None) -> str:
    """`v [lo, hi]` with as many decimals as the interval supports: the last printed digit one order
    of magnitude below its half-width (2 to 4 decimals; 3 for a degenerate interval). report.json
    keeps full precision."""
    if ci is None or None in ci:  # an interval left out (a summary measured without its description)
        return f"{v:.3f}"
    if digits is None:
        half = (ci[1] - ci[0]) / 2
        digits = 3 if not half > 0 else max(2, min(4, 1 - math.floor(math.log10(half))))
    return f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
