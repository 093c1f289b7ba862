"""Each answer's measured false-answer rate, as the report states it beside the answer.

`error_rates.json` (beside this file) is written by `analyses/calibration.py` with docs/calibration.md:
for each question, model and number of graphs, how often each answer was given over independent
graph draws, and which answers are false on that model. `answer_rate(question, answer, n)` gives the
worst rate at which `answer` was given where it is false, at the calibrated n nearest to n (the
table row's anchor with it), or None where no calibrated model makes that answer false ("inconclusive"
claims nothing; a question not calibrated). Reads a file this package ships, never a user's.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

RATES_FILE = Path(__file__).with_name("error_rates.json")
TABLE = "docs/calibration.md"


def rate_ci(k: int, n: int) -> list[float]:
    """Exact 95% interval of a rate of k in n draws (scipy.stats.binomtest, Clopper-Pearson)."""
    from scipy import stats

    if n == 0:
        return [float("nan"), float("nan")]
    ci = stats.binomtest(int(k), int(n)).proportion_ci(method="exact")
    return [float(ci.low), float(ci.high)]


@lru_cache(maxsize=1)
def _rows() -> tuple:
    if not RATES_FILE.is_file():
        return ()
    doc = json.loads(RATES_FILE.read_text())
    return tuple(doc.get("rows", ()))


def answer_rate(question: str, answer: str, n: int) -> dict | None:
    """{"rate", "ci", "n", "draws", "model", "models", "table"}: the worst measured rate of `answer` to
    `question` among the calibrated models on which it is false, at the calibrated n nearest to `n`
    (ties: the smaller); None where no calibrated model makes `answer` false."""
    rows = [r for r in _rows() if r["question"] == question and answer in r["false_answers"]]
    if not rows:
        return None
    ns = sorted({r["n_graphs"] for r in rows})
    near = min(ns, key=lambda m: (abs(m - n), m))
    rows = [r for r in rows if r["n_graphs"] == near]
    worst = max(rows, key=lambda r: (r["counts"].get(answer, 0) / r["draws"], -r["draws"]))
    k = worst["counts"].get(answer, 0)
    return {"rate": k / worst["draws"], "ci": rate_ci(k, worst["draws"]), "n": near, "draws": worst["draws"],
            "model": worst["model"], "models": len(rows), "table": f"{TABLE}#{question}"}


def rate_text(rate: dict | None, answer: str) -> str:
    """One line for the page and the terminal."""
    if rate is None:
        return f"no calibrated model makes '{answer}' false" if answer not in ("inconclusive", "not applicable") else ""
    return (f"'{answer}' was given falsely in {100 * rate['rate']:.1f}% [{100 * rate['ci'][0]:.1f}, {100 * rate['ci'][1]:.1f}] "
            f"of {rate['draws']} graph draws at n = {rate['n']} (worst of {rate['models']} calibrated models where it is "
            f"false: {rate['model']}; {rate['table']})")


def attach(verdicts: dict, n: int) -> dict:
    """Each verdict with its answer's measured false-answer rate (`error_rate`, None where none is measured)."""
    for key, v in verdicts.items():
        v["error_rate"] = answer_rate(key, v["answer"], n)
    return verdicts
