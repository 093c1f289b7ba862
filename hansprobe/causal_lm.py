"""Hugging Face causal language models of any architecture the TransformerLens bridge boots (GPT-NeoX
and Pythia, Llama and Mistral, Phi, Qwen, ...), trained on hansprobe's integer tokens.

Importing a `save_pretrained` directory (config.json + model.safetensors): the config is checked
(one causal-LM class the bridge supports, no `auto_map`: code in a model directory is never run),
then transformers' own `from_pretrained` loads it from local files only (it knows each
architecture's renamed weights); any weight it reports missing, unexpected or mis-shaped is an
error, never a random init. TransformerLens's `boot_transformers(local_dir, hf_model=...)` wraps it
with the usual hook names, and the bridge's logits are checked against transformers' forward of the
same weights (`PARITY_TOL`), naming the graph and position that differ most. A hansprobe checkpoint
of such a model is rebuilt from its stored config (`from_config`) and loaded strictly by hansprobe.

A model that reads the task as text through a subword tokenizer (tokenizer.json beside the
weights, as a fine-tuning on the Next-Token-Failures text writes it) is wrapped in a
`text_model.TextFormatModel`: the tokenizer's table of the task's tokens (`TextTokens`) is stored in
config.json and the tokenizer copied beside the weights; loading re-derives the table from that
copy and refuses one that differs.

These models run the hooked bridge everywhere: hansprobe's fused fast paths are written for its own
GPT-2-like layout, and `fused.training_view` falls back to the bridge on any other (same answers,
slower: docs/benchmarks.md). GPT-2 directories keep their own path (interop.py), whose parity
reference is an independent forward, and are bridged here too. A model that reads the task as text
through a subword tokenizer is seen at the integer layout's sites (below).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from hansprobe.errors import CheckpointError, ConfigError
from hansprobe.resources import FLOAT, require_memory, transformer_params
from hansprobe.storage import check_finite, load_weights
from hansprobe.validation import check_int, check_mapping, read_json_bounded

ARCHITECTURE = "hf-causal-lm"
PARITY_TOL = 1e-4  # max |logit difference| between transformers' forward and the bridge's, fp32
PARITY_GRAPHS = 64


def offline() -> None:
    # Local paths only: never let transformers or TransformerLens reach for a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # config warnings about GPT-2's text token ids mean nothing for our tokens
    hf_logging.disable_progress_bar()


def supported_architectures() -> set[str]:
    """The Hugging Face model classes TransformerLens's bridge has an adapter for (its own list)."""
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    return {a for a in SUPPORTED_ARCHITECTURES if a.endswith(("ForCausalLM", "LMHeadModel"))}


def config_size(hf: dict, key: str, *alternatives: str) -> int:
    for k in (key, *alternatives):
        if k in hf:
            return check_int(f"config {k}", hf[k], 1)
    raise ConfigError(f"the config has no {key!r}; give the config.json that save_pretrained wrote")


def config_sizes(hf: dict) -> tuple[int, int, int, int, int]:
    """(vocab, d_model, layers, d_mlp, heads) of a causal-LM config, under any architecture's names."""
    d = config_size(hf, "hidden_size", "n_embd", "d_model")
    d_mlp = config_size(hf, "intermediate_size", "n_inner") if hf.get("intermediate_size", hf.get("n_inner")) else 4 * d
    return (config_size(hf, "vocab_size"), d, config_size(hf, "num_hidden_layers", "n_layer", "num_layers"), d_mlp,
            config_size(hf, "num_attention_heads", "n_head"))


def context_length(hf: dict) -> int:
    """The longest input the model's positions allow (absolute embeddings or the rotary range it was configured for)."""
    return config_size(hf, "max_position_embeddings", "n_positions", "n_ctx")


def check_causal_lm_config(hf: dict) -> dict:
    """A causal-LM config hansprobe can build: one architecture, a causal-LM class the bridge supports,
    a model type transformers knows, no remote code; its size checked against memory."""
    from transformers import CONFIG_MAPPING

    check_mapping("hf_config", hf)
    if hf.get("auto_map"):
        raise ConfigError("config.json asks for remote code (auto_map); hansprobe never runs code from a model "
                          "directory: save the model with a transformers class instead")
    archs = hf.get("architectures")
    if not (isinstance(archs, list) and len(archs) == 1 and isinstance(archs[0], str)):
        raise ConfigError(f"config.json names architectures {archs!r}; give the directory save_pretrained wrote for one "
                          "causal-LM class (e.g. LlamaForCausalLM)")
    if archs[0] not in supported_architectures():
        raise ConfigError(f"architecture {archs[0]} is not one TransformerLens's bridge boots as a causal LM; supported "
                          "include GPT2LMHeadModel, GPTNeoXForCausalLM, LlamaForCausalLM, MistralForCausalLM, "
                          "PhiForCausalLM, Qwen2ForCausalLM")
    if hf.get("model_type") not in CONFIG_MAPPING:
        raise ConfigError(f"model_type {hf.get('model_type')!r} is not one this transformers knows")
    vocab, d, layers, d_mlp, _ = config_sizes(hf)
    n = transformer_params(layers, d, d_mlp, vocab, context_length(hf))
    require_memory(FLOAT * n * 3, f"a {archs[0]} of about {n:,} parameters (source, loaded and hooked copies)",
                   "check the config's num_hidden_layers, hidden_size and vocab_size")
    return hf


def new_causal_lm(hf_config: dict, seed: int = 0):
    """The transformers module of this config with eager attention, seeded initialisation, in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    offline()
    fields = {k: v for k, v in hf_config.items() if k not in ("transformers_version", "model_type", "architectures")}
    cfg = AutoConfig.for_model(hf_config["model_type"], **fields)
    cfg.architectures = list(hf_config["architectures"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", trust_remote_code=False)
    return model.eval()


def _tied_names(model) -> list[str]:
    """The state-dict names of the input embedding when the output head shares it (tie_word_embeddings):
    both names hold one tensor; save_pretrained writes one of them."""
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    if inp is None or out is None or out.weight is not inp.weight:
        return []
    return [k for k, v in model.state_dict(keep_vars=True).items() if v is inp.weight]


def load_causal_lm_weights(model, tensors: dict[str, torch.Tensor], source) -> None:
    """Load `tensors` strictly; of a tied embedding and head, the file may hold one name (as save_pretrained writes)."""
    tensors = dict(tensors)
    tied = _tied_names(model)
    present = [k for k in tied if k in tensors]
    if present:
        if any(not torch.equal(tensors[k], tensors[present[0]]) for k in present[1:]):
            raise CheckpointError(f"{source}: {' and '.join(present)} differ but the config ties them "
                                  "(tie_word_embeddings); the weights belong to another model")
        tensors.update({k: tensors[present[0]] for k in tied})
    load_weights(model, tensors, source)
    model.tie_weights()


def causal_lm_state_dict(model) -> dict[str, torch.Tensor]:
    """What the checkpoint stores: the module's state dict, a tied embedding and head once."""
    drop = set(_tied_names(model)[1:])
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k not in drop}


def integer_tokenizer(vocab_size: int):
    """A word-level tokenizer whose token i is the text "i": hansprobe's models read integer tokens,
    and the bridge wants a tokenizer (it would otherwise look for one beside the config)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({str(i): i for i in range(vocab_size)}, unk_token="0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="0")


def bridge_causal_lm(hf_model, device: str | torch.device = "cpu"):
    """TransformerLens's own route from a local transformers module (GPT-2 too) to a hooked
    `TransformerBridge`, with the integer tokenizer (so `to_tokens` reads hansprobe's tokens)."""
    from transformer_lens.model_bridge import TransformerBridge

    offline()
    hf_model = hf_model.to(device).eval()
    with tempfile.TemporaryDirectory() as d:  # boot_transformers reads the config from a local directory
        hf_model.config.to_json_file(str(Path(d) / "config.json"))
        bridge = TransformerBridge.boot_transformers(d, hf_model=hf_model, device=str(device),
                                                     tokenizer=integer_tokenizer(hf_model.config.vocab_size))
    return bridge.eval()


def read_pretrained_config(src: Path, what: str, check, kind: str = "model config") -> dict:
    """config.json of a `save_pretrained` directory (written by class `what`), read bounded and passed
    through `check`; each problem one line naming the file (and the `kind` of config it should be)."""
    path = src / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{src} has no config.json; give the directory written by {what}.save_pretrained")
    raw = read_json_bounded(path, kind, error=CheckpointError, hint="; give the directory written by save_pretrained")
    try:
        check(raw)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return raw


def require_safetensors(src: Path) -> Path:
    """The directory's single model.safetensors, or one line saying how to re-save it."""
    if not (src / "model.safetensors").is_file():
        hint = ("sharded checkpoints (model.safetensors.index.json) are not supported; re-save it in one file"
                if (src / "model.safetensors.index.json").is_file() else
                "re-save with save_pretrained(safe_serialization=True) (hansprobe does not unpickle pytorch_model.bin)")
        raise CheckpointError(f"{src} has no model.safetensors; {hint}")
    return src / "model.safetensors"


def read_causal_lm_dir(src: str | Path) -> tuple[object, dict]:
    """A `save_pretrained` directory -> (the transformers module with its weights, its checked config)."""
    src = Path(src)
    raw = read_pretrained_config(src, "AutoModelForCausalLM", check_causal_lm_config)
    require_safetensors(src)
    return load_pretrained_strictly(src), raw


def load_pretrained_strictly(src: Path):
    """transformers' own loading (it knows each architecture's renamed weights, e.g. GPT-NeoX's
    embed_out), local files only, no remote code, fp32, eager attention; any weight missing,
    unexpected or mis-shaped is an error naming it, never a random init."""
    from transformers import AutoModelForCausalLM

    offline()
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            src, local_files_only=True, trust_remote_code=False, use_safetensors=True, attn_implementation="eager",
            dtype=torch.float32, output_loading_info=True)
    except (RuntimeError, ValueError, OSError) as e:  # e.g. a weight whose shape the config contradicts
        said = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"the weights in {src / 'model.safetensors'} do not match the model its config describes "
                              f"(transformers: {said}); the weights belong to another model or the config was edited") from None
    problems = [f"{len(v)} {k.replace('_keys', '').replace('_', ' ')} ({', '.join(map(str, list(v)[:4]))})"
                for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")]
    if problems:
        raise CheckpointError(f"the weights in {src / 'model.safetensors'} do not match the model its config describes: "
                              f"{'; '.join(problems)}; the weights belong to another model or the file is incomplete")
    check_finite(dict(model.state_dict()), src / "model.safetensors")
    return model.eval()


def parity(reference: torch.Tensor, logits: torch.Tensor) -> tuple[float, int, int]:
    """(max |logit difference|, graph, position where it is) between two (B, T, V) logits."""
    per_position = (reference.float() - logits.float()).abs().amax(-1)  # (B, T)
    graph, position = divmod(int(per_position.argmax()), per_position.shape[1])
    return float(per_position.max()), graph, position


def imported_causal_lm(cfg: dict, device, tensors: dict[str, torch.Tensor] | None = None, source=None, task=None):
    """The hooked model of an imported causal-LM checkpoint's config (seeded init, or `tensors`), bridged;
    a text-format one (config["model"]["text_format"]) wrapped at the integer sites of `task`."""
    model = new_causal_lm(cfg["model"]["hf_config"], int(cfg["seed"]))
    if tensors is not None:
        load_causal_lm_weights(model, tensors, source)
    stored = cfg["model"].get("text_format")
    if stored is None:
        return bridge_causal_lm(model, device)
    table = stored_table(stored, task, cfg["model"]["hf_config"]["vocab_size"])
    if source is not None:  # the tokenizer beside the weights must give the stored table
        run = Path(source).parent
        tokenizer = read_tokenizer(run.parent if run.name == "snapshots" else run)
        again = text_table(tokenizer, task, required_dummy=False)
        if again.to_dict() != table.to_dict():
            raise CheckpointError(f"{Path(source).parent / TOKENIZER} gives another table of the task's tokens than "
                                  "config.json records; the tokenizer was replaced: restore it or re-import the model")
    return text_format_model(model, task, table, device)


def text_format_model(hf_model, task, table, device, bridged: bool = True):
    """The transformers module seen at the integer layout's sites (`TextFormatModel`): bridged (hooks,
    for the analyses), or itself (`bridged=False`, for training: a bridge splits fused QKV weights into
    parameters of its own, which would leave the module's own weights, the ones a checkpoint stores,
    untrained)."""
    from hansprobe.text_model import TextFormatModel

    hf_model = hf_model.to(device)
    if bridged:
        return TextFormatModel(bridge_causal_lm(hf_model, device), task, table).to(device)
    live = {k: v for k, v in hf_model.state_dict(keep_vars=True).items() if k not in set(_tied_names(hf_model)[1:])}
    return TextFormatModel(hf_model.train(), task, table, live).to(device)


# --- the text format ----------------------------------------------------------------------------
TOKENIZER = "tokenizer.json"
TOKENIZER_MAX_BYTES = 64 << 20  # real ones are a few MB (GPT-2's 1.4 MB, Llama 3's 9 MB)


def has_tokenizer(src: Path) -> bool:
    return (src / TOKENIZER).is_file() or (src / "tokenizer_config.json").is_file()


def read_tokenizer(src: Path):
    """The directory's tokenizer.json as a `tokenizers.Tokenizer` (a JSON file: no code runs)."""
    from tokenizers import Tokenizer

    path = src / TOKENIZER
    if not path.is_file():
        raise CheckpointError(f"{src} has no {TOKENIZER} (a slow tokenizer's files are not read); save the model's "
                              "fast tokenizer beside it with tokenizer.save_pretrained")
    if path.stat().st_size > TOKENIZER_MAX_BYTES:  # read whole (and copied beside the weights): bounded first
        raise CheckpointError(f"{path} is {path.stat().st_size:,} bytes, more than a tokenizer file holds "
                              f"({TOKENIZER_MAX_BYTES:,} at most); give the tokenizer.json save_pretrained wrote")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises its own Exception type on a bad file
        said = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"{path} is not a tokenizer file the tokenizers library reads ({said}); "
                              "re-save it with tokenizer.save_pretrained") from None


def text_table(tokenizer, task, required_dummy: bool):
    """The task's tokens under `tokenizer` (TextTokens, checked), with the teacherless `$` where it is whole."""
    from hansprobe.tasks.text_tokens import TextTokens

    return TextTokens.from_tokenizer(tokenizer, task).with_dummy(tokenizer, required=required_dummy)


def stored_table(stored: dict, task, vocab_size: int):
    """config.json's table of the task's tokens, checked against the task and the model's vocabulary."""
    from hansprobe.tasks.text_tokens import TextTokens

    check_mapping("model.text_format", stored)
    node = stored.get("node")
    ids = [stored.get(k) for k in ("comma", "pipe", "slash", "equals")] + ([stored["dummy"]] if stored.get("dummy") is not None else [])
    if not (isinstance(node, list) and len(node) == task.n_nodes and all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab_size for i in [*node, *ids])):
        raise ConfigError(f"config.json's model.text_format does not hold {task.n_nodes} node tokens and the separators "
                          f"as token ids below {vocab_size}; the config was edited: re-import the model")
    return TextTokens(torch.tensor(node, dtype=torch.long), *ids[:4], goal_first=bool(stored.get("goal_first")),
                      dummy=stored.get("dummy"))
