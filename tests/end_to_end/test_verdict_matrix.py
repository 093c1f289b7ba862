"""Every shipped checkpoint — the references and the controls with known answers — against the
expected verdicts (the table in docs/report.md, measured in docs/model-cards.md on 2,000 graphs).
Each question must be seen to give both of its answers here: the Clever-Hans failure is "yes"
exactly for the teacher-forcing failures. Fewer mechanism graphs than the cards (300) keep the
suite fast; behaviour and entropy use the cards' 2,000 graphs, which the equivalence test needs at
d = 5."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hansprobe.report import QUESTIONS
from helpers import REPO, typed_cells

CHECKPOINTS = REPO / "checkpoints"
NA, NL = "not applicable", "not learned"
BEFORE, AT = "before the answer", "at the answer position"  # where the plan question locates the decision
# name (under checkpoints/) -> answers in QUESTIONS order, from checkpoints/expected_answers.json (the calibration
# harness reads the same table: analyses/calibration.py). Why each: docs/controls.md. The plan question is "not
# applicable" on the 2-layer G(2,5) models whose decision ignores the goal (2 blocks for 3 backward hops), "no" on the
# 4-layer failures (deep enough; the decision ignores it). The reverse reference's lookup is inconclusive: its child ->
# parent lookup is spread over more heads than the lookup set may hold (decisions.md 40). The tree control has its
# own test (tests/unit/test_tree.py).
_TABLE = json.loads((CHECKPOINTS / "expected_answers.json").read_text())
EXPECTED = {name: tuple(row[k] for k in QUESTIONS) for name, row in _TABLE["expected"].items() if not name.startswith("controls/tree")}


def test_each_question_gives_more_than_one_answer_across_the_matrix():
    for j, key in enumerate(QUESTIONS):
        answers = {row[j] for row in EXPECTED.values()}
        # the plan question says where; search's "yes" is shown on a constructed model (tests/unit/test_inference.py)
        positive = {BEFORE, AT} if key == "plan_represented" else {"not needed"} if key == "search_recovers" else {"yes"}
        assert positive <= answers and "no" in answers, key
    plan = list(QUESTIONS).index("plan_represented")
    located = [n for n, row in EXPECTED.items() if row[plan] in (BEFORE, AT)]
    assert any("4layers" in n for n in located)  # a model of >= 3 layers whose plan the rule locates
    failures = [n for n, row in EXPECTED.items() if row[0] == "yes"]
    assert all("teacher-forcing" in n and "cue" not in n and "l3" not in n for n in failures)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    present = [CHECKPOINTS / n for n in EXPECTED if (CHECKPOINTS / n / "config.json").is_file()]
    if not present:
        pytest.skip("no shipped checkpoints in checkpoints/")
    # One report over all of them, measured two at a time in worker processes of one thread each
    # (report --jobs 2), so the suite's longest fixture uses both cores.
    out = tmp_path_factory.mktemp("matrix")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "hansprobe", "report", *map(str, present), "-n", "2000",
                           "--mechanism-graphs", "300", "--patch-pairs", "100", "--jobs", "2", "--out", str(out), "--json"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_verdicts_match_the_expected_table(report, name):
    by_path = {str(Path(c["path"]).relative_to(CHECKPOINTS)): c for c in report["checkpoints"]}
    if name not in by_path:
        pytest.skip(f"{name} is not shipped in this clone")
    c = by_path[name]
    got = tuple(c["verdicts"][k]["answer"] for k in QUESTIONS)
    assert got == EXPECTED[name], {k: c["verdicts"][k]["evidence"] for k, g, e in zip(QUESTIONS, got, EXPECTED[name]) if g != e}


@pytest.mark.slow
def test_the_4_layer_failure_has_its_alternatives_ruled_out_without_being_told_its_witness(report):
    """Issue 36 part 7: the README's report (no --witness) finds the multi-token witness among its
    checkpoints; learning order and training length come from the failure's own snapshots."""
    name = "pathstar-d2-l5-n50-teacher-forcing-4layers-6000steps"
    by_path = {str(Path(c["path"]).relative_to(CHECKPOINTS)): c for c in report["checkpoints"]}
    if name not in by_path or "pathstar-d2-l5-n50-multi-token-4layers-6000steps" not in by_path:
        pytest.skip("the 4-layer failure and its witness are not both shipped in this clone")
    v = by_path[name]["verdicts"]["clever_hans_failure"]
    assert v["values"]["ruled_out"] == {"learning_order": True, "capacity": True, "training_length": True}, v["evidence"]
    assert by_path[name]["analyses"]["witness"]["path"].endswith("multi-token-4layers-6000steps")
    assert all(c["verdicts"]["clever_hans_failure"].get("error_rate") is not None
               for c in report["checkpoints"] if c["verdicts"]["clever_hans_failure"]["answer"] in ("yes", "no"))


@pytest.mark.slow
def test_the_cells_the_questions_read_have_their_typed_shape_on_every_shipped_checkpoint(report):
    seen = typed_cells(report)
    assert min(seen.values()) > 0, seen  # search cells, causal checks, patching sweeps and top components all met
