"""Next-Token-Failures' fine-tuned state dicts (its finetune.py, GPT-2 and Pythia): built here from a
transformers module configured as that repository runs it, saved in its layout (its utils/load.py
mapping), and imported with the base model's directory for config and tokenizer."""
import json

import pytest
import torch

from helpers import ntf_finetune_state_dict, path_star_bpe, run_cli, save_text_causal_lm
from hansprobe.objectives import get_objective
from hansprobe.tasks import PathStar

TASK = PathStar(degree=2, path_len=4, n_nodes=20)
TASK_ARGS = ["--degree", "2", "--path-len", "4", "--nodes", "20"]


@pytest.fixture(scope="module")
def tokenizer():
    return path_star_bpe(TASK, 300, lines=2000)


def _as_ntf_runs_it(kind: str, vocab: int):
    """The module Next-Token-Failures' class computes: tanh GELU; for Pythia, rotary on 16 dims of
    each head (its PythiaConfig default), parallel attention and MLP."""
    from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig

    torch.manual_seed(3)
    if kind == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=64, n_layer=2, n_head=2, activation_function="gelu_new")
    else:
        cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=256, max_position_embeddings=64, hidden_act="gelu_new",
                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5})
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():  # biases and norms away from their init, so a swapped one shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("kind", ["gpt2", "neox"])
def test_a_fine_tune_imports_with_its_base_model_and_matches_the_model_it_ran(kind, tokenizer, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig

    ran = _as_ntf_runs_it(kind, tokenizer.get_vocab_size())
    torch.save(ntf_finetune_state_dict(ran, kind), tmp_path / "ckpt.pt")
    base = tmp_path / "base"  # the pretrained model's own config: exact GELU, Pythia's 0.25 rotary share
    shape = ran.config.to_dict()
    cfg = (GPT2Config(vocab_size=shape["vocab_size"], n_positions=64, n_embd=64, n_layer=2, n_head=2) if kind == "gpt2"
           else GPTNeoXConfig(vocab_size=shape["vocab_size"], hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=256, max_position_embeddings=64))
    AutoModelForCausalLM.from_config(cfg).save_pretrained(base)
    tokenizer.save(str(base / "tokenizer.json"))
    out = tmp_path / "imported"
    code, _, err = run_cli(["import", str(tmp_path / "ckpt.pt"), "--format", "ntf", "--base-model", str(base), *TASK_ARGS,
                            "--objective", "teacher-forcing", "--out", str(out)], capsys)
    assert code == 0, err
    recorded = json.loads((out / "config.json").read_text())["imported_from"]
    assert recorded["max_logit_diff"] <= 1e-4 and "independent" in recorded["parity_reference"]
    from hansprobe.checkpoint import load_checkpoint

    model = load_checkpoint(out).model
    x = get_objective("teacher-forcing").inputs(TASK.generate(16, seed=11))
    with torch.no_grad():
        text = model.text_inputs(x)
        want = ran(text).logits[:, model.site[:x.shape[1]]][..., model.lut.clamp(min=0)]
        got = model(x)
    assert (got[..., :TASK.n_nodes] - want[..., :TASK.n_nodes]).abs().max() < 1e-4


def test_the_base_model_must_match_and_carry_a_tokenizer(tokenizer, tmp_path, capsys):
    ran = _as_ntf_runs_it("neox", tokenizer.get_vocab_size())
    torch.save(ntf_finetune_state_dict(ran, "neox"), tmp_path / "ckpt.pt")
    llama = tmp_path / "llama"
    save_text_causal_lm("llama", llama, tokenizer)
    bare = tmp_path / "bare"
    save_text_causal_lm("neox", bare, tokenizer)
    (bare / "tokenizer.json").unlink()
    for base, said in ((llama, "GPT-2 and Pythia"), (bare, "has no tokenizer.json")):
        code, _, err = run_cli(["import", str(tmp_path / "ckpt.pt"), "--format", "ntf", "--base-model", str(base),
                                *TASK_ARGS, "--objective", "teacher-forcing", "--out", str(tmp_path / "o")], capsys)
        assert code == 2 and said in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(["import", str(llama), "--format", "hf", "--base-model", str(llama), *TASK_ARGS,
                            "--objective", "teacher-forcing", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "goes with --format ntf" in err
