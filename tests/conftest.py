import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # `from helpers import ...`

# The test models are tiny: one thread is as fast as two, and it keeps the suite's speed steady
# on a shared 2-core machine (oversubscribed intra-op threads slowed it several-fold in a trial).
torch.set_num_threads(1)


import pytest  # noqa: E402

# The longest single fixture (one report over every shipped checkpoint) goes first, then the other
# end-to-end modules (marked slow): with several workers (pytest-xdist, `-n auto --dist loadfile`
# in pyproject.toml) a long module that started last would run alone at the end.
FIRST = "test_verdict_matrix.py"


# The tiers, by folder (each test gets its folder's marker: `pytest -m unit`, or `pytest tests/unit`):
# unit — one module's functions on tiny inputs (the folder mirrors the package);
# contract — what users and contributors rely on: file formats, one-line errors, the CLI, the
#   registries, the layering, report.json's schema and the page;
# end_to_end — shipped checkpoints, killed-and-resumed runs, sweeps, the calibration and the notebooks.
TIERS = {"unit": "unit", "contracts": "contract", "end_to_end": "end_to_end"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = TIERS.get(item.path.parent.name)
        if tier:
            item.add_marker(tier)
    items.sort(key=lambda item: (item.path.name != FIRST, item.get_closest_marker("slow") is None))


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    """One tiny teacher-forced run (helpers.TINY_TRAIN_ARGS), trained once for the session: the CLI
    and bad-input tests read it (tests that damage a checkpoint copy it first)."""
    from hansprobe.cli import main

    from helpers import TINY_TRAIN_ARGS

    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main([*TINY_TRAIN_ARGS, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """Four tiny runs (teacher forcing with a snapshot, reverse, teacherless, multi-token), trained
    once for the whole session: the report and page tests read them (four: the page is checked
    with four columns)."""
    from hansprobe.cli import main

    from helpers import TINY_TRAIN_ARGS

    root = tmp_path_factory.mktemp("report")
    out = {}
    for objective, extra in (("teacher-forcing", ["--snapshot-at", "3"]), ("reverse", []), ("teacherless", []),
                             ("multi-token", ["--extra-heads", "2"])):
        assert main([*TINY_TRAIN_ARGS, *extra, "--objective", objective, "--out", str(root / objective)]) == 0
        out[objective] = root / objective
    return out


@pytest.fixture(scope="session")
def report(runs, tmp_path_factory):
    """One report over `runs` with helpers.TINY_REPORT: (its directory, report.json's content)."""
    from hansprobe.report import write_report

    from helpers import TINY_REPORT

    out = tmp_path_factory.mktemp("out")
    doc = write_report(out, list(runs.values()), TINY_REPORT)
    return out, doc
