"""`hansprobe import --format hf`: causal LMs of other architectures than GPT-2 (GPT-NeoX, Llama with
grouped-query attention and tied embeddings, Phi), trained on hansprobe's integer tokens, become
checkpoints whose hooked model matches transformers' own forward, and every analysis runs on them
through the bridge. Bad directories are one line and exit code 2."""
import json

import pytest
import torch

from hansprobe.checkpoint import load_checkpoint
from hansprobe.objectives import get_objective
from hansprobe.interop import import_model
from helpers import run_cli, save_tiny_causal_lm, tiny_task

TF = get_objective("teacher-forcing")
TASK = ["--degree", "2", "--path-len", "4", "--nodes", "20", "--objective", "teacher-forcing"]  # tiny_task(): 24 tokens


@pytest.mark.parametrize("kind", ["neox", "llama", "phi"])
def test_an_imported_causal_lm_matches_transformers_forward(kind, tmp_path):
    source = save_tiny_causal_lm(kind, tmp_path / "src")
    cfg = import_model(tmp_path / "src", "hf", tmp_path / "ck", tiny_task(), TF)
    assert cfg["model"]["architecture"] == "hf-causal-lm" and cfg["imported_from"]["format"] == "hf"
    assert cfg["imported_from"]["max_logit_diff"] <= 1e-4 and set(cfg["imported_from"]["worst_at"]) == {"graph", "position"}
    ck = load_checkpoint(tmp_path / "ck")
    x = TF.inputs(tiny_task().generate(16, seed=7))  # graphs the import's check did not see
    with torch.no_grad():
        assert float((ck.model(x) - source(x).logits).abs().max()) <= 1e-4
    _, cache = ck.model.run_with_cache(x)  # the usual hook names, as on hansprobe's own models
    assert cache["blocks.1.attn.hook_pattern"].shape == (16, 2, x.shape[1], x.shape[1])


def test_a_gpt2_directory_under_hf_takes_the_gpt2_path(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=24, n_positions=32, n_embd=32, n_layer=1, n_head=2)).save_pretrained(tmp_path / "g")
    cfg = import_model(tmp_path / "g", "hf", tmp_path / "ck", tiny_task(), TF)
    assert cfg["model"]["architecture"] == "hf-gpt2" and "independent" in cfg["imported_from"]["parity_reference"]


def test_the_report_runs_on_an_imported_llama(tmp_path, capsys):
    from hansprobe.report import ANSWERS

    save_tiny_causal_lm("llama", tmp_path / "src")
    assert run_cli(["import", str(tmp_path / "src"), "--format", "hf", *TASK, "--out", str(tmp_path / "ck")], capsys)[0] == 0
    code, _, err = run_cli(["report", str(tmp_path / "ck"), "-n", "40", "--mechanism-graphs", "40", "--patch-pairs", "20",
                            "--batch-size", "40", "--out", str(tmp_path / "rep"), "--json"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    c = doc["checkpoints"][0]
    assert all(v["answer"] in ANSWERS for v in c["verdicts"].values())
    assert "mechanism" in c["analyses"]["heads"] and "searches" in c["analyses"]["plan_depth"]  # hooked ablations and probes ran


def _edit_config(directory, **changes):
    path = directory / "config.json"
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("damage,message", [
    (lambda d: _edit_config(d, auto_map={"AutoModelForCausalLM": "modeling_x.X"}), "never runs code from a model directory"),
    (lambda d: _edit_config(d, architectures=["LlamaForSequenceClassification"]),
     "LlamaForSequenceClassification is not one TransformerLens's bridge boots as a causal LM"),
    (lambda d: (d / "tokenizer.json").write_text("{}"), "is not a tokenizer file the tokenizers library reads"),
    (lambda d: (d / "tokenizer_config.json").write_text("{}"), "has no tokenizer.json"),
    (lambda d: (d / "model.safetensors").unlink(), "has no model.safetensors"),
    (lambda d: _edit_config(d, num_hidden_layers=3), "do not match the model its config describes"),
    (lambda d: _edit_config(d, vocab_size=10), "do not match the model its config describes"),
])
def test_a_directory_hansprobe_cannot_import_is_one_line(damage, message, tmp_path, capsys):
    save_tiny_causal_lm("llama", tmp_path / "src")
    damage(tmp_path / "src")
    code, _, err = run_cli(["import", str(tmp_path / "src"), "--format", "hf", *TASK, "--out", str(tmp_path / "ck")], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "ck" / "config.json").exists()


def test_a_model_too_small_for_the_task_says_what_does_not_fit(tmp_path, capsys):
    save_tiny_causal_lm("neox", tmp_path / "src", vocab=12, ctx=8)
    code, _, err = run_cli(["import", str(tmp_path / "src"), "--format", "hf", *TASK, "--out", str(tmp_path / "ck")], capsys)
    assert code == 2 and "does not fit the task" in err and "vocabulary has 12 tokens" in err and "context is 8" in err, err
