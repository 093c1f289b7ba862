"""Decoding beyond greedy: temperature sampling and beam search over the answer, batched over graphs.

Each works for every objective through its own input: a teacher-forced one (and those evaluated like
it: partial-teacherless, multi-token's main head) feeds back its chosen labels, so label i is scored
with the chosen labels 0..i-1 in the answer slots; a teacherless one answers every position from the
dummies, so its per-position distributions are read once. Labels are in the objective's order.
Through the fused forward the prompt runs once per graph and each step runs only the answer
positions (`FusedGPT.extend`), as greedy decoding does; a text-format model does the same through
transformers' own cache (`TextFormatModel.extend`); any other hooked model runs its own forward.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hansprobe.fused import FusedGPT, inference_view, logits_at
from hansprobe.objectives import Objective, autocast
from hansprobe.tasks.base import Batch


class _Scorer:
    """log q(label i | prompt, chosen labels 0..i-1) for rows that index the graphs of one batch."""

    def __init__(self, model, objective: Objective, batch: Batch):
        self.model, self.objective, self.batch = model, objective, batch
        self.p = batch.prefix.shape[1]
        self.net = inference_view(model)
        self.all_at_once, self.kv = None, None
        self._grown = None  # a text model's last step: (i, its rows' keys (N, 1+i), their keys and values)
        with autocast(batch.prefix.device):
            if objective.teacherless:  # the input does not hold the answer: every position from one pass
                self.all_at_once = objective.forced_logits(model, batch).log_softmax(-1)  # (B, L, V)
            elif hasattr(self.net, "keys_values"):  # FusedGPT, TextFormatModel (None where it fills no cache or is hooked)
                self.kv = self.net.keys_values(batch.prefix[:, :self.p - 1])  # the prompt but its last token

    @torch.no_grad()
    def __call__(self, rows: Tensor, chosen: Tensor, i: int, per_graph: int | None = None) -> Float[Tensor, "N V"]:
        """rows (N,): graph of each row; chosen (N, >= i): the labels chosen so far. per_graph: every
        graph has exactly this many rows, graph-major (beams): their prompt is read, not copied.
        Otherwise rows that repeat a (graph, prefix) pair are scored once: samples of a confident
        model mostly coincide."""
        if self.all_at_once is not None:
            return self.all_at_once[rows, i]
        if per_graph is not None:
            return self._score(rows, chosen[:, :i], i, shared=rows[::per_graph])
        key = torch.cat([rows[:, None], chosen[:, :i]], 1)  # (N, 1+i)
        uniq, inverse = torch.unique(key, dim=0, return_inverse=True)  # sorted: graph-major
        if not isinstance(self.net, FusedGPT):
            return self._score(uniq[:, 0], uniq[:, 1:], i)[inverse]
        # Lay the distinct prefixes out as (G, R), R the most any graph has (padded with its first), so
        # that the prompt's keys and values are read per graph, not copied per row.
        graphs, counts = torch.unique_consecutive(uniq[:, 0], return_counts=True)  # the graphs present, (G,)
        first = counts.cumsum(0) - counts
        owner = torch.repeat_interleave(torch.arange(len(graphs), device=uniq.device), counts)  # (U,)
        slot = torch.arange(len(uniq), device=uniq.device) - first[owner]
        grid = first[:, None].repeat(1, int(counts.max()))  # (G, R)
        grid[owner, slot] = torch.arange(len(uniq), device=uniq.device)
        flat = grid.view(-1)
        logp = self._score(uniq[flat, 0], uniq[flat, 1:], i, shared=graphs)  # (G*R, V)
        out = torch.empty(len(uniq), logp.shape[-1], device=logp.device, dtype=logp.dtype)
        out[flat] = logp  # padded slots write their graph's first prefix again, with the same values
        return out[inverse]

    def _score(self, rows: Tensor, chosen: Tensor, i: int, shared: Tensor | None = None) -> Float[Tensor, "U V"]:
        """shared: the G graphs whose prompt the rows continue, r rows each, graph-major (read, not copied per row)."""
        x = torch.cat([self.batch.prefix[rows], chosen], 1)  # (N, P+i): position P-1+i predicts label i
        with autocast(x.device):
            if isinstance(self.net, FusedGPT):
                if shared is None:
                    kv = [(k[rows], v[rows]) for k, v in self.kv]
                elif len(shared) == len(self.batch):
                    kv = self.kv
                else:
                    kv = [(k[shared], v[shared]) for k, v in self.kv]
                logits = self.net.extend(kv, x[:, self.p - 1:])[:, -1]
            elif self.kv is not None:  # a text model: transformers' cache holds one row per row
                logits = self._grow(rows, chosen, x, i)
            else:
                logits = logits_at(self.model, x, slice(self.p - 1 + i, self.p + i))[:, 0]
        return logits.float().log_softmax(-1)  # (N, V)

    def _grow(self, rows: Tensor, chosen: Tensor, x: Tensor, i: int) -> Tensor:
        """A text model's logits at label i: each row continues from its prefix's keys and values of
        the step before (the answer so far, one label and its comma more) where this scorer ran that
        step, else from the prompt's; the keys and values grown are kept for the next step."""
        key = torch.cat([rows[:, None], chosen], 1)  # (N, 1+i): the graph and its labels so far
        parent = None
        if i > 0 and self._grown is not None and self._grown[0] == i - 1:
            parent = _rows_of(self._grown[1], key[:, :i])
        if parent is None:
            kv, new = [(k[rows], v[rows]) for k, v in self.kv], x[:, self.p - 1:]
        else:
            kv, new = [(k[parent], v[parent]) for k, v in self._grown[2]], x[:, -1:]
        logits, grown = self.net.extend(kv, new, keep=True)
        self._grown = None if grown is None else (i, key, grown)
        return logits[:, -1]


def _rows_of(table: Tensor, keys: Tensor) -> Tensor | None:
    """For each row of `keys` (N, K), the index of an equal row of `table` (M, K); None if one has none."""
    _, inverse = torch.unique(torch.cat([table, keys]), dim=0, return_inverse=True)
    where = torch.full((int(inverse.max()) + 1,), -1, dtype=torch.long, device=keys.device)
    where[inverse[:len(table)]] = torch.arange(len(table), device=keys.device)
    found = where[inverse[len(table):]]
    return None if bool((found < 0).any()) else found


@dataclass
class Samples:
    """tokens (B, S, L): S sampled answers per graph; loglik (B, S): each one's log-likelihood under the
    model at temperature 1 (what likelihood ranking reads), whatever temperature drew it."""

    tokens: Int[Tensor, "B S L"]
    loglik: Float[Tensor, "B S"]


@torch.no_grad()
def sample(model, objective: Objective, batch: Batch, n: int, temperatures: tuple[float, ...],
           uniforms: Float[Tensor, "B S L"]) -> list[Samples]:
    """n answers per graph at each temperature T, drawn token by token from q^(1/T) by inverting its
    CDF at `uniforms` (B, n x len(temperatures), L) in [0, 1), graph by graph, temperature-major: the
    caller draws them once for all its graphs, so that a seed gives the same samples however the
    graphs are chunked and on any device (the CDF is taken on the CPU). One Samples per temperature,
    in the order given; the temperatures share each step's forward pass."""
    b, length = batch.target.shape
    s = n * len(temperatures)
    if tuple(uniforms.shape) != (b, s, length):
        raise ValueError(f"uniforms must be (graphs, samples x temperatures, labels) = {(b, s, length)}, "
                         f"not {tuple(uniforms.shape)}")
    score = _Scorer(model, objective, batch)
    rows = torch.arange(b, device=batch.prefix.device).repeat_interleave(s)  # (B*S,)
    temp = torch.tensor(temperatures, device=rows.device).repeat_interleave(n).repeat(b)[:, None]  # (B*S, 1)
    u = uniforms.reshape(b * s, length).double().cpu()
    chosen = torch.zeros(b * s, length, dtype=torch.long, device=rows.device)
    loglik = torch.zeros(b * s, device=rows.device)
    for i in range(length):
        logp = score(rows, chosen, i)  # (B*S, V)
        cdf = (logp / temp).softmax(-1).double().cpu().cumsum(-1)  # (B*S, V)
        tok = torch.searchsorted(cdf, u[:, i:i + 1].contiguous(), right=True)[:, 0].clamp(max=cdf.shape[1] - 1).to(rows.device)
        chosen[:, i] = tok
        loglik += logp.gather(1, tok[:, None])[:, 0]
    chosen, loglik = chosen.view(b, len(temperatures), n, length), loglik.view(b, len(temperatures), n)
    return [Samples(chosen[:, j], loglik[:, j]) for j in range(len(temperatures))]


@torch.no_grad()
def beam_search(model, objective: Objective, batch: Batch, width: int) -> Int[Tensor, "B L"]:
    """The answer of highest log-likelihood among `width` beams kept at every label (B, L)."""
    b, length = batch.target.shape
    score = _Scorer(model, objective, batch)
    dev = batch.prefix.device
    rows = torch.arange(b, device=dev).repeat_interleave(width)  # (B*W,)
    chosen = torch.zeros(b * width, length, dtype=torch.long, device=dev)
    total = torch.full((b, width), float("-inf"), device=dev)
    total[:, 0] = 0.0  # one live beam per graph at the start: no duplicates
    for i in range(length):
        logp = score(rows, chosen, i, per_graph=width)  # (B*W, V)
        v = logp.shape[-1]
        cand = (total.view(-1, 1) + logp).view(b, width * v)  # (B, W*V)
        top = cand.topk(width, dim=1)
        beam, tok = top.indices // v, top.indices % v  # (B, W) each
        src = (torch.arange(b, device=dev)[:, None] * width + beam).view(-1)
        chosen = chosen[src].clone()
        chosen[:, i] = tok.view(-1)
        total = top.values
    best = total.argmax(1)  # (B,)
    return chosen.view(b, width, length)[torch.arange(b, device=dev), best]


def majority(tokens: Int[Tensor, "B S L"]) -> Int[Tensor, "B L"]:
    """Per graph, the answer that most samples give (ties: the one drawn first)."""
    same = (tokens[:, :, None] == tokens[:, None, :]).all(-1)  # (B, S, S)
    pick = same.sum(-1).argmax(1)  # argmax returns the first maximum
    return tokens[torch.arange(len(tokens)), pick]


def most_likely(samples: Samples, k: int) -> Int[Tensor, "B L"]:
    """Per graph, the most likely of the first k samples (likelihood-ranked best-of-k)."""
    pick = samples.loglik[:, :k].argmax(1)
    return samples.tokens[torch.arange(len(pick)), pick]
