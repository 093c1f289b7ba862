"""hansprobe.storage on its own: whole-or-nothing writes, the two-file journal, the lock, metrics
lines torn by a kill, safetensors only, and JSON-safe values."""
import json
import pickle

import numpy as np
import pytest
import torch

from hansprobe.errors import CheckpointError, OutputError
from hansprobe.storage import (READY, READY_MAGIC, STAGING_PREFIX, append_metrics, atomic_write_bytes, atomic_write_json, jsonable,
                               load_safetensors, publish_together, read_metrics, recover_staging, run_lock,
                               save_safetensors, truncate_metrics)


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    atomic_write_json(path, {"a": 1})

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("hansprobe.storage.os.replace", broken)
    with pytest.raises(OutputError, match="disk is full"):
        atomic_write_bytes(path, b"new")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # the temporary was removed
    with pytest.raises(OutputError, match="is a directory"):
        atomic_write_bytes(tmp_path, b"x")


def _staging(out, ready=None, **files):
    d = out / (STAGING_PREFIX + "ab" * 16)
    d.mkdir()
    for name, data in files.items():
        (d / name.replace("_", ".")).write_bytes(data)
    if ready is not None:
        (d / READY).write_text(ready)
    return d


def test_publish_together_rolls_forward_after_ready_and_back_before_it(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    publish_together(out, {"report.json": b"1", "report.html": b"1"})
    assert (out / "report.json").read_bytes() == b"1" and not list(out.glob(STAGING_PREFIX + "*"))
    # a kill after READY: the next reader finishes the switch
    _staging(out, "\n".join([READY_MAGIC, "report.json", "report.html"]), report_json=b"2", report_html=b"2")
    recover_staging(out)
    assert (out / "report.json").read_bytes() == (out / "report.html").read_bytes() == b"2"
    # a kill before READY: the old files stand
    _staging(out, None, report_json=b"3")
    recover_staging(out)
    assert (out / "report.json").read_bytes() == b"2" and not list(out.glob(STAGING_PREFIX + "*"))


def test_clean_up_removes_only_what_is_recognisably_the_tools_own(tmp_path):
    """Issue 37 item 2: a report into D removed a user's D/.staging (with what was in it) and every
    D/.*.tmp, and followed a planted D/.staging/READY listing ../inside.txt out of D."""
    out = tmp_path / "D"
    (out / ".staging" / "deep").mkdir(parents=True)
    (out / ".staging" / "deep" / "important.txt").write_text("keep")
    (out / ".staging" / "READY").write_text("../inside.txt")
    (out / "inside.txt").write_text("mine")
    (out / ".notes.tmp").write_text("keep too")
    planted = _staging(out, "\n".join([READY_MAGIC, "../inside.txt", "report.json"]), report_json=b"{}")
    (planted / "extra.txt").write_text("not ours")  # anything else inside: not a staging directory we left
    publish_together(out, {"report.json": b"1", "report.html": b"1"})
    assert (out / ".staging" / "deep" / "important.txt").read_text() == "keep" and (out / ".notes.tmp").exists()
    assert (out / "inside.txt").read_text() == "mine" and not (tmp_path / "inside.txt").exists()
    assert planted.is_dir() and (out / "report.json").read_bytes() == b"1"
    (planted / "extra.txt").unlink()  # now as the tool leaves it: only PUBLISHED names move, within D
    recover_staging(out)
    assert not planted.exists() and (out / "inside.txt").read_text() == "mine" and (out / "report.json").read_bytes() == b"{}"
    with pytest.raises(ValueError):
        publish_together(out, {"../x": b"1"})


def test_a_second_lock_on_a_directory_is_refused_until_the_first_is_released(tmp_path):
    with run_lock(tmp_path / "run"):
        with pytest.raises(CheckpointError, match="being written by another hansprobe process"):
            with run_lock(tmp_path / "run"):
                pass
    with run_lock(tmp_path / "run"):  # released
        pass


def test_a_torn_metrics_line_is_skipped_and_truncation_keeps_earlier_rows(tmp_path):
    for step in (10, 20, 30):
        append_metrics(tmp_path, {"step": step, "loss": 1.0 / step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "lo')  # a kill mid-append
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 20, 30]
    truncate_metrics(tmp_path, 20)
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 20]
    with pytest.raises(ValueError):  # strict JSON: a NaN never reaches the log
        append_metrics(tmp_path, {"step": 50, "loss": float("nan")})


def test_safetensors_round_trip_and_a_pickle_is_never_loaded(tmp_path):
    t = {"w": torch.arange(6.0).reshape(2, 3)}
    save_safetensors(tmp_path / "m.safetensors", t, {"step": "3"})
    back, meta = load_safetensors(tmp_path / "m.safetensors")
    assert torch.equal(back["w"], t["w"]) and meta == {"step": "3"}
    (tmp_path / "p.safetensors").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(CheckpointError, match="never loads"):
        load_safetensors(tmp_path / "p.safetensors")
    (tmp_path / "t.safetensors").write_bytes((tmp_path / "m.safetensors").read_bytes()[:20])
    with pytest.raises(CheckpointError, match="not a complete safetensors file"):
        load_safetensors(tmp_path / "t.safetensors")


def test_jsonable_turns_numpy_and_non_finite_values_into_strict_json():
    x = jsonable({"a": np.float32(0.5), "b": np.arange(3), "c": (np.int64(2), float("inf")), "d": float("nan")})
    assert x == {"a": 0.5, "b": [0, 1, 2], "c": [2, None], "d": None}
    json.dumps(x, allow_nan=False)
