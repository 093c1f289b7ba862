"""Analyse models trained elsewhere: a Hugging Face GPT-2 directory, a nanoGPT state dict or a
Next-Token-Failures (NTF) GPT state dict becomes a normal hansprobe checkpoint.

Every source is first expressed as a Hugging Face `GPT2LMHeadModel` (nanoGPT and the NTF GPT are
pre-LayerNorm GPT-2s with other parameter names and, for nanoGPT, exact GELU), then wrapped by
TransformerLens's own path from a local HF module to a hooked model,
`TransformerBridge.boot_transformers(local_dir, hf_model=...)` — no weights are hand-mapped into
TransformerLens. The checkpoint stores the HF config in config.json ("architecture": "hf-gpt2") and
the HF state dict in model.safetensors. Nothing is fetched from a hub; pickled files are read only
with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from hansprobe.errors import CheckpointError, ConfigError

ARCHITECTURE = "hf-gpt2"
FORMATS = ("hf-gpt2", "nanogpt", "ntf")
PARITY_TOL = 1e-4  # max |logit difference| allowed between the source model and the hooked model
TIED = "lm_head.weight"  # tied to transformer.wte.weight: stored once


def _offline() -> None:
    # Local paths only: never let transformers or TransformerLens reach for a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # config warnings about GPT-2's text token ids mean nothing for our tokens
    hf_logging.disable_progress_bar()


# --- reading source files ------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file, or from a PyTorch pickle read with weights_only=True
    (a nanoGPT `ckpt.pt` dict holding "model" is unwrapped; its "model_args" are kept under
    "__model_args__")."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file; give the state dict file (.pt, .pth, .bin or .safetensors)")
    if path.suffix == ".safetensors":
        from hansprobe.checkpoint import load_safetensors

        tensors, _ = load_safetensors(path)
        return tensors
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for forbidden globals, RuntimeError/EOFError for damaged files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise CheckpointError(f"{path} holds Python objects beyond tensors, and hansprobe never unpickles code: "
                                  "re-save it as a plain state dict (torch.save(model.state_dict(), ...)) or as safetensors") from None
        raise CheckpointError(f"{path} is not a readable PyTorch state dict ({first}); check the file is complete") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):  # nanoGPT's ckpt.pt
        args = obj.get("model_args") if isinstance(obj.get("model_args"), dict) else {}
        obj = dict(obj["model"])
        obj["__model_args__"] = args
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    return {re.sub(r"^(_orig_mod\.|module\.)", "", k): v for k, v in obj.items()}  # torch.compile / DDP prefixes


def save_state_dict_safetensors(tensors: dict[str, torch.Tensor], out: str | Path) -> None:
    """The one-time conversion: a state dict read from a pickle, written as safetensors (atomic)."""
    from hansprobe.checkpoint import save_safetensors

    seen, unique = set(), {}
    for k, v in tensors.items():  # tied weights share memory: safetensors stores each tensor once
        if isinstance(v, torch.Tensor) and (v.data_ptr(), tuple(v.shape)) not in seen:
            seen.add((v.data_ptr(), tuple(v.shape)))
            unique[k] = v.contiguous()
    save_safetensors(out, unique, {"hansprobe_converted_from": "pytorch state dict"})


# --- layouts -> GPT-2 ----------------------------------------------------------------------------
def _require(sd: dict, keys: list[str], fmt: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        found = ", ".join(sorted(k for k in sd if not k.startswith("__"))[:4])
        raise CheckpointError(f"not a {fmt} state dict: missing {', '.join(missing[:3])} (found {found}, ...); "
                              f"check --format")


def _n_layers(sd: dict, pattern: str) -> int:
    layers = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    if not layers or sorted(layers) != list(range(len(layers))):
        raise CheckpointError(f"cannot find numbered blocks ({pattern}) in the state dict; check --format")
    return len(layers)


def _gpt2_config(vocab: int, ctx: int, d: int, n_layer: int, n_heads: int | None, act: str):
    from transformers import GPT2Config

    if n_heads is None:
        raise ConfigError("the file does not store the number of heads; pass --n-heads")
    if d % n_heads:
        raise ConfigError(f"--n-heads {n_heads} does not divide d_model {d}")
    return GPT2Config(vocab_size=vocab, n_positions=ctx, n_embd=d, n_layer=n_layer, n_head=n_heads,
                      n_inner=None, activation_function=act, layer_norm_epsilon=1e-5, resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, bos_token_id=None,
                      eos_token_id=None)


def _ln(src: dict, prefix: str, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    return src[f"{prefix}.weight"], src.get(f"{prefix}.bias", torch.zeros(d))  # bias=False variants


def _bias(src: dict, key: str, n: int) -> torch.Tensor:
    return src.get(key, torch.zeros(n))


def nanogpt_to_gpt2(sd: dict, n_heads: int | None = None):
    """nanoGPT layout (transformer.wte/wpe/h.N.{ln_1,attn.c_attn,attn.c_proj,ln_2,mlp.c_fc,mlp.c_proj}/ln_f,
    lm_head; nn.Linear weights, exact GELU) -> (GPT2Config, GPT-2 state dict)."""
    _require(sd, ["transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight"], "nanoGPT")
    args = sd.get("__model_args__") or {}
    vocab, d = sd["transformer.wte.weight"].shape
    n_layer = _n_layers(sd, r"transformer\.h\.(\d+)\.")
    cfg = _gpt2_config(vocab, sd["transformer.wpe.weight"].shape[0], d, n_layer, n_heads or args.get("n_head"), "gelu")
    out = {"transformer.wte.weight": sd["transformer.wte.weight"], "transformer.wpe.weight": sd["transformer.wpe.weight"]}
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = _ln(sd, "transformer.ln_f", d)
    for i in range(n_layer):
        s, t = f"transformer.h.{i}", f"transformer.h.{i}"
        _require(sd, [f"{s}.attn.c_attn.weight", f"{s}.attn.c_proj.weight", f"{s}.mlp.c_fc.weight", f"{s}.mlp.c_proj.weight"], "nanoGPT")
        out[f"{t}.ln_1.weight"], out[f"{t}.ln_1.bias"] = _ln(sd, f"{s}.ln_1", d)
        out[f"{t}.ln_2.weight"], out[f"{t}.ln_2.bias"] = _ln(sd, f"{s}.ln_2", d)
        for name, n_out in (("attn.c_attn", 3 * d), ("attn.c_proj", d), ("mlp.c_fc", 4 * d), ("mlp.c_proj", d)):
            out[f"{t}.{name}.weight"] = sd[f"{s}.{name}.weight"].T  # nn.Linear (out, in) -> Conv1D (in, out)
            out[f"{t}.{name}.bias"] = _bias(sd, f"{s}.{name}.bias", n_out)
    if "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"], sd["transformer.wte.weight"]):
        raise CheckpointError("lm_head.weight differs from transformer.wte.weight: untied heads are not supported")
    return cfg, out


def ntf_to_gpt2(sd: dict, n_heads: int | None = None):
    """Next-Token-Failures GPT layout (embed_tokens tied to lm_head, pos_encoding, layers.N.{ln_1,
    attn.queries_linear/keys_linear/values_linear/proj, ln_2, mlp.expand/proj}, final_layernorm;
    tanh GELU) -> (GPT2Config, GPT-2 state dict)."""
    _require(sd, ["embed_tokens.weight", "pos_encoding.weight", "final_layernorm.weight"], "Next-Token-Failures GPT")
    vocab, d = sd["embed_tokens.weight"].shape
    n_layer = _n_layers(sd, r"layers\.(\d+)\.")
    cfg = _gpt2_config(vocab, sd["pos_encoding.weight"].shape[0], d, n_layer, n_heads, "gelu_new")
    out = {"transformer.wte.weight": sd["embed_tokens.weight"], "transformer.wpe.weight": sd["pos_encoding.weight"]}
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = _ln(sd, "final_layernorm", d)
    for i in range(n_layer):
        s, t = f"layers.{i}", f"transformer.h.{i}"
        qkv = [f"{s}.attn.{n}_linear" for n in ("queries", "keys", "values")]
        _require(sd, [f"{q}.weight" for q in qkv] + [f"{s}.attn.proj.weight", f"{s}.mlp.expand.weight",
                                                      f"{s}.mlp.proj.weight"], "Next-Token-Failures GPT")
        out[f"{t}.ln_1.weight"], out[f"{t}.ln_1.bias"] = _ln(sd, f"{s}.ln_1", d)
        out[f"{t}.ln_2.weight"], out[f"{t}.ln_2.bias"] = _ln(sd, f"{s}.ln_2", d)
        out[f"{t}.attn.c_attn.weight"] = torch.cat([sd[f"{q}.weight"] for q in qkv], 0).T  # (d, 3d)
        out[f"{t}.attn.c_attn.bias"] = torch.cat([_bias(sd, f"{q}.bias", d) for q in qkv])
        for src, dst, n_out in (("attn.proj", "attn.c_proj", d), ("mlp.expand", "mlp.c_fc", 4 * d), ("mlp.proj", "mlp.c_proj", d)):
            out[f"{t}.{dst}.weight"] = sd[f"{s}.{src}.weight"].T
            out[f"{t}.{dst}.bias"] = _bias(sd, f"{s}.{src}.bias", n_out)
    return cfg, out


# --- GPT-2 -> hooked model -----------------------------------------------------------------------
def hf_config_dict(cfg) -> dict:
    return json.loads(cfg.to_json_string(use_diff=False))


def new_gpt2(hf_config: dict, seed: int = 0):
    """A GPT2LMHeadModel of this config with eager attention (hooks need the pattern), seeded init."""
    from transformers import GPT2Config, GPT2LMHeadModel

    _offline()
    cfg = GPT2Config.from_dict({k: v for k, v in hf_config.items() if k not in ("transformers_version",)})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel._from_config(cfg, attn_implementation="eager")
    return model.eval()


def load_gpt2_weights(model, tensors: dict[str, torch.Tensor], source) -> None:
    from hansprobe.checkpoint import load_weights

    tensors = dict(tensors)
    tensors.setdefault(TIED, tensors.get("transformer.wte.weight"))
    expected = set(model.state_dict())
    load_weights(model, {k: v for k, v in tensors.items() if k in expected or not k.endswith(".attn.bias")}, source)
    model.tie_weights()


def gpt2_state_dict(model) -> dict[str, torch.Tensor]:
    """What the checkpoint stores: the HF state dict without the tied head (call before bridging)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k != TIED}


def bridge_from_hf(hf_model, device: str | torch.device = "cpu"):
    """TransformerLens's own route from a local HF module to a hooked `TransformerBridge`."""
    from transformer_lens.model_bridge import TransformerBridge

    _offline()
    hf_model = hf_model.to(device).eval()
    with tempfile.TemporaryDirectory() as d:  # boot_transformers reads the config from a local directory
        hf_model.config.to_json_file(str(Path(d) / "config.json"))
        bridge = TransformerBridge.boot_transformers(d, hf_model=hf_model, device=str(device))
    return bridge.eval()


def load_hf_gpt2(src: str | Path):
    """A `save_pretrained` directory (config.json + model.safetensors) -> GPT2LMHeadModel, offline."""
    from transformers import GPT2LMHeadModel

    src = Path(src)
    if not (src / "config.json").is_file():
        raise CheckpointError(f"{src} has no config.json; give the directory written by GPT2LMHeadModel.save_pretrained")
    kind = json.loads((src / "config.json").read_text()).get("model_type")
    if kind != "gpt2":
        raise CheckpointError(f"{src}/config.json has model_type {kind!r}; --format hf-gpt2 reads GPT-2 models only")
    if not (src / "model.safetensors").is_file():
        raise CheckpointError(f"{src} has no model.safetensors; re-save with save_pretrained(safe_serialization=True) "
                              "(hansprobe does not unpickle pytorch_model.bin)")
    _offline()
    try:
        return GPT2LMHeadModel.from_pretrained(src, attn_implementation="eager", local_files_only=True).eval()
    except Exception as e:
        raise CheckpointError(f"transformers could not load {src}: {str(e).splitlines()[0]}") from None


def imported_model(cfg: dict, device, tensors: dict[str, torch.Tensor] | None = None, source=None):
    """The hooked model of an imported checkpoint's config: its GPT-2 (seeded init, or `tensors`), bridged."""
    arch = cfg["model"].get("architecture")
    if arch != ARCHITECTURE or not isinstance(cfg["model"].get("hf_config"), dict):
        raise CheckpointError(f"unknown model architecture {arch!r} in config.json; this hansprobe reads {ARCHITECTURE!r}")
    hf = new_gpt2(cfg["model"]["hf_config"], int(cfg["seed"]))
    if tensors is not None:
        load_gpt2_weights(hf, tensors, source)
    return bridge_from_hf(hf, device)


# --- binding to a task and writing the checkpoint ------------------------------------------------
def check_task_fit(hf_config: dict, task) -> None:
    """The model must take the task's tokens and its longest input; say what does not fit."""
    problems = []
    if hf_config["vocab_size"] < task.d_vocab:
        problems.append(f"its vocabulary has {hf_config['vocab_size']} tokens but {task.describe()} needs {task.d_vocab} "
                        f"(nodes 0..{task.n_nodes - 1}, then | = / $)")
    if hf_config["n_positions"] < task.n_ctx:
        problems.append(f"its context is {hf_config['n_positions']} positions but {task.describe()} feeds {task.n_ctx} "
                        f"(the prompt and {task.target_len - 1} answer tokens)")
    if problems:
        raise ConfigError("the model does not fit the task: " + "; ".join(problems)
                          + "; state the task it was trained on (--degree, --path-len, --nodes)")


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def import_model(src: str | Path, fmt: str, out: str | Path, task, objective, n_heads: int | None = None,
                 overwrite: bool = False) -> dict:
    """Read `src` in format `fmt`, bind it to `task` and `objective`, check that the hooked model's
    logits match the GPT-2 it came from (<= PARITY_TOL), and write a hansprobe checkpoint to `out`.
    Returns its config."""
    from hansprobe.analyses.base import _jsonable
    from hansprobe.checkpoint import CONFIG, MODEL, atomic_write_json, new_config, save_safetensors

    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    src, out = Path(src), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(f"{out} exists and is not empty; pass --overwrite to replace it")
    if fmt == "hf-gpt2":
        if n_heads is not None:
            raise ConfigError("--n-heads is read from config.json for hf-gpt2; drop it")
        hf = load_hf_gpt2(src)
    else:
        sd = read_state_dict(src)
        cfg, gpt2_sd = (nanogpt_to_gpt2 if fmt == "nanogpt" else ntf_to_gpt2)(sd, n_heads)
        hf = new_gpt2(hf_config_dict(cfg))
        load_gpt2_weights(hf, gpt2_sd, src)
    hf_config = hf_config_dict(hf.config)
    check_task_fit(hf_config, task)
    weights = gpt2_state_dict(hf)  # before bridging: boot_transformers wraps the module's children
    tokens = objective.inputs(task.generate(64, seed=0))
    with torch.no_grad():
        reference = hf(tokens).logits
        bridge = bridge_from_hf(hf, "cpu")
        diff = float((reference - bridge(tokens)).abs().max())
    if not diff <= PARITY_TOL:
        raise CheckpointError(f"the hooked model's logits differ from the source model's by {diff:.2e} (> {PARITY_TOL}); "
                              "please report this with the source file")
    model = {"architecture": ARCHITECTURE, "hf_config": hf_config, "n_layers": hf_config["n_layer"],
             "n_heads": hf_config["n_head"], "d_model": hf_config["n_embd"]}
    config = {**new_config(task, objective, model, None, seed=0), "step": None,
              "d_vocab": hf_config["vocab_size"], "n_ctx": hf_config["n_positions"],
              "imported_from": {"format": fmt, "path": str(src.resolve()), "sha256": _sha256(src), "max_logit_diff": diff,
                                "parity_tolerance": PARITY_TOL}}
    if overwrite and out.exists():  # nothing of the replaced run may be read as this model's
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(out / MODEL, weights, {"hansprobe_imported_from": fmt})
    atomic_write_json(out / CONFIG, _jsonable(config))
    return config
