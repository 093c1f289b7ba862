"""The calibration harness (issue 36 part 0): answers counted over independent graph draws, with exact
intervals, from the same functions the report decides with; the rates the report quotes; and a
reduced run of analyses/calibration.py (slow tier) that holds the family-wise goal on the nulls."""
import json
import re
import subprocess
import sys

import pytest
import torch

from hansprobe import error_rates
from hansprobe.measurements.entropy import measure_entropy
from hansprobe.measurements.goal_dependence import FAMILY_ALPHA
from hansprobe.calibrate import AnswerRates, decision_draws, decision_verdicts, draw_seed
from hansprobe.constructed import CONSTRUCTED
from hansprobe.error_rates import rate_ci
from hansprobe.objectives import get_objective
from helpers import REPO

ROOT = REPO
TF = get_objective("teacher-forcing")


def test_answers_are_counted_with_exact_intervals():
    r = AnswerRates.from_answers("m", "indecipherable", 1000, ["yes"] * 97 + ["no"] * 3, ("no", "not learned"))
    assert r.counts == {"yes": 97, "no": 3} and r.draws == 100 and r.false_count == 3
    assert r.false_rate == pytest.approx(0.03) and r.false_rate_ci == rate_ci(3, 100)
    lo, hi = rate_ci(0, 500)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 500), rel=1e-6)  # Clopper-Pearson's zero-count bound
    assert len({draw_seed(0, k) for k in range(1000)}) == 1000 and draw_seed(0, 3) != draw_seed(1, 3)


def test_the_first_n_rows_of_one_draw_are_the_measurement_on_the_first_n_graphs():
    """The harness reads several n from one set of passes; the answer at n must be the entropy
    analysis's own on those n graphs, and leaving out the descriptive intervals changes no answer."""
    c = CONSTRUCTED["null-edge-noise"]
    model, task = c.model(TF), c.task()
    batch = task.generate(600, 9)
    got = decision_verdicts(model, TF, batch, 9, [200, 600])
    for n in (200, 600):
        e = measure_entropy(model, TF, batch[:n], seed=9)
        assert got[n]["indecipherable"]["answer"] == {"indecipherable": "yes", "decided": "no"}.get(e.outcome, e.outcome)
        assert got[n]["indecipherable"]["values"]["candidate_accuracy"] == e.candidate_accuracy


def test_draws_are_independent_and_reproducible():
    c = CONSTRUCTED["null-uniform"]
    a = decision_draws(c.model(TF), TF, c.task(), (100, 200), draws=6, seed=3)
    b = decision_draws(c.model(TF), TF, c.task(), (100, 200), draws=6, seed=3)
    assert set(a) == {(n, q) for n in (100, 200) for q in ("indecipherable", "decision_computed")}
    accs = [v["values"]["candidate_accuracy"] for v in a[(200, "indecipherable")]]
    assert accs == [v["values"]["candidate_accuracy"] for v in b[(200, "indecipherable")]]
    assert len(set(accs)) > 1  # fresh graphs each draw


def test_the_report_quotes_the_worst_measured_rate_where_the_answer_is_false(monkeypatch):
    rows = ({"question": "indecipherable", "model": "a", "n_graphs": 1000, "draws": 500, "counts": {"yes": 495, "no": 5},
             "false_answers": ["no", "not learned"]},
            {"question": "indecipherable", "model": "b", "n_graphs": 1000, "draws": 500, "counts": {"yes": 499, "no": 1},
             "false_answers": ["no", "not learned"]},
            {"question": "indecipherable", "model": "b", "n_graphs": 2000, "draws": 500, "counts": {"yes": 500},
             "false_answers": ["no", "not learned"]},
            {"question": "indecipherable", "model": "p", "n_graphs": 2000, "draws": 500, "counts": {"no": 480, "yes": 20},
             "false_answers": ["yes"]})
    monkeypatch.setattr(error_rates, "_rows", lambda: rows)
    r = error_rates.answer_rate("indecipherable", "no", 1200)  # nearest calibrated n: 1,000
    assert r["model"] == "a" and r["rate"] == pytest.approx(0.01) and r["n"] == 1000 and r["models"] == 2
    assert error_rates.answer_rate("indecipherable", "yes", 2000)["rate"] == pytest.approx(0.04)
    assert error_rates.answer_rate("indecipherable", "inconclusive", 2000) is None
    assert "docs/calibration.md#indecipherable" in error_rates.rate_text(r, "no")
    v = error_rates.attach({"indecipherable": {"answer": "no"}}, 2000)
    assert v["indecipherable"]["error_rate"]["n"] == 2000 and v["indecipherable"]["error_rate"]["rate"] == 0.0


def test_the_shipped_rates_cover_every_question_and_the_page_shows_them():
    """hansprobe/error_rates.json, written by analyses/calibration.py, ships with the package."""
    doc = json.loads(error_rates.RATES_FILE.read_text())
    questions = {r["question"] for r in doc["rows"]}
    assert {"indecipherable", "decision_computed", "clever_hans_failure", "lookup", "plan_represented"} <= questions
    assert error_rates.answer_rate("indecipherable", "no", 2000) is not None  # a false "decided" rate on the nulls
    from hansprobe.report.html import _verdict_table

    doc = {"questions": {"indecipherable": "First decision token indecipherable?"}, "rules": {},
           "checkpoints": [{"name": "m", "verdicts": {"indecipherable": error_rates.attach(
               {"indecipherable": {"answer": "no", "summary": "s", "evidence": "e"}}, 2000)["indecipherable"]}}]}
    table = _verdict_table(doc)
    assert "was given falsely in" in table and re.search(r"<summary>error \d+\.\d%</summary>", table)


@pytest.mark.slow
def test_a_reduced_calibration_holds_the_family_wise_goal_on_the_nulls(tmp_path):
    """A reduced calibration (20 draws): over every null constructed model at n = 1,000 and 2,000 the
    pooled false "decided" rate is consistent with 1% (the exact interval's lower end at or below it;
    the rule before issue 36 called such models decided in about one draw in ten), the small goal
    signals are decided in every draw, and the shipped failure answers failure yes. Then
    analyses/calibration.py end to end on one draw: the table and the rates file, written and rendered."""
    from hansprobe.calibrate import checkpoint_rates, constructed_rates

    nulls = [n for n in CONSTRUCTED if n.startswith("null")]
    rows = constructed_rates(nulls + ["signal-0.05", "signal-0.2"], (1000, 2000), draws=20, seed=1)
    null_rows = [r for r in rows if r.question == "indecipherable" and r.model in nulls]
    assert len(null_rows) == 2 * len(nulls) and all(r.draws == 20 for r in null_rows)
    k, n = sum(r.counts.get("no", 0) for r in null_rows), sum(r.draws for r in null_rows)
    assert rate_ci(k, n)[0] <= FAMILY_ALPHA, (k, n)
    assert all(r.counts.get("yes", 0) == 0 for r in rows if r.question == "decision_computed" and r.model in nulls)
    for r in rows:
        if r.model.startswith("signal") and r.question == "indecipherable" and r.n_graphs == 2000:
            assert r.counts == {"no": 20}, r
    tf = ROOT / "checkpoints" / "pathstar-d2-l5-n50-teacher-forcing"
    if (tf / "config.json").is_file():
        from hansprobe.report.settings import ReportSettings

        got = checkpoint_rates(tf, {"clever_hans_failure": "yes", "indecipherable": "yes"}, (1000,), 1,
                               ("clever_hans_failure",), 1, seed=1, settings=ReportSettings(mechanism_graphs=300))
        assert {r.question: r.counts for r in got}["clever_hans_failure"] == {"yes": 1}
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    script = [sys.executable, str(ROOT / "analyses" / "calibration.py")]
    proc = subprocess.run([*script, "--only", "constructed", "--draws", "1", "--out-json", str(out_json), "--out-md",
                           str(out_md)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(json.loads(out_json.read_text())["rows"]) == 2 * len(CONSTRUCTED) * 3
    md = out_md.read_text()
    assert "## indecipherable" in md and "| null-uniform | 2000 | 1 |" in md
    out_md.unlink()
    assert subprocess.run([*script, "--render", str(out_json), "--out-md", str(out_md)]).returncode == 0
    assert out_md.read_text() == md


def test_one_checkpoint_measured_again_keeps_every_other_row(tmp_path):
    """analyses/calibration.py --checkpoint NAME replaces that checkpoint's rows and cost only: the
    other checkpoints', the constructed models' and the search rows stay as they were."""
    import importlib.util

    name = "controls/pathstar-d2-l5-n50-untrained"
    if not (ROOT / "checkpoints" / name / "config.json").is_file():
        pytest.skip(f"checkpoints/{name} is not in this checkout")
    spec = importlib.util.spec_from_file_location("calibration_script", ROOT / "analyses" / "calibration.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out_json, out_md = tmp_path / "rates.json", tmp_path / "rates.md"
    shipped = json.loads((ROOT / "hansprobe" / "error_rates.json").read_text())
    out_json.write_text(json.dumps(shipped))
    assert script.main(["--checkpoint", name, "--checkpoint-draws", "1", "--report-draws", "0", "--ns", "50",
                        "--out-json", str(out_json), "--out-md", str(out_md)]) == 0
    after = json.loads(out_json.read_text())
    mine = lambda r: r["source"] == "checkpoint" and r["model"] == "pathstar-d2-l5-n50-untrained"  # noqa: E731
    assert [r for r in after["rows"] if not mine(r)] == [r for r in shipped["rows"] if not mine(r)]
    new = [r for r in after["rows"] if mine(r)]
    assert new and all(r["draws"] == 1 and r["n_graphs"] == 50 for r in new)
    seconds = after["meta"]["seconds"]
    assert seconds[name] != shipped["meta"]["seconds"][name] and seconds["constructed"] == shipped["meta"]["seconds"]["constructed"]
    assert seconds["pathstar-d2-l5-n50-reverse"] == shipped["meta"]["seconds"]["pathstar-d2-l5-n50-reverse"]
    assert after["meta"]["commands"][:-1] == shipped["meta"]["commands"]
    with pytest.raises(SystemExit):
        script.main(["--checkpoint", "no-such-checkpoint", "--out-json", str(out_json), "--out-md", str(out_md)])
