import json
import os
import pickle

import pytest
import torch

import hansprobe
from hansprobe.checkpoint import load_checkpoint, read_metrics
from hansprobe.errors import CheckpointError
from hansprobe.train import train

from helpers import tiny_model_cfg, tiny_task, tiny_train_cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(out, tiny_task(), "teacher-forcing", tiny_model_cfg(), tiny_train_cfg(steps=4), seed=0, progress=False)
    return out


def copy_run(run_dir, tmp_path):
    dst = tmp_path / "copy"
    dst.mkdir()
    for f in run_dir.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_directory_layout_and_config_contents(run_dir):
    names = {f.name for f in run_dir.iterdir()}
    assert {"config.json", "model.safetensors", "metrics.jsonl", "resume.safetensors"} <= names
    assert not any(n.endswith(".tmp") for n in names)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["task"] == {"name": "pathstar", "degree": 2, "path_len": 4, "n_nodes": 20}
    assert cfg["objective"] == "teacher-forcing" and cfg["seed"] == 0 and cfg["step"] == 4
    assert set(cfg["versions"]) >= {"torch", "transformer-lens", "python"}
    assert cfg["metrics"]["step"] == 4 and len(read_metrics(run_dir)) == 1


def test_load_round_trip_gives_identical_logits(run_dir):
    model, task, objective = hansprobe.load(run_dir)
    assert objective.name == "teacher-forcing" and task == tiny_task() and not model.training
    again = load_checkpoint(run_dir).model
    x = objective.inputs(task.generate(8, 0))
    assert torch.equal(model(x), again(x))
    # and the weights are the trained ones, not a fresh init
    fresh = hansprobe.build_model(tiny_model_cfg(), task.d_vocab, task.n_ctx, 0, device="cpu")
    assert not torch.equal(model(x), fresh(x))
    assert "blocks.0.attn.hook_pattern" in model.hook_dict


def test_missing_file_is_named(run_dir, tmp_path):
    d = copy_run(run_dir, tmp_path)
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        hansprobe.load(d)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        hansprobe.load(d)
    with pytest.raises(CheckpointError, match="does not exist"):
        hansprobe.load(tmp_path / "nowhere")


@pytest.mark.parametrize("keep", [4, 100, -1000])
def test_truncated_safetensors_is_refused_in_one_line(run_dir, tmp_path, keep):
    d = copy_run(run_dir, tmp_path)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match="truncated or corrupt|not a valid safetensors") as e:
        hansprobe.load(d)
    assert "\n" not in str(e.value)


def test_pickle_is_refused_and_never_run(run_dir, tmp_path):
    d = copy_run(run_dir, tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (d / "model.safetensors").write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(CheckpointError, match="pickle"):
        hansprobe.load(d)
    torch.save({"w": torch.zeros(2)}, d / "model.safetensors")  # torch.save's zip is a pickle too
    with pytest.raises(CheckpointError, match="pickle"):
        hansprobe.load(d)
    assert not marker.exists()


def test_config_that_does_not_match_the_weights(run_dir, tmp_path):
    d = copy_run(run_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["d_model"] = 64
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"do not match the model its config describes: .* is \(.*\) in the file"):
        hansprobe.load(d)
    cfg["model"]["d_model"], cfg["model"]["n_layers"] = 32, 2
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing"):
        hansprobe.load(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        hansprobe.load(d)


def test_a_safetensors_header_length_ending_in_0x80_is_not_taken_for_a_pickle(tmp_path):
    """Issue 14, defect 1: the first byte of a safetensors file is the low byte of its header length;
    0x80 is a valid one (about 1 file in 32), and such files were refused as pickles."""
    import struct

    from safetensors.torch import save_file

    from hansprobe.checkpoint import load_safetensors

    path, found = tmp_path / "w.safetensors", None
    for pad in range(0, 400):  # grow the metadata until the (8-byte aligned) header length ends in 0x80
        save_file({"w": torch.arange(6.0)}, path, metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            found = pad
            break
    assert found is not None and struct.unpack("<Q", path.read_bytes()[:8])[0] % 256 == 0x80
    tensors, meta = load_safetensors(path)
    assert torch.equal(tensors["w"], torch.arange(6.0)) and meta["pad"] == "x" * found


def test_the_loader_reads_one_architecture_table():
    """One table (native bridge, imported GPT-2, imported causal LMs of other architectures) with
    check / build / load each, read once per checkpoint; an unknown architecture is one line naming
    the ones this version reads."""
    from hansprobe import causal_lm, interop
    from hansprobe.checkpoint import ARCHITECTURES, architecture
    from hansprobe.errors import ConfigError

    assert set(ARCHITECTURES) == {"native", interop.ARCHITECTURE, causal_lm.ARCHITECTURE}
    assert architecture({"model": {"n_layers": 2}}).name == "native"
    assert architecture({"model": {"architecture": interop.ARCHITECTURE}}).name == interop.ARCHITECTURE
    with pytest.raises(ConfigError, match="unknown model architecture 'llama'.*hf-gpt2, hf-causal-lm"):
        architecture({"model": {"architecture": "llama"}})
