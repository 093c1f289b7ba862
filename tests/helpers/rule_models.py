"""Models of known behaviour that need no training: a model that reads the answer off the batch,
one whose decision distribution is set exactly, and the package's hand-built decision rules."""
from __future__ import annotations

import torch

from hansprobe.constructed import RuleModel, edge_order_noise, structure_from_tokens  # noqa: F401  (re-exported)


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
