"""A model that reads the task as text (a language model fine-tuned on `u,v|u,v|.../s,g=s,n1,...,g`
through its own subword tokenizer), seen at the sites of hansprobe's integer layout.

Every analysis reads positions from a `Batch` of integer tokens and asks the model for next-token
logits and hooked activations at those positions. `TextFormatModel` wraps the hooked bridge of the
text model so that it answers those questions unchanged (docs/decisions.md 66):

- tokens: the integer input is written as text by one table lookup (`TextTokens`) and the layout's
  commas (`u , v |`, `s , g =`, and after every answer slot), vectorised, once per call; a
  teacherless input holds `$` in every answer slot, the commas' too, as Next-Token-Failures fills it;
- positions: integer position j stands for the text position whose logits predict token j + 1, the
  comma after j where the text has one (`site`), and for the key side of attention, the text
  position of token j itself (`token_at`). The commas' own predictions are skipped, as the labels
  between answer nodes (their share is checked at import);
- logits: the text logits at `site`, restricted to the task's tokens (labels, `|`, `=`, `/`, `$`),
  so a softmax over them is the model's distribution given that it answers with a task token;
- hooks: `run_with_cache`, `hooks` and `run_with_hooks` (and so `transformer_lens.patching`) run
  the bridge on the text and hand each hook the activation at the integer sites (attention patterns
  as query `site` x key `token_at`; keys and values at `token_at`; everything else at `site`); what a
  hook returns is written back at those sites.

Its `cfg` is the bridge's with `d_vocab` the task's. `text_inputs` and `text_loss` give the text
itself, for training on the full vocabulary with the commas supervised (as Next-Token-Failures'
`finetune.py` does).
"""
from __future__ import annotations

import copy
import inspect
from contextlib import contextmanager, nullcontext
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from hansprobe.errors import CheckpointError, ConfigError
from hansprobe.fused import has_forward_hooks, output_logits
from hansprobe.multitoken import extra_logits_loss
from hansprobe.tasks.text_tokens import TextTokens
from hansprobe.text_passes import Columns, attention_reads_cache, blocks_skipped, head_slot

KEY_SIDE = ("hook_k", "hook_v", "hook_rot_k")  # activations of the attended-to token
PATTERNS = ("hook_pattern", "hook_attn_scores")  # (B, H, query, key)


def integer_to_text_sites(task, table: TextTokens) -> tuple[Tensor, Tensor]:
    """(token_at, site), each (n_ctx,): for every position of the task's integer input (prefix, then the
    answer slots), the text position of its token, and the text position whose logits predict the next
    token (the comma after it, where the text puts one: after each edge's parent, the start, and every
    answer slot)."""
    e, p = task.n_edges, task.prefix_len
    pos = table.positions(e, task.target_len)
    edge = torch.stack([pos["parent"], pos["child"], pos["separator"]], 1).reshape(3 * e)  # (3E,) in u v | order
    if table.goal_first:  # s , g / then the edges (the last one's separator is `=`)
        prefix = torch.cat([torch.tensor([pos["start"], pos["goal"], pos["goal"] + 1]), edge])
    else:  # the edges, then s , g =
        prefix = torch.cat([edge, torch.tensor([pos["start"], pos["goal"], pos["="]])])
    slots = pos["prefix_len"] + 2 * torch.arange(task.n_ctx - p)  # answer slots s, n1, ...: each then a comma
    token_at = torch.cat([prefix, slots])  # (n_ctx,)
    followed = torch.zeros(task.n_ctx, dtype=torch.bool)
    followed[p:] = True
    followed[torch.arange(e) * 3 + (3 if table.goal_first else 0)] = True  # each edge's parent
    followed[0 if table.goal_first else p - 3] = True  # the start
    return token_at, token_at + followed.long()


def _cfg_of(hf_config) -> SimpleNamespace:
    """The few `cfg` fields a trainer reads, for an unbridged transformers module (the training form)."""
    return SimpleNamespace(n_layers=hf_config.num_hidden_layers, n_heads=hf_config.num_attention_heads,
                           d_model=hf_config.hidden_size, attn_only=False)


class TextLayout(nn.Module):
    """The integer layout of a task written as a tokenizer's text: where each integer position sits in
    the text (`token_at`, `site`: `integer_to_text_sites`), the integer -> text token table (`lut`),
    and the text an integer input reads as (`text_inputs`). A module so that its tables move with
    the model's device."""

    def __init__(self, task, table: TextTokens):
        super().__init__()
        self.task = task
        self.table = table
        token_at, site = integer_to_text_sites(task, table)
        self.register_buffer("token_at", token_at, persistent=False)
        self.register_buffer("site", site, persistent=False)
        n = task.n_nodes
        lut = torch.full((task.d_vocab,), -1, dtype=torch.long)  # integer token -> text token (-1: none)
        lut[:n] = table.node
        lut[task.pipe], lut[task.equals], lut[task.slash] = table.pipe, table.equals, table.slash
        if table.dummy is not None:
            lut[task.dummy] = table.dummy
        self.register_buffer("lut", lut, persistent=False)

    @property
    def text_len(self) -> int:
        """Tokens of the whole task (prompt and answer) as text."""
        return int(self.site[-1]) + 1

    def text_inputs(self, tokens: Int[Tensor, "B T"]) -> Int[Tensor, "B Tt"]:
        """The text the model reads for an integer input: the table's tokens at `token_at`, commas between."""
        b, t = tokens.shape
        if t > len(self.site):
            raise ConfigError(f"an input of {t} tokens is longer than the task's {len(self.site)}; give the task's layout")
        text = self.lut[tokens]  # (B, T)
        if bool((text < 0).any()):
            raise ConfigError("the input holds the teacherless dummy '$', which this model's tokenizer does not have "
                              "as a token of its own; analyse it with a teacher-forced objective")
        out = torch.full((b, int(self.site[t - 1]) + 1), self.table.comma, dtype=torch.long, device=tokens.device)
        out[:, self.token_at[:t]] = text  # (B, Tt)
        p = self.task.prefix_len
        if t > p and self.table.dummy is not None:  # a `$` slot's comma is `$` too (Next-Token-Failures' teacherless)
            slots = self.token_at[p:t]
            out[:, slots + 1] = torch.where(tokens[:, p:t] == self.task.dummy, self.table.dummy, self.table.comma)
        return out


class TextFormatModel(TextLayout):
    """The hooked bridge of a text-format model, answering at the integer layout's sites (module docstring)."""

    def __init__(self, bridge, task, table: TextTokens, hf_tensors: dict[str, Tensor] | None = None):
        super().__init__(task, table)
        # transformers' names of the live weights, taken before the bridge wrapped the module (its own
        # state dict then names them through its wrappers, some twice): what a checkpoint stores.
        self._hf_tensors = hf_tensors
        self.bridge = bridge
        self.cfg = copy.copy(bridge.cfg) if hasattr(bridge, "cfg") else _cfg_of(bridge.config)
        self.text_vocab = int(getattr(self.cfg, "d_vocab", None) or bridge.config.vocab_size)  # the tokenizer's, what the logits span
        self.cfg.d_vocab = task.d_vocab
        self._window = None  # (first, end, held) of the call in flight: its hooks see integer positions
        # first..end-1, at their sites less the `held` text positions a cache holds (`_sites`)

    @property
    def logit_vocab(self) -> int:
        """Columns of the logits a pass computes: the task's tokens where the head is restricted
        (`_task_head`), else the whole tokenizer."""
        return self.cfg.d_vocab if head_slot(self.bridge)[0] is not None else self.text_vocab

    @contextmanager
    def _task_head(self):
        """The LM head restricted to the task's tokens for one pass: a 50,257-token tokenizer's head is
        a third of a 124M model's forward and most of its activation memory, and every analysis reads
        only the task's columns (`_task_logits`). The live weights are indexed on each call, so the logits are
        the full head's columns (to summation order) and gradients reach the weights."""
        owner, name = head_slot(self.bridge)
        if owner is None:
            yield False
            return
        full = owner._modules[name]
        owner._modules[name] = Columns(full, self.lut.clamp(min=0))
        try:
            yield True
        finally:
            owner._modules[name] = full

    def forward(self, tokens: Int[Tensor, "B T"], start_at: tuple[int, Tensor] | None = None,
                **kwargs) -> Float[Tensor, "B T V"]:
        """Logits at the sites of `tokens`. `start_at` (layer, residual (B, Tt, d_model) entering that
        block at every text position of `tokens`, from `resid_pre`): run from that block on, the blocks
        before it skipped (the head ablations': those blocks are the same for every ablation after them)."""
        t = tokens.shape[1]
        prev, self._window = self._window, (0, t, 0)  # the sites a hook on this pass is handed
        try:
            with self._task_head() as restricted:
                if start_at is None:
                    logits = output_logits(self.bridge(self.text_inputs(tokens), **kwargs))
                else:
                    first, resid = start_at
                    with blocks_skipped(self.bridge, first):
                        logits = output_logits(self.bridge(resid, start_at_layer=first, **kwargs))
        finally:
            self._window = prev
        return self._task_logits(logits[:, self.site[:t]], restricted)

    def resid_pre(self, tokens: Int[Tensor, "B T"]) -> list[Float[Tensor, "B Tt d_model"]]:
        """The residual entering each block at every text position of `tokens`, [n_layers]: where
        `forward(..., start_at=(layer, residual))` starts."""
        names = [f"blocks.{l}.hook_resid_pre" for l in range(self.cfg.n_layers)]
        with self._task_head():
            _, cache = self.bridge.run_with_cache(self.text_inputs(tokens), names_filter=lambda n: n in names)
        return [cache[n] for n in names]

    def _task_logits(self, logits: Tensor, restricted: bool) -> Float[Tensor, "B T V"]:
        """Logits over the task's tokens, in the integer vocabulary's order (`restricted`: the pass
        computed only those columns, else they are taken from the whole tokenizer's); a `$` the
        tokenizer lacks gets a logit far below every other (never the argmax, ~0 probability, finite)."""
        if not restricted:
            logits = logits[..., self.lut.clamp(min=0)]  # a copy
        elif self.table.dummy is None:
            logits = logits.clone()
        if self.table.dummy is None:
            logits[..., self.task.dummy] = logits.amin(-1) - 1e4
        return logits

    # -- decoding from the prompt's keys and values (transformers' own cache) -------------------------
    def _run(self, text: Int[Tensor, "B Tt"], past=None) -> tuple[Tensor, object]:
        """(text logits over the task's tokens, transformers' cache after them): through the bridge,
        or the transformers module itself (the training form)."""
        bridged = hasattr(self.bridge, "adapter")  # a TransformerBridge returns the cache on request
        hf = self.bridge.original_model if bridged else self.bridge
        # transformers 5 names the cache `cache` (`past_key_values` before, deprecated since)
        name = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
        with self._task_head() as restricted, attention_reads_cache(self.bridge):
            if bridged:
                logits, cache = self.bridge(text, **{name: past}, use_cache=True, return_type="logits_and_cache")
            else:
                out = self.bridge(text, **{name: past}, use_cache=True)
                logits, cache = out.logits, out.past_key_values
        return self._task_logits(output_logits(logits), restricted), cache

    def keys_values(self, tokens: Int[Tensor, "B T0"]) -> list[tuple[Tensor, Tensor]] | None:
        """Each layer's attention keys and values, ((B, h, Tt0, dh), (B, h, Tt0, dh)), over the text
        of the integer input `tokens` (up to the site of its last position, so just before the text of
        the next integer position's token): what `extend` and `forward_after` continue from, so that
        decoding runs the prompt once per graph (search.py), as the fused forward does. None where
        something is hooked on the model (so that the hooks see whole passes at the sites), it filled
        no cache, or `tokens` is empty: its caller then runs whole forwards."""
        if has_forward_hooks(self) or tokens.shape[1] == 0:
            return None
        _, cache = self._run(self.text_inputs(tokens))
        return self._layers(cache)

    def _layers(self, cache) -> list[tuple[Tensor, Tensor]] | None:
        """Each layer's (keys, values) in transformers' cache; None where it holds none."""
        kv = [(getattr(layer, "keys", None), getattr(layer, "values", None)) for layer in getattr(cache, "layers", ())]
        if len(kv) != self.cfg.n_layers or any(k is None or v is None for k, v in kv):
            return None
        return kv

    def extend(self, kv: list[tuple[Tensor, Tensor]], tokens: Int[Tensor, "B new"], keep: bool = False):
        """The logits at the integer positions of `tokens` when they follow those whose text `kv`
        holds (`keys_values`, one row per row of `tokens`): the whole forward's at those positions,
        since a causal model's positions read only earlier keys and values, (B, new, V). `keep`:
        (logits, the keys and values grown by the text of `tokens`), what the next step continues
        from (search.py's samples and beams, one answer token at a time)."""
        start = int((self.site < kv[0][0].shape[2]).sum())  # integer positions whose text the cache holds
        # the text after the cache depends only on the tokens after it: zeros stand in for the rest
        return self.forward_after(kv, torch.cat([tokens.new_zeros(len(tokens), start), tokens], 1), keep=keep)

    def forward_after(self, kv: list[tuple[Tensor, Tensor]] | None, tokens: Int[Tensor, "B T"],
                      fwd_hooks=(), keep: bool = False):
        """The logits of the whole forward of `tokens` under `fwd_hooks`, at the integer positions past
        those whose text `kv` holds (`keys_values(tokens[:, :j])`: positions j.., `new` = T - j; None:
        all), run on that text alone: exact when the hooks change nothing before position j, as a
        causal model's earlier positions read nothing later (activation patching from the first
        patched position, decisions.md 72), (B, new, V); with `keep`, also the keys and values grown.
        The hooks see (B, new, ...) at those positions' sites, so they may read any activation but
        keys, values and attention patterns."""
        from transformers import DynamicCache

        for name, _ in fwd_hooks:
            if not isinstance(name, str) or name.endswith(KEY_SIDE + PATTERNS):
                raise ConfigError(f"forward_after hooks read activations at the sites; {name!r} is not one")
        held = 0 if kv is None else kv[0][0].shape[2]  # text positions in the cache
        t = tokens.shape[1]
        first = int((self.site[:t] < held).sum())  # integer positions whose text it holds
        text = self.text_inputs(tokens)[:, held:]
        prev, self._window = self._window, (first, t, held)
        try:
            with self.hooks(fwd_hooks) if fwd_hooks else nullcontext():
                logits, cache = self._run(text, None if kv is None else DynamicCache(ddp_cache_data=kv))
        finally:
            self._window = prev
        logits = logits[:, self.site[first:t] - held]  # (B, new, V)
        return (logits, self._layers(cache)) if keep else logits

    # -- hooks at the integer sites -----------------------------------------------------------------
    def _sites(self) -> tuple[Tensor, Tensor]:
        """(site, token_at) of the integer positions the call in flight hands its hooks, as positions
        of the text it runs."""
        first, end, held = self._window or (0, len(self.site), 0)  # no call of ours in flight: the whole task's
        return self.site[first:end] - held, self.token_at[first:end] - held

    def _gather(self, name: str, act: Tensor) -> Tensor:
        site, token = self._sites()
        if name.endswith(PATTERNS):
            return act[:, :, site][:, :, :, token]
        return act[:, token if name.endswith(KEY_SIDE) else site]

    def _scatter(self, name: str, act: Tensor, new: Tensor) -> Tensor:
        site, token = self._sites()
        act = act.clone()
        if name.endswith(PATTERNS):
            act[:, :, site[:, None], token[None, :]] = new.to(act.dtype)
        else:
            act[:, token if name.endswith(KEY_SIDE) else site] = new.to(act.dtype)
        return act

    def _wrap(self, name, fn):
        if not isinstance(name, str):
            raise ConfigError("a text-format model takes hooks by name (e.g. 'blocks.0.attn.hook_pattern')")

        def hook(act, hook):
            out = fn(self._gather(name, act), hook=hook)
            return act if out is None else self._scatter(name, act, out)

        return hook

    @contextmanager
    def hooks(self, fwd_hooks=(), bwd_hooks=(), reset_hooks_end: bool = True, clear_contexts: bool = False):
        if bwd_hooks:
            raise ConfigError("a text-format model takes forward hooks only")
        with self.bridge.hooks(fwd_hooks=[(n, self._wrap(n, f)) for n, f in fwd_hooks],
                               reset_hooks_end=reset_hooks_end, clear_contexts=clear_contexts):
            yield self

    def run_with_hooks(self, tokens, fwd_hooks=(), bwd_hooks=(), reset_hooks_end: bool = True,
                       clear_contexts: bool = False, **kwargs):
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts):
            return self(tokens, **kwargs)

    def run_with_cache(self, tokens, names_filter=None, **kwargs):
        """(logits, ActivationCache) at the integer sites."""
        from transformer_lens import ActivationCache

        t = tokens.shape[1]
        prev, self._window = self._window, (0, t, 0)
        try:
            with self._task_head() as restricted:
                logits, cache = self.bridge.run_with_cache(self.text_inputs(tokens), names_filter=names_filter, **kwargs)
            acts = {name: self._gather(name, act) for name, act in cache.items()}
        finally:
            self._window = prev
        return self._task_logits(output_logits(logits)[:, self.site[:t]], restricted), ActivationCache(acts, self)

    def checkpoint_tensors(self) -> dict[str, Tensor]:
        """The weights a checkpoint stores: the transformers module's own names (as an import writes
        them, so that the loader reads a fine-tuned run and an import alike), not the bridge's."""
        return {k: v.detach().clone().contiguous() for k, v in self._live().items()}

    def load_checkpoint_tensors(self, tensors: dict[str, Tensor], source) -> None:
        """`checkpoint_tensors`' inverse: every name, shape and dtype as stored, else one line."""
        from hansprobe.storage import check_finite

        live = self._live()
        missing, unexpected = sorted(set(live) - set(tensors)), sorted(set(tensors) - set(live))
        shapes = [k for k in live if k in tensors and tensors[k].shape != live[k].shape]
        if missing or unexpected or shapes:
            said = "; ".join(f"{len(v)} {w} ({', '.join(v[:3])})" for w, v in
                             (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)) if v)
            raise CheckpointError(f"{source} does not hold this model's weights: {said}; the file belongs to another model")
        check_finite(tensors, source)
        with torch.no_grad():
            for k, v in live.items():
                v.copy_(tensors[k].to(v.dtype))

    def _live(self) -> dict[str, Tensor]:
        if self._hf_tensors is None:
            raise ConfigError("this text-format model was built without its weights' names; build it with "
                              "causal_lm.text_format_model")
        return self._hf_tensors

    # -- training on the text itself ----------------------------------------------------------------
    def text_loss(self, objective, batch, generator: torch.Generator | None = None, heads=None) -> Tensor:
        """Cross-entropy over the full text vocabulary at every text position the objective's labels
        cover: each label it scores (at its `site`) and, where it scores all labels, the commas between
        them (at the answer slots' own positions), as a text fine-tuning scores the whole answer.
        `heads`: the multi-token objective's extra heads (`multitoken.ExtraHeads` over the text
        vocabulary), read off the final normalised hidden state at the same label sites: head j at the
        site that predicts answer node i predicts node i + j, commas skipped (docs/decisions.md 70)."""
        x = objective.inputs(batch, generator)  # (B, T) integer
        t, p = x.shape[1], batch.prefix.shape[1]
        out = self.bridge(self.text_inputs(x), **({"output_hidden_states": True} if heads is not None else {}))
        logits = output_logits(out).float()  # (B, Tt, Vt)
        labels = objective.labels(batch)  # (B, L)
        keep = objective.scored_indices(labels.shape[1])
        at = self.site[p - 1: p - 1 + labels.shape[1]]  # (L,) the text position predicting each label
        pred, want = [logits[:, at[keep]]], [self.lut[labels[:, keep]]]
        if len(keep) == labels.shape[1]:
            commas = self.token_at[p:t]  # each answer slot predicts the comma after it
            pred.append(logits[:, commas])
            want.append(torch.full((len(x), len(commas)), self.table.comma, dtype=torch.long, device=x.device))
        pred, want = torch.cat(pred, 1), torch.cat(want, 1)
        loss = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), want.reshape(-1))
        if heads is not None:
            if getattr(out, "hidden_states", None) is None:
                raise ConfigError("the multi-token heads train on the transformers module itself; build the model "
                                  "with causal_lm.text_format_model(..., bridged=False)")
            resid = out.hidden_states[-1]  # (B, Tt, d_model): after the final norm, what the LM head reads
            loss = loss + extra_logits_loss(heads(resid[:, at]), self.lut[labels])
        return loss
