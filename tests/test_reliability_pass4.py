"""Issue 37, the fourth reliability pass: the tool never destroys a file it did not write. Each test
reproduces a numbered defect of the issue and fails on the code before it. Nothing here touches the
real /dev: a FIFO and a symbolic link in a temporary directory stand in for a device."""
import json
import os
import shutil

import pytest

from helpers import run_cli


def _entropy(ckpt, out, *extra):
    return ["entropy", str(ckpt), "-n", "20", "--out", str(out), *extra]


def test_an_analysis_never_writes_into_a_checkpoint(ckpt, tmp_path, capsys):
    """Item 1: `entropy CK --out CK/model.safetensors` replaced the weights with JSON and exited 0."""
    ck = tmp_path / "ck"
    shutil.copytree(ckpt, ck)
    weights = (ck / "model.safetensors").read_bytes()
    for target in (ck / "model.safetensors", ck / "metrics.jsonl", ck / "notes.json"):
        code, _, err = run_cli(_entropy(ck, target, "--overwrite"), capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "checkpoint, run or report directory" in err
    assert (ck / "model.safetensors").read_bytes() == weights and not (ck / "notes.json").exists()


def test_an_analysis_replaces_an_existing_file_only_with_overwrite(ckpt, tmp_path, capsys):
    out = tmp_path / "result.json"
    out.write_text("my notes\n")
    code, _, err = run_cli(_entropy(ckpt, out), capsys)
    assert code == 2 and "exists; pass --overwrite" in err and out.read_text() == "my notes\n"
    code, _, _ = run_cli(_entropy(ckpt, out, "--overwrite"), capsys)
    assert code == 0 and json.loads(out.read_text())["analysis"] == "entropy"


def test_a_fifo_or_a_symlink_is_refused_not_renamed_over(ckpt, tmp_path, capsys):
    """Item 1: `--out FIFO` replaced the FIFO with a file (and `--out /dev/null`, run as root, the machine's
    /dev/null). A FIFO stands in for the device here."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    target = tmp_path / "target.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    for out in (fifo, link):
        code, _, err = run_cli(_entropy(ckpt, out, "--overwrite"), capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert fifo.is_fifo() and link.is_symlink() and target.read_text() == "{}"


def test_data_and_to_safetensors_take_the_same_checks(ckpt, tmp_path, capsys):
    code, _, err = run_cli(["data", "--degree", "2", "--path-len", "4", "--nodes", "20", "-n", "3",
                            "--out", str(ckpt / "graphs.txt")], capsys)
    assert code == 2 and "checkpoint, run or report directory" in err and not (ckpt / "graphs.txt").exists()


def test_the_lock_is_on_the_directory_however_it_is_named(tmp_path):
    """Item 3: the lock was named after the path as typed: `train --resume --out LINK` beside
    `train --out RUN` both ran, and metrics.jsonl got 24 duplicated rows."""
    from hansprobe.errors import CheckpointError
    from hansprobe.storage import run_lock

    run = tmp_path / "run"
    run.mkdir()
    link = tmp_path / "link"
    link.symlink_to(run)
    with run_lock(run):
        for other in (link, tmp_path / "x" / ".." / "run"):
            with pytest.raises(CheckpointError, match="being written by another hansprobe process"):
                with run_lock(other):
                    pass


def test_overwrite_replaces_only_a_checkpoint_directory_and_never_through_a_link(ckpt, tmp_path, capsys):
    """Item 3: `train --overwrite --out SYMLINK` gave "unexpected OSError: Cannot call rmtree on a
    symbolic link"; and --overwrite removed any non-empty directory, a user's files included."""
    from helpers import TINY_TRAIN

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(mine)
    for out, needle in ((link, "symbolic link"), (mine, "did not write")):
        code, _, err = run_cli([*TINY_TRAIN, "--steps", "1", "--out", str(out), "--overwrite"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert (mine / "thesis.tex").read_text() == "keep" and link.is_symlink()
    run = tmp_path / "run"
    shutil.copytree(ckpt, run)  # a checkpoint this tool wrote: --overwrite replaces it
    code, _, err = run_cli([*TINY_TRAIN, "--steps", "1", "--eval-every", "1", "--checkpoint-every", "1", "--out", str(run),
                            "--overwrite"], capsys)
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["step"] == 1
