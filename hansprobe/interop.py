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
import re
import shutil
from pathlib import Path

import torch

from hansprobe import causal_lm, gpt2_reference
from hansprobe.errors import CheckpointError, ConfigError
from hansprobe.gpt2_reference import ACTIVATIONS
from hansprobe.resources import FLOAT, require_memory, transformer_params
from hansprobe.causal_lm import offline as _offline
from hansprobe.storage import (
    CONFIG, MODEL, atomic_write_bytes, atomic_write_json, check_finite, check_run_dir, jsonable, load_safetensors, load_weights, new_config,
    save_safetensors,
)
from hansprobe.validation import check_choice, check_float, check_int, check_mapping, number_ranges, read_json_bounded

ARCHITECTURE = "hf-gpt2"
FORMATS = ("hf", "hf-gpt2", "nanogpt", "ntf")  # hf: any causal LM the bridge boots (causal_lm.py); GPT-2 keeps its path
PARITY_TOL = 1e-4  # max |logit difference| allowed between the source model and the hooked model
TIED = "lm_head.weight"  # tied to transformer.wte.weight: stored once
ARCHIVE_SLACK = 1 << 20  # bytes a torch.save zip may hold beyond twice its own size (headers, small records)


# --- reading source files ------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file, or from a PyTorch pickle read with weights_only=True
    (a nanoGPT `ckpt.pt` dict holding "model" is unwrapped; its "model_args" are kept under
    "__model_args__")."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file; give the state dict file (.pt, .pth, .bin or .safetensors)")
    if path.suffix == ".safetensors":
        tensors, _ = load_safetensors(path)
        check_finite(tensors, path)
        return tensors
    _check_archive(path)
    import warnings

    try:
        with warnings.catch_warnings():  # torch's multi-line warnings would precede our one line
            warnings.simplefilter("ignore")
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
    odd = [k for k in obj if not isinstance(k, str)]
    if odd:
        raise CheckpointError(f"{path} holds a key that is not a parameter name ({odd[0]!r}); give a state dict of "
                              "named tensors")
    check_finite(obj, path)
    return {re.sub(r"^(_orig_mod\.|module\.)", "", k): v for k, v in obj.items()}  # torch.compile / DDP prefixes


def _check_archive(path: Path) -> None:
    """Bound what a torch.save zip may expand to before torch reads it: torch.save stores its members
    uncompressed, so a member that is compressed and large, or declared sizes adding up to much more
    than the file, is a file that would fill memory while it is read (a 2 MB file reached 2.1 GB in
    a trial). Not a zip (the legacy format): nothing to bound here."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is a damaged zip archive ({e}); check the file is complete") from None
    size = path.stat().st_size
    packed = [i for i in infos if i.compress_type != zipfile.ZIP_STORED and i.file_size > ARCHIVE_SLACK]
    declared = sum(i.file_size for i in infos)
    if packed or declared > 2 * size + ARCHIVE_SLACK:
        what = (f"a compressed member {packed[0].filename!r} declaring {packed[0].file_size:,} bytes" if packed
                else f"members declaring {declared:,} bytes in a file of {size:,}")
        raise CheckpointError(f"{path} holds {what}: torch.save stores tensors uncompressed, and hansprobe does not "
                              "expand an archive beyond its own size; re-save the state dict with torch.save or as "
                              "safetensors")


def save_state_dict_safetensors(tensors: dict[str, torch.Tensor], out: str | Path) -> None:
    """The one-time conversion: a state dict read from a pickle, written as safetensors (atomic)."""
    seen, unique = set(), {}
    for k, v in tensors.items():  # tied weights share memory: safetensors stores each tensor once
        if isinstance(v, torch.Tensor) and (v.data_ptr(), tuple(v.shape)) not in seen:
            seen.add((v.data_ptr(), tuple(v.shape)))
            unique[k] = v.contiguous()
    save_safetensors(out, unique, {"hansprobe_converted_from": "pytorch state dict"})


# --- layouts -> GPT-2 ----------------------------------------------------------------------------
class _Reads(dict):
    """A state dict that remembers which keys the conversion read, so that weights it never used
    (a layer the layout does not know, a misspelt name) are reported instead of dropped."""

    def __init__(self, sd: dict):
        super().__init__(sd)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def _names(keys, n: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _convert(convert, sd: dict, n_heads: int | None, fmt: str):
    """Run a layout conversion and refuse weights it did not use (nanoGPT's causal-mask buffers
    `attn.bias` of shape (1, 1, T, T) are not weights and are skipped)."""
    tracked = _Reads(sd)
    cfg, out = convert(tracked, n_heads)
    fmt = {"nanogpt": "nanoGPT", "ntf": "Next-Token-Failures GPT"}.get(fmt, fmt)
    unused = {k for k in sd if k not in tracked.read and not k.startswith("__")
              and not (k.endswith(".attn.bias") and sd[k].dim() == 4)}
    if unused:
        raise CheckpointError(f"{len(unused)} weights of the file are not part of a {fmt} model: {_names(unused)}; "
                              "check --format (the file may hold another architecture)")
    return cfg, out


def _matrix(sd: dict, key: str, fmt: str) -> torch.Tensor:
    t = sd[key]
    if not isinstance(t, torch.Tensor) or t.dim() != 2:
        raise CheckpointError(f"{key} must be a matrix (2-D) in a {fmt} state dict, got shape "
                              f"{tuple(getattr(t, 'shape', ()))}; the file is damaged or not {fmt}")
    return t


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
    check_int("the number of heads (n_head)", n_heads, 1)
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
    vocab, d = _matrix(sd, "transformer.wte.weight", "nanoGPT").shape
    n_layer = _n_layers(sd, r"transformer\.h\.(\d+)\.")
    ctx = _matrix(sd, "transformer.wpe.weight", "nanoGPT").shape[0]
    cfg = _gpt2_config(vocab, ctx, d, n_layer, n_heads or args.get("n_head"), "gelu")
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


def ntf_block(sd: dict, i: int, d: int, what: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Block i of a Next-Token-Failures model (its GPT and Pythia classes share the layout):
    {part: (weight, bias)} for ln_1, ln_2, queries, keys, values, attn.proj, mlp.expand, mlp.proj,
    nn.Linear weights as stored, (out, in)."""
    s = f"layers.{i}"
    qkv = [f"{s}.attn.{n}_linear" for n in ("queries", "keys", "values")]
    _require(sd, [f"{q}.weight" for q in qkv] + [f"{s}.attn.proj.weight", f"{s}.mlp.expand.weight",
                                                  f"{s}.mlp.proj.weight"], what)
    parts = {"ln_1": _ln(sd, f"{s}.ln_1", d), "ln_2": _ln(sd, f"{s}.ln_2", d)}
    for name, key in zip(("queries", "keys", "values"), qkv):
        parts[name] = (sd[f"{key}.weight"], _bias(sd, f"{key}.bias", d))
    for name, n_out in (("attn.proj", d), ("mlp.expand", 4 * d), ("mlp.proj", d)):
        parts[name] = (sd[f"{s}.{name}.weight"], _bias(sd, f"{s}.{name}.bias", n_out))
    return parts


def ntf_to_gpt2(sd: dict, n_heads: int | None = None):
    """Next-Token-Failures GPT layout (embed_tokens tied to lm_head, pos_encoding, layers.N.{ln_1,
    attn.queries_linear/keys_linear/values_linear/proj, ln_2, mlp.expand/proj}, final_layernorm;
    tanh GELU) -> (GPT2Config, GPT-2 state dict)."""
    _require(sd, ["embed_tokens.weight", "pos_encoding.weight", "final_layernorm.weight"], "Next-Token-Failures GPT")
    vocab, d = _matrix(sd, "embed_tokens.weight", "Next-Token-Failures GPT").shape
    n_layer = _n_layers(sd, r"layers\.(\d+)\.")
    ctx = _matrix(sd, "pos_encoding.weight", "Next-Token-Failures GPT").shape[0]
    cfg = _gpt2_config(vocab, ctx, d, n_layer, n_heads, "gelu_new")
    out = {"transformer.wte.weight": sd["embed_tokens.weight"], "transformer.wpe.weight": sd["pos_encoding.weight"]}
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = _ln(sd, "final_layernorm", d)
    for i in range(n_layer):
        t, parts = f"transformer.h.{i}", ntf_block(sd, i, d, "Next-Token-Failures GPT")
        out[f"{t}.ln_1.weight"], out[f"{t}.ln_1.bias"] = parts["ln_1"]
        out[f"{t}.ln_2.weight"], out[f"{t}.ln_2.bias"] = parts["ln_2"]
        qkv = [parts[n] for n in ("queries", "keys", "values")]
        out[f"{t}.attn.c_attn.weight"] = torch.cat([w for w, _ in qkv], 0).T  # (d, 3d)
        out[f"{t}.attn.c_attn.bias"] = torch.cat([b for _, b in qkv])
        for src, dst in (("attn.proj", "attn.c_proj"), ("mlp.expand", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            out[f"{t}.{dst}.weight"], out[f"{t}.{dst}.bias"] = parts[src][0].T, parts[src][1]  # Conv1D: (in, out)
    if "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"], sd["embed_tokens.weight"]):
        raise CheckpointError("lm_head.weight differs from embed_tokens.weight: untied heads are not supported")
    return cfg, out


# --- GPT-2 -> hooked model -----------------------------------------------------------------------
def check_hf_config(hf: dict) -> dict:
    """The GPT-2 config fields hansprobe builds from, checked for type, range and support (the
    parity reference computes exactly these GPT-2s), and the model's size against memory."""
    check_mapping("hf_config", hf)
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ConfigError(f"model_type is {hf.get('model_type')!r}; hansprobe reads GPT-2 models only")
    for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
        if key not in hf:
            raise ConfigError(f"the GPT-2 config has no {key!r}")
        check_int(f"GPT-2 config {key}", hf[key], 1)
    if hf["n_embd"] % hf["n_head"]:
        raise ConfigError(f"GPT-2 config n_head {hf['n_head']} does not divide n_embd {hf['n_embd']}")
    if hf.get("n_inner") is not None:
        check_int("GPT-2 config n_inner", hf["n_inner"], 1)
    check_choice("GPT-2 config activation_function", hf.get("activation_function", "gelu_new"), ACTIVATIONS)
    check_float("GPT-2 config layer_norm_epsilon", hf.get("layer_norm_epsilon", 1e-5), 0)
    for key, default in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                         ("reorder_and_upcast_attn", False), ("add_cross_attention", False)):
        if hf.get(key, default) != default:
            raise ConfigError(f"GPT-2 config {key}={hf[key]!r} is not supported (only {default}); hansprobe reads "
                              "plain GPT-2s")
    d_mlp = hf.get("n_inner") or 4 * hf["n_embd"]
    n = transformer_params(hf["n_layer"], hf["n_embd"], d_mlp, hf["vocab_size"], hf["n_positions"])
    require_memory(FLOAT * n * 3, f"a GPT-2 of {n:,} parameters (source, converted and hooked copies)",
                   "check the config's n_layer, n_embd and vocab_size")
    return hf


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
    tensors = dict(tensors)
    wte = tensors.get("transformer.wte.weight")
    if TIED in tensors and wte is not None and not (tensors[TIED].shape == wte.shape and torch.equal(tensors[TIED], wte)):
        raise CheckpointError(f"{source}: lm_head.weight differs from transformer.wte.weight; untied output heads "
                              "are not supported")
    tensors[TIED] = wte
    expected = set(model.state_dict())
    # GPT-2's causal-mask buffers (attn.bias, attn.masked_bias) are not weights; everything else is strict:
    # a missing, unexpected or mis-shaped weight is an error naming the keys, never a random init.
    load_weights(model, {k: v for k, v in tensors.items()
                         if k in expected or not k.endswith((".attn.bias", ".attn.masked_bias"))}, source)
    model.tie_weights()


def gpt2_state_dict(model) -> dict[str, torch.Tensor]:
    """What the checkpoint stores: the HF state dict without the tied head (call before bridging)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k != TIED}


def load_hf_gpt2(src: str | Path) -> tuple[object, dict, dict[str, torch.Tensor]]:
    """A `save_pretrained` directory (config.json + model.safetensors) -> (GPT2LMHeadModel, its
    checked config, the file's tensors). The weights are loaded strictly by hansprobe, never by
    `from_pretrained`, which fills missing weights with a random init and warns at most."""
    src = Path(src)
    raw = causal_lm.read_pretrained_config(src, "GPT2LMHeadModel", check_hf_config, "GPT-2 config")
    causal_lm.require_safetensors(src)
    tensors, _ = load_safetensors(src / "model.safetensors")
    check_finite(tensors, src / "model.safetensors")
    if tensors and not any(k.startswith("transformer.") for k in tensors):  # saved from GPT2Model, not the LM head
        tensors = {f"transformer.{k}": v for k, v in tensors.items()}
    blocks = sorted({int(m.group(1)) for k in tensors if (m := re.match(r"transformer\.h\.(\d+)\.", k))})
    if blocks != list(range(raw["n_layer"])):
        absent = sorted(set(range(raw["n_layer"])) - set(blocks))
        raise CheckpointError(f"{src / 'config.json'} says n_layer={raw['n_layer']} but {src / 'model.safetensors'} holds weights for "
                              f"blocks {number_ranges(blocks) or 'none'}" + (f" (missing: {number_ranges(absent)})" if absent else "")
                              + "; hansprobe never fills missing blocks with random weights — fix the config or the file")
    model = new_gpt2(raw)
    load_gpt2_weights(model, tensors, src / "model.safetensors")
    return model, raw, tensors


def imported_model(cfg: dict, device, tensors: dict[str, torch.Tensor] | None = None, source=None):
    """The hooked model of an imported checkpoint's config: its GPT-2 (seeded init, or `tensors`), bridged."""
    arch = cfg["model"].get("architecture")
    if arch != ARCHITECTURE or not isinstance(cfg["model"].get("hf_config"), dict):
        raise CheckpointError(f"unknown model architecture {arch!r} in config.json; this hansprobe reads {ARCHITECTURE!r}")
    hf = new_gpt2(cfg["model"]["hf_config"], int(cfg["seed"]))
    if tensors is not None:
        load_gpt2_weights(hf, tensors, source)
    return causal_lm.bridge_causal_lm(hf, device)


# --- binding to a task and writing the checkpoint ------------------------------------------------
def check_task_fit(hf_config: dict, task) -> None:
    """The model must take the task's tokens and its longest input; say what does not fit."""
    problems, n_ctx = [], causal_lm.context_length(hf_config)
    if hf_config["vocab_size"] < task.d_vocab:
        problems.append(f"its vocabulary has {hf_config['vocab_size']} tokens but {task.describe()} needs {task.d_vocab} "
                        f"(nodes 0..{task.n_nodes - 1}, then | = / $)")
    if n_ctx < task.n_ctx:
        problems.append(f"its context is {n_ctx} positions but {task.describe()} feeds {task.n_ctx} "
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
    logits match an independent forward of the source weights (<= PARITY_TOL), and write a
    hansprobe checkpoint to `out`. Returns its config."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    src, out = Path(src), Path(out)
    if objective.extra_heads:
        raise ConfigError(f"--objective {objective.name}: an imported model has no extra output heads to record; import "
                          "it with the objective its next-token head was trained under (e.g. teacher-forcing)")
    check_run_dir(out, overwrite)  # new, empty, or with --overwrite a checkpoint this tool wrote
    if fmt == "hf" and (not _is_gpt2_dir(src) or causal_lm.has_tokenizer(src)):  # a text-format GPT-2 too
        return _import_causal_lm(src, out, task, objective, n_heads, overwrite)
    if fmt == "hf-gpt2" and causal_lm.has_tokenizer(src):
        raise ConfigError(f"{src} holds a tokenizer: the model reads the task as text; import it with --format hf")
    if fmt in ("hf", "hf-gpt2"):
        if n_heads is not None:
            raise ConfigError(f"--n-heads is read from config.json for {fmt}; drop it")
        hf, _, source = load_hf_gpt2(src)
        reference = gpt2_reference.from_hf(source, check_hf_config(hf_config_dict(hf.config)))
    else:
        sd = read_state_dict(src)
        cfg, gpt2_sd = _convert(nanogpt_to_gpt2 if fmt == "nanogpt" else ntf_to_gpt2, sd, n_heads, fmt)
        hf = new_gpt2(check_hf_config(hf_config_dict(cfg)))
        load_gpt2_weights(hf, gpt2_sd, src)
        reference = (gpt2_reference.from_nanogpt if fmt == "nanogpt" else gpt2_reference.from_ntf)(sd, cfg.n_head)
    hf_config = hf_config_dict(hf.config)
    check_task_fit(hf_config, task)
    weights = gpt2_state_dict(hf)  # before bridging: boot_transformers wraps the module's children
    tokens = objective.inputs(task.generate(64, seed=0))
    with torch.no_grad():
        bridge = causal_lm.bridge_causal_lm(hf, "cpu")
        # The reference is an independent forward of the source file's own weights (gpt2_reference),
        # not the converted module the bridge wraps: this checks the conversion, not only the bridge.
        diff = float((gpt2_reference.logits(reference, tokens) - bridge(tokens)).abs().max())
    if not diff <= PARITY_TOL:
        raise CheckpointError(f"the hooked model's logits differ from an independent forward of the source weights by "
                              f"{diff:.2e} (> {PARITY_TOL}); the file does not hold the {fmt} model it claims, or this "
                              "is a bug — please report it with the source file")
    model = {"architecture": ARCHITECTURE, "hf_config": hf_config, "n_layers": hf_config["n_layer"],
             "n_heads": hf_config["n_head"], "d_model": hf_config["n_embd"]}
    config = {**new_config(task, objective, model, None, seed=0), "step": None,
              "d_vocab": hf_config["vocab_size"], "n_ctx": hf_config["n_positions"],
              "imported_from": {"format": fmt, "path": str(src.resolve()), "sha256": _sha256(src), "max_logit_diff": diff,
                                "parity_tolerance": PARITY_TOL,
                                "parity_reference": "independent plain-torch forward of the source weights (gpt2_reference)"}}
    _write_import(out, weights, config, fmt, overwrite)
    return config


def _write_import(out: Path, weights: dict, config: dict, fmt: str, overwrite: bool, extra: dict | None = None) -> None:
    if overwrite and out.exists():  # nothing of the replaced run may be read as this model's
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in (extra or {}).items():  # before config.json: a directory with a config is complete
        atomic_write_bytes(out / name, data)
    save_safetensors(out / MODEL, weights, {"hansprobe_imported_from": fmt})
    atomic_write_json(out / CONFIG, jsonable(config))


def _is_gpt2_dir(src: Path) -> bool:
    path = src / "config.json"
    if not path.is_file():
        return False
    raw = read_json_bounded(path, "model config", error=CheckpointError, hint="; give the directory written by save_pretrained")
    return isinstance(raw, dict) and raw.get("model_type") == "gpt2"


def _import_causal_lm(src: Path, out: Path, task, objective, n_heads, overwrite: bool) -> dict:
    """`--format hf` for a causal LM other than GPT-2: checked against transformers' own forward."""
    if n_heads is not None:
        raise ConfigError("--n-heads is read from config.json for hf; drop it")
    hf, _ = causal_lm.read_causal_lm_dir(src)
    return write_causal_lm_import(hf, lambda tokens: hf(tokens).logits, "transformers' own forward of the same weights",
                                  src, src if causal_lm.has_tokenizer(src) else None, out, task, objective, "hf", overwrite)


def write_causal_lm_import(hf, reference, said: str, src: Path, tokenizer_dir: Path | None, out: Path, task, objective,
                           fmt: str, overwrite: bool) -> dict:
    """Check the bridge of transformers module `hf` against `reference(tokens) -> logits` (computed
    before the bridge wraps the module; on the text the model reads where `tokenizer_dir` holds its
    tokenizer) and write the "hf-causal-lm" checkpoint. `said`: what the reference is."""
    hf_config = hf_config_dict(hf.config)
    if not hf_config.get("architectures"):  # a module built here (a converted layout) names its own class
        hf_config["architectures"] = [type(hf).__name__]
    text = text_format(tokenizer_dir, task, objective.teacherless, hf_config) if tokenizer_dir is not None else None
    if text is None:
        check_task_fit(hf_config, task)
    weights = causal_lm.causal_lm_state_dict(hf)
    tokens = objective.inputs(task.generate(causal_lm.PARITY_GRAPHS, seed=0))
    if text is not None:
        tokens = text.text_inputs(tokens)  # the text the model reads (the view's own mapping)
    with torch.no_grad():
        reference = reference(tokens)
        bridge = causal_lm.bridge_causal_lm(hf, "cpu")
        diff, graph, position = causal_lm.parity(reference, bridge(tokens))
    if not diff <= causal_lm.PARITY_TOL:
        raise CheckpointError(f"the hooked model's logits differ from {said} by {diff:.2e} at graph {graph}, position "
                              f"{position} (> {causal_lm.PARITY_TOL}); the file does not hold the model it claims, or this "
                              "is a bug — please report it with the model's config.json")
    model = {"architecture": causal_lm.ARCHITECTURE, "hf_config": hf_config, "n_layers": bridge.cfg.n_layers,
             "n_heads": bridge.cfg.n_heads, "d_model": bridge.cfg.d_model}
    config = {**new_config(task, objective, model, None, seed=0), "step": None,
              "d_vocab": hf_config["vocab_size"], "n_ctx": causal_lm.context_length(hf_config),
              "imported_from": {"format": fmt, "path": str(src.resolve()), "sha256": _sha256(src), "max_logit_diff": diff,
                                "worst_at": {"graph": graph, "position": position},
                                "parity_tolerance": causal_lm.PARITY_TOL, "parity_reference": said}}
    if text is not None:
        model["text_format"] = text.table.to_dict()
        config["imported_from"]["parity_positions"] = "text positions"
        config["imported_from"]["comma_accuracy"] = comma_accuracy(reference, text, tokens.shape[1])
        config["d_vocab"] = task.d_vocab  # what the analyses see: the text logits at the task's tokens
    extra = {causal_lm.TOKENIZER: (tokenizer_dir / causal_lm.TOKENIZER).read_bytes()} if text is not None else {}
    _write_import(out, weights, config, fmt, overwrite, extra)
    return config


def text_format(src: Path, task, need_dummy: bool, hf_config: dict):
    """The `TextLayout` of a model with a tokenizer: its table checked against the task and the model."""
    from hansprobe.text_model import TextLayout

    table = causal_lm.text_table(causal_lm.read_tokenizer(src), task, required_dummy=need_dummy)
    ids = [*table.node.tolist(), table.comma, table.pipe, table.slash, table.equals]
    if max(ids) >= hf_config["vocab_size"]:
        raise ConfigError(f"the tokenizer gives token id {max(ids)} for the task, but the model has "
                          f"{hf_config['vocab_size']} embeddings; the tokenizer belongs to another model")
    layout = TextLayout(task, table)
    need, n_ctx = layout.text_len, causal_lm.context_length(hf_config)
    if n_ctx < need:
        raise ConfigError(f"the model does not fit the task: its context is {n_ctx} positions but {task.describe()} "
                          f"as text is {need} tokens long; state the task it was trained on (--degree, --path-len, --nodes)")
    return layout


def comma_accuracy(reference: torch.Tensor, text, length: int) -> float:
    """The share of commas between answer slots that transformers' forward predicts (the analyses skip them)."""
    p = text.task.prefix_len
    at = text.token_at[p:length]  # each fed answer slot predicts the comma after it
    return float((reference[:, at].argmax(-1) == text.table.comma).float().mean()) if len(at) else float("nan")
