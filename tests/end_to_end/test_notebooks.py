"""The notebooks in analyses/ run end to end (nbclient) on small settings: HANSPROBE_NB_GRAPHS=60."""

import nbformat
import pytest
from nbclient import NotebookClient
from helpers import REPO

pytestmark = pytest.mark.slow  # the fast tier (pytest -m 'not slow') leaves these out: end-to-end runs

ANALYSES = REPO / "analyses"
NOTEBOOKS = sorted(ANALYSES.glob("*.ipynb"))


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"walkthrough_heads_probes_patching.ipynb", "compare_objectives.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_end_to_end(path, monkeypatch):
    if not (ANALYSES.parent / "checkpoints" / "pathstar-d2-l5-n50-teacher-forcing").is_dir():
        pytest.skip("the notebooks read the shipped checkpoints")
    monkeypatch.setenv("HANSPROBE_NB_GRAPHS", "60")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ANALYSES)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert sum(1 for c in nb.cells if c.cell_type == "code" and c.get("outputs")) >= 3  # it printed / drew things
