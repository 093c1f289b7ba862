"""The README's main command on the shipped checkpoints: its verdicts must match the model cards
(docs/model-cards.md, measured on 2,000 graphs by analyses/model_cards.py). Fewer graphs here (300)
to keep the suite fast; every expected answer below is stated in the cards."""
import json
from pathlib import Path

import pytest

from hansprobe.cli import main

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
# name -> question -> answer, as the model cards state it
CARDS = {
    "pathstar-d2-l5-n50-teacher-forcing": {  # Clever-Hans heads L1H0-3 + follow rate 1.000; indecipherable yes;
        "clever_hans": "yes", "indecipherable": "yes",  # best probe +0.052; "no decision computation to restore"
        "plan_represented": "no", "decision_computed": "no"},
    "pathstar-d2-l5-n50-reverse": {  # child->parent heads, "not a forward Clever-Hans mechanism"; gap 47.1 nats
        "clever_hans": "no", "indecipherable": "no", "plan_represented": "no", "decision_computed": "yes"},
    "pathstar-d2-l5-n50-teacherless": {  # no head analysis (no teacher-forced inputs); decision acc. 0.18, not at chance
        "clever_hans": "not applicable", "indecipherable": "no", "plan_represented": "no", "decision_computed": "no"},
    "pathstar-d5-l5-n50-teacher-forcing": {  # Clever-Hans head L1H2 + follow rate 1.000; decision acc. 0.189, indecipherable;
        "clever_hans": "yes", "indecipherable": "yes",  # best probe +0.018 (chance 0.2); no decision computation to restore
        "plan_represented": "no", "decision_computed": "no"},
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    present = [CHECKPOINTS / n for n in CARDS if (CHECKPOINTS / n / "config.json").is_file()]
    if not present:
        pytest.skip("no shipped checkpoints in checkpoints/")
    out = tmp_path_factory.mktemp("shipped")
    assert main(["report", *map(str, present), "-n", "300", "--patch-pairs", "100", "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("name", list(CARDS))
def test_report_verdicts_match_the_model_cards(report, name):
    by_name = {c["name"]: c for c in report["checkpoints"]}
    if name not in by_name:
        pytest.skip(f"{name} is not shipped in this clone")
    got = {k: v["answer"] for k, v in by_name[name]["verdicts"].items()}
    assert got == CARDS[name], {k: by_name[name]["verdicts"][k]["evidence"] for k in got if got[k] != CARDS[name][k]}
