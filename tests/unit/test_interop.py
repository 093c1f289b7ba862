"""Importing models trained elsewhere: Hugging Face GPT-2, nanoGPT and Next-Token-Failures state
dicts become hansprobe checkpoints whose hooked logits match the original within 1e-4."""
import json

import pytest
import torch

from hansprobe.checkpoint import load_checkpoint
from hansprobe.cli import main
from hansprobe.objectives import get_objective

from helpers import nanogpt_reference_logits, nanogpt_state_dict, ntf_reference_logits, ntf_state_dict, tiny_task

TASK = ["--degree", "2", "--path-len", "4", "--nodes", "20", "--objective", "teacher-forcing"]
TOL = 1e-4


def _tokens(task):
    return get_objective("teacher-forcing").inputs(task.generate(32, seed=99))


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    task = tiny_task()
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=task.d_vocab, n_positions=task.n_ctx + 3, n_embd=32, n_layer=2, n_head=4,
                     bos_token_id=None, eos_token_id=None)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # GPT-2's init is near-silent; make the logits informative
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    out = tmp_path_factory.mktemp("hf") / "gpt2"
    model.save_pretrained(out)
    return out, model


def test_hf_gpt2_imports_with_matching_logits(hf_dir, tmp_path, capsys):
    src, original = hf_dir
    code, out, err = run(["import", str(src), "--format", "hf-gpt2", *TASK, "--out", str(tmp_path / "ck")], capsys)
    assert code == 0, err
    ck = load_checkpoint(tmp_path / "ck")
    assert type(ck.model).__name__ == "TransformerBridge" and ck.config["imported_from"]["format"] == "hf-gpt2"
    x = _tokens(ck.task)
    with torch.no_grad():
        diff = (ck.model(x) - original(x).logits).abs().max().item()
    assert diff <= TOL
    _, cache = ck.model.run_with_cache(x, names_filter=lambda n: n.endswith("hook_pattern") or n.endswith("hook_z"))
    assert cache["blocks.1.attn.hook_pattern"].shape == (32, 4, x.shape[1], x.shape[1])


@pytest.mark.parametrize("pickled_as", ["state_dict", "nanogpt_ckpt"])
def test_nanogpt_state_dict_imports_with_matching_logits(tmp_path, capsys, pickled_as):
    task = tiny_task()
    sd = nanogpt_state_dict(task.d_vocab, task.n_ctx + 1, bias=pickled_as == "state_dict")
    path = tmp_path / "ckpt.pt"
    if pickled_as == "nanogpt_ckpt":  # nanoGPT's own train.py layout: model + model_args (n_head stored)
        torch.save({"model": {f"_orig_mod.{k}": v for k, v in sd.items()}, "model_args": {"n_head": 4, "n_layer": 2},
                    "iter_num": 5, "config": {"dataset": "x"}}, path)
        heads = []
    else:
        torch.save(sd, path)
        heads = ["--n-heads", "4"]
    code, _, err = run(["import", str(path), "--format", "nanogpt", *TASK, *heads, "--out", str(tmp_path / "ck")], capsys)
    assert code == 0, err
    ck = load_checkpoint(tmp_path / "ck")
    x = _tokens(ck.task)
    with torch.no_grad():
        assert (ck.model(x) - nanogpt_reference_logits(sd, x, 4)).abs().max().item() <= TOL


def test_ntf_state_dict_imports_with_matching_logits(tmp_path, capsys):
    task = tiny_task()
    sd = ntf_state_dict(task.d_vocab, task.n_ctx)
    torch.save(sd, tmp_path / "ntf.pt")
    argv = ["import", str(tmp_path / "ntf.pt"), "--format", "ntf", *TASK, "--out", str(tmp_path / "ck")]
    code, _, err = run(argv, capsys)
    assert code == 2 and "--n-heads" in err  # the file does not say
    code, _, err = run([*argv, "--n-heads", "4"], capsys)
    assert code == 0, err
    ck = load_checkpoint(tmp_path / "ck")
    x = _tokens(ck.task)
    with torch.no_grad():
        assert (ck.model(x) - ntf_reference_logits(sd, x, 4)).abs().max().item() <= TOL
    assert (ck.model(x) - ntf_reference_logits(sd, x, 2)).abs().max().item() > TOL  # the head count matters


def test_one_time_conversion_to_safetensors(tmp_path, capsys):
    task = tiny_task()
    sd = ntf_state_dict(task.d_vocab, task.n_ctx, seed=3)
    torch.save(sd, tmp_path / "ntf.pt")
    code, _, err = run(["import", str(tmp_path / "ntf.pt"), "--format", "ntf", "--to-safetensors", str(tmp_path / "ntf.safetensors")], capsys)
    assert code == 0, err
    code, _, err = run(["import", str(tmp_path / "ntf.safetensors"), "--format", "ntf", *TASK, "--n-heads", "4",
                        "--out", str(tmp_path / "ck")], capsys)
    assert code == 0, err
    x = _tokens(task)
    with torch.no_grad():
        assert (load_checkpoint(tmp_path / "ck").model(x) - ntf_reference_logits(sd, x, 4)).abs().max().item() <= TOL


class NotATensor:  # a pickled object of our own class: weights_only must refuse it
    pass


@pytest.mark.parametrize("case,needle", [
    ("garbage", "not a readable PyTorch state dict"),
    ("object", "never unpickles code"),
    ("wrong_format", "not a Next-Token-Failures GPT state dict"),
    ("too_small", "does not fit the task"),
    ("small_vocab", "its vocabulary has 23 tokens"),
    ("no_file", "is not a file"),
])
def test_bad_sources_get_one_line_errors(tmp_path, capsys, case, needle):
    task = tiny_task()
    path = tmp_path / "src.pt"
    fmt = "ntf"
    if case == "garbage":
        path.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    elif case == "object":
        torch.save({"w": torch.zeros(2), "obj": NotATensor()}, path)
    elif case == "wrong_format":
        torch.save(nanogpt_state_dict(task.d_vocab, task.n_ctx), path)
    elif case == "too_small":
        torch.save(ntf_state_dict(task.d_vocab, task.n_ctx - 2), path)
    elif case == "small_vocab":
        torch.save(ntf_state_dict(task.d_vocab - 1, task.n_ctx), path)
    else:
        path = tmp_path / "missing.pt"
    code, _, err = run(["import", str(path), "--format", fmt, *TASK, "--n-heads", "4", "--out", str(tmp_path / "ck")], capsys)
    line = err.strip()
    assert code == 2 and needle in line and "\n" not in line and line.startswith("hansprobe: error:")
    assert not (tmp_path / "ck").exists()  # nothing half-written


def test_hf_dir_without_safetensors_is_refused(hf_dir, tmp_path, capsys):
    src, _ = hf_dir
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text((src / "config.json").read_text())
    code, _, err = run(["import", str(tmp_path / "d"), "--format", "hf-gpt2", *TASK, "--out", str(tmp_path / "ck")], capsys)
    assert code == 2 and "model.safetensors" in err


def test_imported_model_gets_a_full_report(hf_dir, tmp_path, capsys):
    src, _ = hf_dir
    assert run(["import", str(src), "--format", "hf-gpt2", *TASK, "--out", str(tmp_path / "ck")], capsys)[0] == 0
    code, _, err = run(["report", str(tmp_path / "ck"), "-n", "40", "--patch-pairs", "20", "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    c = doc["checkpoints"][0]
    assert all("skipped" not in c["analyses"][a] for a in ("behaviour", "entropy", "heads", "plan_depth", "patching"))
    assert c["provenance"]["steps"] is None and c["config"]["imported_from"]["format"] == "hf-gpt2"


# --- issue 14, defect 2: nothing is filled with random weights, and parity is checked independently
def _hf_copy(src, dst, edit_config=None, edit_tensors=None):
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    if edit_config:
        edit_config(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    tensors = load_file(src / "model.safetensors")
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, dst / "model.safetensors", {"format": "pt"})
    return dst


def _import(src, fmt, tmp_path, capsys, *extra):
    return run(["import", str(src), "--format", fmt, *TASK, *extra, "--out", str(tmp_path / "ck")], capsys)


def test_a_config_with_more_layers_than_the_weights_is_refused(hf_dir, tmp_path, capsys):
    src, _ = hf_dir
    bad = _hf_copy(src, tmp_path / "d", edit_config=lambda c: c.update(n_layer=48))
    code, _, err = _import(bad, "hf-gpt2", tmp_path, capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "n_layer=48" in err and "blocks 0-1 (missing: 2-47)" in err  # names the absent blocks
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("edit,needle", [
    (lambda t: t.__setitem__("transformer.h.1.mlp.gate.weight", torch.zeros(32, 128)), "1 unexpected (transformer.h.1.mlp.gate.weight)"),
    (lambda t: t.__setitem__("transformer.h.5.mlp.c_fc.weight", torch.zeros(32, 128)), "blocks 0-1, 5"),
    (lambda t: t.pop("transformer.h.1.attn.c_proj.bias"), "1 missing (transformer.h.1.attn.c_proj.bias)"),
    (lambda t: t.__setitem__("transformer.h.0.mlp.c_fc.weight", torch.zeros(128, 32)), "transformer.h.0.mlp.c_fc.weight is (128, 32)"),
    (lambda t: t.__setitem__("lm_head.weight", torch.randn_like(t["transformer.wte.weight"])), "untied"),
])
def test_missing_unexpected_or_misshapen_hf_weights_are_named(hf_dir, tmp_path, capsys, edit, needle):
    src, _ = hf_dir
    code, _, err = _import(_hf_copy(src, tmp_path / "d", edit_tensors=edit), "hf-gpt2", tmp_path, capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_a_state_dict_weight_the_conversion_does_not_use_is_named(tmp_path, capsys):
    task = tiny_task()
    sd = ntf_state_dict(task.d_vocab, task.n_ctx)
    sd["layers.0.attn.rotary_emb.inv_freq"] = torch.ones(4)  # a Phi-style block the GPT-2 layout cannot hold
    torch.save(sd, tmp_path / "ntf.pt")
    code, _, err = _import(tmp_path / "ntf.pt", "ntf", tmp_path, capsys, "--n-heads", "4")
    assert code == 2 and "layers.0.attn.rotary_emb.inv_freq" in err and "not part of" in err, err


def test_parity_is_checked_against_an_independent_forward(tmp_path, capsys, monkeypatch):
    """A conversion bug (here: q and k swapped in every block) must fail the parity check. The old check
    compared the converted GPT-2 with its own bridge and passed such a model."""
    import hansprobe.interop as interop

    task = tiny_task()
    sd = nanogpt_state_dict(task.d_vocab, task.n_ctx + 1)
    torch.save(sd, tmp_path / "ckpt.pt")
    real = interop.nanogpt_to_gpt2

    def buggy(source, n_heads=None):
        cfg, out = real(source, n_heads)
        d = cfg.n_embd
        for i in range(cfg.n_layer):
            w = out[f"transformer.h.{i}.attn.c_attn.weight"]
            out[f"transformer.h.{i}.attn.c_attn.weight"] = torch.cat([w[:, d:2 * d], w[:, :d], w[:, 2 * d:]], 1)
        return cfg, out
    monkeypatch.setattr(interop, "nanogpt_to_gpt2", buggy)
    code, _, err = _import(tmp_path / "ckpt.pt", "nanogpt", tmp_path, capsys, "--n-heads", "4")
    assert code == 2 and "independent forward of the source weights" in err, err
    monkeypatch.undo()
    code, _, err = _import(tmp_path / "ckpt.pt", "nanogpt", tmp_path, capsys, "--n-heads", "4")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "ck").config["imported_from"]["max_logit_diff"] <= TOL


@pytest.mark.parametrize("case,needle", [
    ("not json", "is not valid JSON"),
    ("a list", "hf_config must be a JSON object"),
    ("n_head two", "n_head must be an integer"),
    ("activation", "activation_function must be one of"),
])
def test_bad_hf_configs_are_one_line(hf_dir, tmp_path, capsys, case, needle):
    src, _ = hf_dir
    bad = _hf_copy(src, tmp_path / "d", edit_config=lambda c: c.update(n_head="two") if case == "n_head two" else
                   c.update(activation_function="swiglu") if case == "activation" else None)
    if case == "not json":
        (bad / "config.json").write_text("{n_layer: 2,")
    elif case == "a list":
        (bad / "config.json").write_text("[1, 2]")
    code, _, err = _import(bad, "hf-gpt2", tmp_path, capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("case,needle", [
    ("1-D wte", "transformer.wte.weight must be a matrix"),
    ("n_head string", "number of heads (n_head) must be an integer"),
])
def test_bad_nanogpt_files_are_one_line(tmp_path, capsys, case, needle):
    task = tiny_task()
    sd = nanogpt_state_dict(task.d_vocab, task.n_ctx + 1)
    if case == "1-D wte":
        sd["transformer.wte.weight"] = sd["transformer.wte.weight"].flatten()
        torch.save(sd, tmp_path / "ckpt.pt")
    else:
        torch.save({"model": sd, "model_args": {"n_head": "two"}}, tmp_path / "ckpt.pt")
    code, _, err = _import(tmp_path / "ckpt.pt", "nanogpt", tmp_path, capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_dynamics_reads_an_imported_checkpoint_through_its_own_loader(hf_dir, tmp_path, capsys):
    """Issue 37 item 13: `hansprobe dynamics` on a valid imported hf-gpt2 checkpoint said "weights do not
    match ... 38 missing ... 28 unexpected" while report and plan_depth worked."""
    src, _ = hf_dir
    assert run(["import", str(src), "--format", "hf-gpt2", *TASK, "--out", str(tmp_path / "ck")], capsys)[0] == 0
    code, out, err = run(["dynamics", str(tmp_path / "ck"), "-n", "20", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["steps"] == [0]  # the one point: the imported weights (no step recorded)
