import json

import numpy as np
import pytest
import torch
from sklearn.model_selection import KFold, cross_val_predict

from hansprobe.measurements.probes import make_probe, measure_probes, probe_accuracy
from hansprobe.cli import main
from hansprobe.errors import ConfigError
from hansprobe.objectives import get_objective
from hansprobe.train import train

from helpers import tiny_model, tiny_model_cfg, tiny_task, tiny_train_cfg


def test_probe_recovers_a_planted_linear_signal_and_stays_at_chance_on_noise():
    rng = np.random.default_rng(0)
    n, d = 600, 32
    y = rng.integers(0, 3, n)
    X = rng.standard_normal((n, d))
    X[:, 5] += 3.0 * (y == 1) - 3.0 * (y == 2)  # the label lives along two axes
    X[:, 9] += 3.0 * (y == 0)
    groups = np.arange(n)
    assert probe_accuracy(X, y, groups).mean() > 0.9
    noise = rng.standard_normal((n, d))
    acc = probe_accuracy(noise, y, groups).mean()
    assert abs(acc - 1 / 3) < 0.08


def test_identity_labels_are_scored_among_the_candidates():
    rng = np.random.default_rng(1)
    n, n_ids = 800, 20
    candidates = np.stack([rng.choice(n_ids, 2, replace=False) for _ in range(n)])
    pick = rng.integers(0, 2, n)
    y = candidates[np.arange(n), pick]
    X = rng.standard_normal((n, 40))
    X[np.arange(n), y] += 4.0  # the id is one-hot readable
    assert probe_accuracy(X, y, np.arange(n), candidates).mean() > 0.9
    # on noise, picking among 2 candidates is right half the time (not 1/20)
    assert abs(probe_accuracy(rng.standard_normal((n, 40)), y, np.arange(n), candidates).mean() - 0.5) < 0.07


def test_folds_grouped_by_graph_prevent_leakage():
    """Several rows per graph share a graph fingerprint and the graph's random label: naive shuffled
    folds memorise the fingerprint, grouped folds cannot."""
    rng = np.random.default_rng(2)
    n_graphs, rows = 150, 6
    fingerprint = rng.standard_normal((n_graphs, 256)) * 3
    label = rng.integers(0, 2, n_graphs)
    groups = np.repeat(np.arange(n_graphs), rows)
    X = fingerprint[groups] + 0.1 * rng.standard_normal((n_graphs * rows, 256))
    y = label[groups]
    naive = (cross_val_predict(make_probe(), X, y, cv=KFold(5, shuffle=True, random_state=0)) == y).mean()
    grouped = probe_accuracy(X, y, groups).mean()
    assert naive > 0.9  # the leak is real ...
    assert abs(grouped - 0.5) < 0.1  # ... and grouping closes it


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import hansprobe

    out = tmp_path_factory.mktemp("probe") / "run"
    train(out, tiny_task(), "teacher-forcing", tiny_model_cfg(), tiny_train_cfg(steps=40, eval_every=40, checkpoint_every=40),
          seed=0, progress=False)
    return out, hansprobe.load(out)


def test_measure_probes_end_to_end(trained):
    _, (model, task, obj) = trained
    b = task.generate(120, 1234)
    r = measure_probes(model, obj, b, "goal_arm", layers=[0, 1], positions=["goal", "=", "a0"], batch_size=50,
                       untrained_model=tiny_model(task), n_splits=3)
    assert r.layers == [0, 1] and r.position_labels == ["goal", "=", "a0"]
    acc, sel, shf = np.array(r.accuracy), np.array(r.selectivity), np.array(r.control_shuffle)
    assert acc.shape == (2, 3) and np.allclose(sel, acc - shf)
    # the '=' token is the same in every graph: the H&L control label there is constant, trivially 1.0
    assert np.allclose(np.array(r.control_token)[:, 1], 1.0)
    assert r.best and r.best["position_label"] in ("goal", "=") and r.causal is not None
    c = r.causal
    assert {"steer_probe", "steer_random", "ablate_probe", "ablate_random"} <= set(c) and c["steering_norm"] > 0
    assert set(r.figures()) == {"probe_heatmaps", "probe_by_layer", "steering"}  # the causal follow-up draws too
    json.loads(r.to_json())


def test_next_node_and_edge_targets_are_defined_where_they_mean_something(trained):
    _, (model, task, obj) = trained
    b = task.generate(60, 5)
    r = measure_probes(model, obj, b, "next_node", layers=[1], positions=[0, "=", "a1"], n_splits=3, causal=False)
    acc = r.to_dict()["accuracy"]  # undefined cells are NaN in Python, null in JSON
    assert acc[0][0] is None and acc[0][1] is not None  # prompt position 0 predicts no answer token
    r = measure_probes(model, obj, b, "edge_on_goal_path", layers=[1], positions=[0, 1, 2, "="], n_splits=3, causal=False)
    acc = r.to_dict()["accuracy"]
    assert acc[0][3] is None and all(a is not None for a in acc[0][:3])


def test_bad_probe_requests(trained):
    _, (model, task, obj) = trained
    b = task.generate(20, 0)
    with pytest.raises(ConfigError, match="unknown probe target"):
        measure_probes(model, obj, b, "plan")
    with pytest.raises(ConfigError, match="layer 5 does not exist"):
        measure_probes(model, obj, b, layers=[5])
    with pytest.raises(ConfigError, match="unknown position"):
        measure_probes(model, obj, b, positions=["middle"])


def test_probe_cli_json(trained, capsys, tmp_path):
    out, _ = trained
    assert main(["probe", str(out), "-n", "60", "--layers", "1", "--positions", "goal,=", "--json", "--out",
                 str(tmp_path / "p.json")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["target"] == "goal_arm" and res["n_graphs"] == 60 and len(res["accuracy"][0]) == 2
    assert json.loads((tmp_path / "p.json").read_text())["accuracy"] == res["accuracy"]
    assert main(["probe", str(out), "-n", "60", "--positions", "99"]) == 2


def test_the_best_cells_are_chosen_on_the_selection_half_and_include_the_decision_position():
    """Issue 13, defect 7: the old search skipped a0 and picked the cell by its own reported
    accuracy - shuffled (biased high). Here the evaluation grid and the selection grid disagree: the
    choice must follow the selection grid, and the reported figures the evaluation grid."""
    from hansprobe.mechanics.activations import Activations
    from hansprobe.measurements.probes import _best_cells, split_halves
    from hansprobe.objectives import get_objective

    sel_idx, ev_idx = split_halves(101, seed=3)
    assert len(sel_idx) == 50 and len(ev_idx) == 51 and not set(sel_idx) & set(ev_idx)
    assert sorted([*sel_idx, *ev_idx]) == list(range(101))

    task, obj = tiny_task(2, 4, 20), get_objective("teacher-forcing")  # prefix 21 tokens: start 18, goal 19, = 20, a0 21
    b = task.generate(4, 0)
    positions, layers = [18, 19, 20, 21], [0, 1, 2]  # 2-layer model: layer 2 is the last block's output
    acts = Activations(np.zeros((4, 3, 4, 8)), layers, positions, np.arange(4))
    pick = np.full((3, 4), 0.0)
    pick[1, 0] = 0.3  # the selection half prefers 'start' after block 0 ...
    pick[0, 3] = 0.2  # ... and, at the decision position, the embeddings
    pick[2, 3] = 0.9  # the last block's output at a0 is the answer itself: never a candidate
    acc = np.full((3, 4), 0.5)
    acc[0, 1] = 0.95  # ... while the evaluation half looks best at 'goal' (must not drive the choice)
    grids = {"accuracy": acc, "lo": acc - 0.05, "hi": acc + 0.05, "shuffle": np.full((3, 4), 0.5),
             "untrained": np.full((3, 4), 0.5), "selectivity": acc - 0.5}
    before, at = _best_cells(pick, grids, acts, b, ["start", "goal", "=", "a0"], obj, n_layers=2)
    assert (before["layer"], before["position_label"]) == (1, "start") and before["accuracy"] == 0.5
    assert (at["layer"], at["position_label"]) == (0, "a0") and at["cells_searched"] == 2
    assert before["cells_searched"] == 6  # start, goal, = at layers 0 and 1


def test_measure_probes_reports_both_cells_on_held_out_graphs(trained):
    _, (model, task, obj) = trained
    b = task.generate(120, 1234)
    r = measure_probes(model, obj, b, "goal_arm", batch_size=50, untrained_model=tiny_model(task), n_splits=3)
    assert r.n_eval == 60 and r.best["position_label"] in ("start", "goal", "=")
    assert r.best_at_decision["position_label"] == "a0" and r.best_at_decision["layer"] < model.cfg.n_layers
    i, j = r.layers.index(r.best["layer"]), r.positions.index(r.best["position"])
    assert r.best["accuracy"] == r.accuracy[i][j] and r.best["control_shuffle"] == r.control_shuffle[i][j]


def test_controls_at_the_best_cells_equal_the_full_grid_there(trained):
    """The report fits the token control and the untrained model only at the two best cells; there they
    are the same numbers as the full grid's, and every other cell is left empty."""
    _, (model, task, obj) = trained
    b = task.generate(120, 1234)
    kw = dict(layers=[0, 1], positions=["goal", "=", "a0"], batch_size=60, untrained_model=tiny_model(task), n_splits=3,
              causal=False)
    full, best = measure_probes(model, obj, b, **kw), measure_probes(model, obj, b, controls_at="best", **kw)
    assert best.best == full.best and best.best_at_decision == full.best_at_decision
    cells = {(c["layer"], c["position"]) for c in (best.best, best.best_at_decision) if c}
    for li, layer in enumerate(best.layers):
        for j, pos in enumerate(best.positions):
            if (layer, pos) in cells:
                assert best.untrained[li][j] == full.untrained[li][j] and best.control_token[li][j] == full.control_token[li][j]
            else:
                assert np.isnan(best.untrained[li][j]) and np.isnan(best.control_token[li][j])  # null in the JSON
    assert best.accuracy == full.accuracy and best.selectivity == full.selectivity
