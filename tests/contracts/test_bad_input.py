"""Bad input of every kind ends in one line on stderr and exit code 2, never a traceback (issue 14,
defect 3): damaged config.json and resume files, NTF files, out-of-range options, absurd sizes,
output paths that cannot be written, a full disk, and the last-resort catch-all."""
import errno
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from hansprobe.checkpoint import load_checkpoint, read_metrics
from hansprobe.cli import main
from hansprobe.errors import CheckpointError

from helpers import TINY_TASK_ARGS, TINY_TRAIN, run_cli

TINY, TRAIN = TINY_TASK_ARGS, TINY_TRAIN  # tests/helpers/configs.py; the `ckpt` fixture (conftest.py) is this run


run = run_cli  # tests/helpers/configs.py


def assert_one_line(code, err, needle):
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle in err, err


def copy_with_config(src, dst, edit):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    edit(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _set(*path_value):
    *path, value = path_value

    def edit(cfg):
        d = cfg
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return edit


CONFIG_CASES = {
    "seed string": (_set("seed", "zero"), "seed must be an integer"),
    "seed 1e30": (_set("seed", 1e30), "seed must be an integer"),
    "seed negative": (_set("seed", -1), "seed must be in 0.."),
    "task string": (_set("task", "pathstar"), "task must be a JSON object"),
    "task list": (_set("task", [2, 4, 20]), "task must be a JSON object"),
    "task name unknown": (_set("task", "name", "tree9"), "unknown task"),
    "cue list": (_set("task", "cue", ["x"]), "unknown label cue"),
    "n_layers string": (_set("model", "n_layers", "2"), "n_layers must be an integer"),
    "n_layers float": (_set("model", "n_layers", 2.0), "n_layers must be an integer"),
    "d_mlp negative": (_set("model", "d_mlp", -5), "d_mlp must be at least 1"),
    "act_fn unknown": (_set("model", "act_fn", "swish9"), "act_fn must be one of"),
    "attn_only string": (_set("model", "attn_only", "yes"), "attn_only must be true or false"),
    "model unknown key": (_set("model", "n_expert", 4), "unknown model config keys"),
    "model null": (_set("model", None), "model must be a JSON object"),
    "objective list": (_set("objective", ["teacher-forcing"]), "objective must be a name"),
    "objective unknown": (_set("objective", "telepathy"), "unknown objective"),
    "d_vocab disagrees": (_set("n_ctx", 99), "n_ctx is 99 but the task"),
    "newer format": (_set("format_version", 99), "newer than this hansprobe reads"),
    "step negative": (_set("step", -3), "step must be at least 0"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_a_damaged_config_is_one_line_naming_the_field(ckpt, tmp_path, capsys, case):
    edit, needle = CONFIG_CASES[case]
    bad = copy_with_config(ckpt, tmp_path / "bad", edit)
    code, _, err = run(["eval", str(bad), "-n", "8"], capsys)
    assert_one_line(code, err, needle)
    assert "config.json" in err
    with pytest.raises(CheckpointError, match="config.json"):
        load_checkpoint(bad)


def test_a_nan_seed_in_config_json_is_refused(ckpt, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    text = (bad / "config.json").read_text()
    (bad / "config.json").write_text(text.replace('"seed": 0', '"seed": NaN'))
    code, _, err = run(["eval", str(bad), "-n", "8"], capsys)
    assert_one_line(code, err, "seed must be an integer")


def test_a_config_with_a_billion_nodes_is_refused_before_allocating(ckpt, tmp_path, capsys):
    def edit(cfg):  # consistent otherwise, so only the size is wrong: 10^9 vocabulary rows
        cfg["task"]["n_nodes"] = 10**9
        cfg["d_vocab"] = 10**9 + 4
    bad = copy_with_config(ckpt, tmp_path / "bad", edit)
    code, _, err = run(["eval", str(bad), "-n", "8"], capsys)
    assert_one_line(code, err, "would need about")


# --- resume files ------------------------------------------------------------------------------
def tamper_resume(run_dir, edit_meta=None, edit_tensors=None):
    path = run_dir / "resume.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["hansprobe_resume"])
    tensors = load_file(path)
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, path, {"hansprobe_resume": json.dumps(meta)})


RESUME_CASES = {
    "empty param_groups": (lambda m: m.__setitem__("param_groups", []), None, "param_groups must be a list of 2"),
    "unknown metadata key": (lambda m: m.__setitem__("rng", 1), None, "resume metadata must hold"),
    "step not a number": (lambda m: m.__setitem__("step", "3"), None, "resume step must be an integer"),
    "param group lr NaN": (lambda m: m["param_groups"][0].__setitem__("lr", float("nan")), None, "lr must be a finite"),
    "unknown tensor": (None, lambda t: t.__setitem__("optim.0.momentum", torch.zeros(1)), "unexpected tensor"),
    "moment of wrong shape": (None, lambda t: t.__setitem__("optim.0.exp_avg", torch.zeros(3)), "has shape (3,)"),
    "moment missing": (None, lambda t: t.pop("optim.0.exp_avg_sq"), "lacks ['exp_avg_sq']"),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_a_tampered_resume_file_is_one_line(ckpt, tmp_path, capsys, case):
    meta_edit, tensor_edit, needle = RESUME_CASES[case]
    run_dir = tmp_path / "run"
    shutil.copytree(ckpt, run_dir)
    tamper_resume(run_dir, meta_edit, tensor_edit)
    code, _, err = run(["train", "--resume", "--out", str(run_dir), "--steps", "9", "--json"], capsys)
    assert_one_line(code, err, needle)
    assert "resume.safetensors" in err


def test_resuming_a_config_without_training_settings_is_one_line(ckpt, tmp_path, capsys):
    bad = copy_with_config(ckpt, tmp_path / "bad", _set("train", None))
    code, _, err = run(["train", "--resume", "--out", str(bad), "--json"], capsys)
    assert_one_line(code, err, "holds no training settings")


def test_resuming_with_unknown_training_settings_is_one_line(ckpt, tmp_path, capsys):
    bad = copy_with_config(ckpt, tmp_path / "bad", _set("train", "lr", "fast"))
    code, _, err = run(["train", "--resume", "--out", str(bad), "--json"], capsys)
    assert_one_line(code, err, "lr must be a finite number")


# --- NTF files ---------------------------------------------------------------------------------
def test_an_ntf_node_id_beyond_int64_is_one_line(ckpt, tmp_path, capsys):
    (tmp_path / "g.txt").write_text(f"0,1|0,3|1,5|3,6|5,7|{2**63},8/0,8=0,1,5,7\n")
    code, _, err = run(["eval", str(ckpt), "--data", str(tmp_path / "g.txt")], capsys)
    assert_one_line(code, err, f"node label {2**63}")


def test_ntf_bytes_that_are_not_utf8_name_their_line(ckpt, tmp_path, capsys):
    (tmp_path / "g.txt").write_bytes(b"0,1|0,3|1,5|3,6|5,7|6,8/0,8=0,3,6,8\n0,1|\xff\xfe\n")
    code, _, err = run(["eval", str(ckpt), "--data", str(tmp_path / "g.txt")], capsys)
    assert_one_line(code, err, "line 2: byte 0xff is not UTF-8")


# --- options and output paths ------------------------------------------------------------------
@pytest.mark.parametrize("seed,needle", [("-1", "out of range"), ("1e23", "not an integer"),
                                         (str(2**70), "out of range")])
def test_bad_training_seeds_leave_nothing_behind(tmp_path, capsys, seed, needle):
    out = tmp_path / "run"
    code, _, err = run([*TRAIN, "--seed", seed, "--out", str(out)], capsys)
    assert_one_line(code, err, needle)
    assert not out.exists()


@pytest.mark.parametrize("command", [["eval"], ["entropy"]])
def test_bad_analysis_seeds(ckpt, capsys, command):
    for seed in ("-1", "1e23", str(10**30)):
        code, _, err = run([*command, str(ckpt), "--seed", seed], capsys)
        assert_one_line(code, err, "--seed")


@pytest.mark.parametrize("size", [["--d-model", "10000000"], ["--degree", "1000000", "--nodes", "4000000"]])
def test_absurd_sizes_are_refused_before_allocating_and_leave_no_stub(tmp_path, capsys, size):
    out = tmp_path / "run"
    argv = [*TRAIN, *size, "--out", str(out)]
    code, _, err = run(argv, capsys)
    assert_one_line(code, err, "would need about")
    assert not out.exists(), "a refused run must not leave a directory that blocks the corrected rerun"
    assert run([*TRAIN, "--out", str(out), "--json"], capsys)[0] == 0  # the same --out, no --overwrite needed


def test_a_billion_graphs_are_refused_before_allocating(ckpt, capsys):
    code, _, err = run(["eval", str(ckpt), "-n", "1000000000"], capsys)
    assert_one_line(code, err, "1,000,000,000 graphs")
    code, _, err = run(["data", *TINY, "-n", "100000000000"], capsys)
    assert_one_line(code, err, "would need about")


def test_output_paths_that_cannot_be_written(ckpt, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        ([*TRAIN, "--out", str(a_file)], "is a file"),
        ([*TRAIN, "--out", str(a_file / "run")], "not a directory"),
        (["probe", str(ckpt), "-n", "40", "--layers", "0", "--positions", "start", "--out", str(tmp_path)],
         "it is a directory"),
        (["data", *TINY, "-n", "3", "--out", str(tmp_path), "--overwrite"], "it is a directory"),
        (["data", *TINY, "-n", "3", "--out", str(tmp_path / "missing" / "g.txt")], "its directory does not exist"),
        (["data", *TINY, "-n", "3", "--out", str(a_file / "g.txt")], "not a directory"),
        (["report", str(ckpt), "--out", str(a_file)], "is a file"),
    ]
    for argv, needle in cases:
        code, _, err = run(argv, capsys)
        assert_one_line(code, err, needle)
    assert a_file.read_text() == "x"


# --- a full disk -------------------------------------------------------------------------------
def _disk_full_after(monkeypatch, n_ok: int):
    """os.fsync raises ENOSPC from the (n_ok+1)-th call on, as a full disk does at the flush."""
    real, calls = os.fsync, [0]

    def fsync(fd):
        calls[0] += 1
        if calls[0] > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_during_training_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    # fsyncs: config (file + dir) = 2, at step 3 a metrics row (1) and three files (2 each) = 7, at step 6
    # the metrics row (1); the disk is full from the step-6 resume file on
    _disk_full_after(monkeypatch, 2 + 7 + 1)
    code, _, err = run([*TRAIN, "--out", str(out), "--json"], capsys)  # --json: no progress lines beside the error
    assert_one_line(code, err, "the disk is full")
    assert "keeps its last complete checkpoint (step 3)" in err and "--resume" in err
    assert not list(out.glob(".*.tmp"))
    monkeypatch.undo()
    assert load_checkpoint(out).config["step"] == 3
    code, _, err = run(["train", "--resume", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    assert [r["step"] for r in read_metrics(out)] == [3, 6]


def test_a_full_disk_while_writing_data_leaves_no_file(tmp_path, capsys, monkeypatch):
    _disk_full_after(monkeypatch, 0)
    code, _, err = run(["data", *TINY, "-n", "50", "--out", str(tmp_path / "g.txt")], capsys)
    assert_one_line(code, err, "the disk is full")
    assert list(tmp_path.iterdir()) == []


# --- the last resort ---------------------------------------------------------------------------
def test_an_unexpected_error_is_one_line_unless_debug(ckpt, capsys, monkeypatch):
    import hansprobe.cli as cli

    def broken(args):
        raise RuntimeError("something nobody foresaw\nsecond line")
    monkeypatch.setitem(cli.COMMANDS, "eval", broken)
    code, _, err = run(["eval", str(ckpt)], capsys)
    assert_one_line(code, err, "please report it")
    assert "RuntimeError: something nobody foresaw second line" in err and "--debug" in err
    with pytest.raises(RuntimeError, match="nobody foresaw"):
        main(["eval", str(ckpt), "--debug"])
    with pytest.raises(RuntimeError, match="nobody foresaw"):
        main(["--debug", "eval", str(ckpt)])


def test_running_out_of_memory_is_one_line(ckpt, capsys, monkeypatch):
    import hansprobe.cli as cli

    def oom(args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")
    monkeypatch.setitem(cli.COMMANDS, "eval", oom)
    code, _, err = run(["eval", str(ckpt)], capsys)
    assert_one_line(code, err, "ran out of memory")
