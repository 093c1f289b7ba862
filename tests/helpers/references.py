"""Models trained elsewhere: tiny state dicts in public layouts (nanoGPT, Next-Token-Failures), and
reference forwards written from those layouts' definitions (not from hansprobe's converter)."""
from __future__ import annotations

import torch


def nanogpt_state_dict(vocab: int, ctx: int, d: int = 32, n_layer: int = 2, bias: bool = True, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    sd = {"transformer.wte.weight": r(vocab, d), "transformer.wpe.weight": r(ctx, d),
          "transformer.ln_f.weight": 1 + r(d)}
    if bias:
        sd["transformer.ln_f.bias"] = r(d)
    for i in range(n_layer):
        p = f"transformer.h.{i}"
        for name, (o, n) in {"attn.c_attn": (3 * d, d), "attn.c_proj": (d, d), "mlp.c_fc": (4 * d, d), "mlp.c_proj": (d, 4 * d)}.items():
            sd[f"{p}.{name}.weight"] = r(o, n)
            if bias:
                sd[f"{p}.{name}.bias"] = r(o)
        for ln in ("ln_1", "ln_2"):
            sd[f"{p}.{ln}.weight"] = 1 + r(d)
            if bias:
                sd[f"{p}.{ln}.bias"] = r(d)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


def ntf_state_dict(vocab: int, ctx: int, d: int = 32, n_layer: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    sd = {"embed_tokens.weight": r(vocab, d), "pos_encoding.weight": r(ctx, d),
          "final_layernorm.weight": 1 + r(d), "final_layernorm.bias": r(d)}
    for i in range(n_layer):
        p = f"layers.{i}"
        for name, (o, n) in {"attn.queries_linear": (d, d), "attn.keys_linear": (d, d), "attn.values_linear": (d, d),
                             "attn.proj": (d, d), "mlp.expand": (4 * d, d), "mlp.proj": (d, 4 * d)}.items():
            sd[f"{p}.{name}.weight"], sd[f"{p}.{name}.bias"] = r(o, n), r(o)
        for ln in ("ln_1", "ln_2"):
            sd[f"{p}.{ln}.weight"], sd[f"{p}.{ln}.bias"] = 1 + r(d), r(d)
    sd["lm_head.weight"] = sd["embed_tokens.weight"]
    return sd


def _ln(x, sd, p):
    w = sd[f"{p}.weight"]
    return torch.nn.functional.layer_norm(x, w.shape, w, sd.get(f"{p}.bias"), 1e-5)


def _attend(q, k, v, n_heads):
    B, T, d = q.shape
    q, k, v = (t.view(B, T, n_heads, d // n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, dh)
    att = (q @ k.transpose(-1, -2)) / (d // n_heads) ** 0.5
    att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    return (att @ v).transpose(1, 2).reshape(B, T, d)


def _lin(x, sd, p):
    return torch.nn.functional.linear(x, sd[f"{p}.weight"], sd.get(f"{p}.bias"))


@torch.no_grad()
def nanogpt_reference_logits(sd: dict, tokens: torch.Tensor, n_heads: int) -> torch.Tensor:
    """nanoGPT's forward: pre-LN blocks, fused c_attn, exact GELU, tied head."""
    x = sd["transformer.wte.weight"][tokens] + sd["transformer.wpe.weight"][: tokens.shape[1]]
    n_layer = len({k.split(".")[2] for k in sd if k.startswith("transformer.h.")})
    for i in range(n_layer):
        p = f"transformer.h.{i}"
        q, k, v = _lin(_ln(x, sd, f"{p}.ln_1"), sd, f"{p}.attn.c_attn").chunk(3, -1)
        x = x + _lin(_attend(q, k, v, n_heads), sd, f"{p}.attn.c_proj")
        x = x + _lin(torch.nn.functional.gelu(_lin(_ln(x, sd, f"{p}.ln_2"), sd, f"{p}.mlp.c_fc")), sd, f"{p}.mlp.c_proj")
    return _ln(x, sd, "transformer.ln_f") @ sd["transformer.wte.weight"].T


@torch.no_grad()
def ntf_reference_logits(sd: dict, tokens: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The Next-Token-Failures GPT's forward: separate q/k/v linears, tanh GELU, tied head."""
    x = sd["embed_tokens.weight"][tokens] + sd["pos_encoding.weight"][: tokens.shape[1]]
    n_layer = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    for i in range(n_layer):
        p = f"layers.{i}"
        h = _ln(x, sd, f"{p}.ln_1")
        q, k, v = (_lin(h, sd, f"{p}.attn.{n}_linear") for n in ("queries", "keys", "values"))
        x = x + _lin(_attend(q, k, v, n_heads), sd, f"{p}.attn.proj")
        h = torch.nn.functional.gelu(_lin(_ln(x, sd, f"{p}.ln_2"), sd, f"{p}.mlp.expand"), approximate="tanh")
        x = x + _lin(h, sd, f"{p}.mlp.proj")
    return _ln(x, sd, "final_layernorm") @ sd["embed_tokens.weight"].T


def save_tiny_causal_lm(kind: str, directory, vocab: int = 24, ctx: int = 32, seed: int = 0):
    """A randomly initialised transformers causal LM of `kind` ("gpt2", "neox", "llama" with grouped-query
    attention and tied embeddings, "phi"), saved with save_pretrained into `directory`; returns the module."""
    from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig, PhiConfig

    shape = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=ctx)
    config = {"gpt2": lambda: GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=ctx),
              "neox": lambda: GPTNeoXConfig(**shape),
              "llama": lambda: LlamaConfig(**shape, num_key_value_heads=1, tie_word_embeddings=True),
              "phi": lambda: PhiConfig(**shape)}[kind]()
    from hansprobe.causal_lm import offline

    offline()  # no hub, and no "Writing model shards" bar on the test's stderr
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    model.save_pretrained(directory)
    return model


def path_star_bpe(task, vocab_size: int, lines: int = 3000):
    """A GPT-2-style byte-level BPE trained on `task`'s text lines (the `tokenizers` package, offline):
    at a few hundred tokens every label of a small task is one token, as under GPT-2's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from hansprobe.tasks.ntf_format import format_ntf_lines

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(format_ntf_lines(task.generate(lines, seed=1)), trainer)
    return tok


def save_text_causal_lm(kind: str, directory, tokenizer, ctx: int = 128, seed: int = 0):
    """`save_tiny_causal_lm` sized to `tokenizer`'s vocabulary, with the tokenizer saved beside it
    (tokenizer.json): a model that reads the task as text. Returns the module."""
    model = save_tiny_causal_lm(kind, directory, vocab=tokenizer.get_vocab_size(), ctx=ctx, seed=seed)
    tokenizer.save(str(directory / "tokenizer.json") if hasattr(directory, "joinpath") else f"{directory}/tokenizer.json")
    return model


def ntf_finetune_state_dict(hf_model, kind: str) -> dict:
    """What Next-Token-Failures' finetune.py saves after loading a Hugging Face model into its own GPT
    ("gpt2") or Pythia ("neox") class, written from its utils/load.py mapping (q, k, v split from
    GPT-2's Conv1D c_attn / from GPT-NeoX's per-head interleaved query_key_value)."""
    sd = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    out = {}
    if kind == "gpt2":
        d = sd["transformer.wte.weight"].shape[1]
        out["embed_tokens.weight"] = out["lm_head.weight"] = sd["transformer.wte.weight"]
        out["pos_encoding.weight"] = sd["transformer.wpe.weight"]
        out["final_layernorm.weight"], out["final_layernorm.bias"] = sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"]
        for i in range(hf_model.config.n_layer):
            s, t = f"transformer.h.{i}", f"layers.{i}"
            for ln in ("ln_1", "ln_2"):
                out[f"{t}.{ln}.weight"], out[f"{t}.{ln}.bias"] = sd[f"{s}.{ln}.weight"], sd[f"{s}.{ln}.bias"]
            w, b = sd[f"{s}.attn.c_attn.weight"], sd[f"{s}.attn.c_attn.bias"]
            for j, n in enumerate(("queries", "keys", "values")):
                out[f"{t}.attn.{n}_linear.weight"] = w[:, j * d:(j + 1) * d].t().contiguous()
                out[f"{t}.attn.{n}_linear.bias"] = b[j * d:(j + 1) * d]
            for src, dst in (("attn.c_proj", "attn.proj"), ("mlp.c_fc", "mlp.expand"), ("mlp.c_proj", "mlp.proj")):
                out[f"{t}.{dst}.weight"] = sd[f"{s}.{src}.weight"].t().contiguous()
                out[f"{t}.{dst}.bias"] = sd[f"{s}.{src}.bias"]
        return out
    cfg = hf_model.config
    d, h = cfg.hidden_size, cfg.num_attention_heads
    out["embed_tokens.weight"], out["lm_head.weight"] = sd["gpt_neox.embed_in.weight"], sd["lm_head.weight"]
    out["final_layernorm.weight"] = sd["gpt_neox.final_layer_norm.weight"]
    out["final_layernorm.bias"] = sd["gpt_neox.final_layer_norm.bias"]
    for i in range(cfg.num_hidden_layers):
        s, t = f"gpt_neox.layers.{i}", f"layers.{i}"
        for src, dst in (("input_layernorm", "ln_1"), ("post_attention_layernorm", "ln_2"), ("attention.dense", "attn.proj"),
                         ("mlp.dense_h_to_4h", "mlp.expand"), ("mlp.dense_4h_to_h", "mlp.proj")):
            out[f"{t}.{dst}.weight"], out[f"{t}.{dst}.bias"] = sd[f"{s}.{src}.weight"], sd[f"{s}.{src}.bias"]
        for suffix in ("weight", "bias"):
            fused = sd[f"{s}.attention.query_key_value.{suffix}"]
            per_head = fused.reshape(h, 3 * (d // h), *fused.shape[1:])
            for j, n in enumerate(("queries", "keys", "values")):
                part = per_head[:, j * (d // h):(j + 1) * (d // h)]
                out[f"{t}.attn.{n}_linear.{suffix}"] = part.reshape(d, *fused.shape[1:]).contiguous()
    return out
