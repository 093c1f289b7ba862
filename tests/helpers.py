"""Tiny CPU builders shared by the tests (SAELens style): small enough that a training run takes
seconds, big enough to exercise every code path."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hansprobe.model import ModelConfig, build_model
from hansprobe.tasks import PathStar
from hansprobe.train import TrainConfig

SHARED_NTF = Path(__file__).resolve().parents[2] / "shared" / "data" / "ntf"


def tiny_task(degree: int = 2, path_len: int = 4, n_nodes: int = 20) -> PathStar:
    return PathStar(degree=degree, path_len=path_len, n_nodes=n_nodes)


def tiny_model_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{"n_layers": 1, "d_model": 32, "n_heads": 2, **kw})


def tiny_model(task: PathStar | None = None, seed: int = 0, **kw):
    task = task or tiny_task()
    return build_model(tiny_model_cfg(**kw), task.d_vocab, task.n_ctx, seed, device="cpu", dtype=torch.float32)


def tiny_train_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 12, "batch_size": 32, "lr": 3e-3, "warmup_steps": 2, "eval_every": 4,
                          "eval_graphs": 64, "checkpoint_every": 4, **kw})


def shared_ntf(name: str) -> Path:
    """A file of the paper's test splits; skips the test where ../shared is absent (a user's clone)."""
    path = SHARED_NTF / name
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared NTF test splits live beside the project only in the hansprobe workspace")
    return path


def match_rows(tokens: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor:
    """For each input row, the index of the graph whose prompt it starts with (inputs may come in chunks)."""
    p = prefixes.shape[1]
    return (tokens[:, None, :p] == prefixes[None]).all(-1).float().argmax(1)


class OracleModel(torch.nn.Module):
    """A stand-in model that reads the answer off the batch: predicts `answers[g, t]` at input
    position t of graph g's input with probability `p_correct` and spreads the rest evenly. Used to
    check decoding and metrics without training."""

    def __init__(self, answers: torch.Tensor, d_vocab: int, p_correct: float = 1.0, prefixes: torch.Tensor | None = None):
        super().__init__()
        self.answers, self.d_vocab, self.p, self.prefixes = answers, d_vocab, p_correct, prefixes
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # so next(model.parameters()) gives a device

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t = tokens.shape
        rows = match_rows(tokens, self.prefixes) if self.prefixes is not None else torch.arange(b)
        probs = torch.full((b, t, self.d_vocab), (1 - self.p) / (self.d_vocab - 1))
        probs.scatter_(2, self.answers[rows, :t, None], self.p)
        return probs.log()


class DecisionModel(torch.nn.Module):
    """A hand-made model whose distribution at the decision position is set exactly: `probs_fn(batch)`
    gives (B, V) probabilities there; every other position predicts uniformly. Inputs are matched
    to the batch row by row, so it works with any objective's forced input."""

    def __init__(self, batch, objective, probs: torch.Tensor):
        super().__init__()
        self.batch, self.objective, self.probs = batch, objective, probs
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t = tokens.shape
        v = self.probs.shape[1]
        out = torch.full((b, t, v), -torch.log(torch.tensor(float(v))))
        pos = self.objective.label_slice(self.batch).start + self.objective.decision_index(self.batch.target.shape[1])
        rows = match_rows(tokens, self.batch.prefix)
        out[:, pos] = self.probs[rows].clamp_min(1e-30).log()
        return out


# --- models trained elsewhere: tiny state dicts in public layouts, and reference forwards written
# from those layouts' definitions (not from hansprobe's converter) ----------------------------------
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


# --- hand-built decision rules that read the graph from the input tokens (the package's constructed models)
from hansprobe.constructed import RuleModel, edge_order_noise, structure_from_tokens  # noqa: E402,F401


def run_cli(argv, capsys):
    """`hansprobe ARGV` in-process: (exit code, stdout, stderr); argparse's exits count as codes."""
    from hansprobe.cli import main

    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# --- the tiny report the report and page tests share (conftest.py: `runs`, `report`) -------------------
TINY_TASK_ARGS = ["--degree", "2", "--path-len", "4", "--nodes", "20"]
TINY_TRAIN = ["train", *TINY_TASK_ARGS, "--n-layers", "1", "--d-model", "32", "--n-heads", "2", "--steps", "6",
              "--batch-size", "16", "--eval-every", "3", "--eval-graphs", "32", "--checkpoint-every", "3"]
TINY_TRAIN_ARGS = [*TINY_TRAIN, "--json"]


def _tiny_report_settings():
    from hansprobe.report.settings import ReportSettings

    return ReportSettings(n_graphs=40, patch_pairs=20, batch_size=40, jobs=1)


TINY_REPORT = _tiny_report_settings()


# --- processes that can be killed, without a fresh interpreter each -----------------------------------
def forkserver():
    """multiprocessing's forkserver, its server having imported hansprobe and TransformerLens once:
    each child is a fork of it (a process of its own, killable, sharing nothing with the test's), not
    a fresh interpreter that imports them again (~9 s each on this project's CPU machine)."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["helpers", "hansprobe.cli", "hansprobe.train", "transformer_lens.model_bridge"])
    return ctx


def cli_child(argv: list[str], kill_at_write: int | None = None) -> None:
    """A forked child's work: `hansprobe ARGV` on one thread (as the in-process references), its
    output discarded, exiting with the command's code. `kill_at_write`: die by SIGKILL halfway through
    the N-th atomic file write, leaving the temporary file half written and the rename undone,
    exactly as a kill during a checkpoint write leaves it."""
    import os
    import signal
    import sys
    import tempfile

    import hansprobe.storage as storage
    from hansprobe.cli import main

    torch.set_num_threads(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    if kill_at_write is not None:
        calls, real = [0], storage.atomic_write_bytes

        def write(path, data):
            calls[0] += 1
            if calls[0] == kill_at_write:
                fd, _ = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.{storage.TMP_MARK}",
                                         suffix=".tmp")  # named as the writer names its temporaries
                os.write(fd, data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, data)
        storage.atomic_write_bytes = write
    sys.exit(main(argv))
