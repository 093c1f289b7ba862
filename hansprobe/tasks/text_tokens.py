"""The task as a language model fine-tuned on its text reads it: the Next-Token-Failures line
`u,v|u,v|...|u,v/s,g=s,n1,...,g` (`format_ntf_lines`) encoded by the model's own subword tokenizer.

Under a tokenizer that keeps every node label and every separator a token of its own (as GPT-2's and
Pythia's do for labels up to a few hundred: their pre-tokenizer splits digits from punctuation), the
text layout is as fixed as the integer one, only wider: each edge is `u , v |` (4 tokens), the query
`s , g =`, and the answer `s , n1 , ... , g` (2l - 1 tokens, a comma between answer nodes). So a
`Batch` of integer tokens becomes text tokens by one table lookup and a fixed interleaving
(`TextTokens.encode`, vectorised: no tokenizer call per graph), and every structural position (each
edge's parent, child and separator, the query, `=`, each answer node and each comma between them)
is a function of the layout alone (`TextTokens.positions`).

`TextTokens.from_tokenizer` checks that once per tokenizer, on the tokenizer itself:
- every label 0..N-1 is one token in context, and no two labels share it (the d candidates' decision
  tokens must be distinct); a label that splits into several tokens is refused in one line naming
  the labels that split (docs/decisions.md 65: no first-token rule);
- `,`, `|`, `/`, `=` are tokens of their own, not merged with a neighbour;
- real lines of the task encode to exactly what the table gives (`tokenizer.encode(line)`), so a
  tokenizer that reads a label differently beside some separator is caught, not mis-mapped;
- the teacherless dummy `$` (a text token in `$,$,...,$`) is checked only when asked for.

The tokenizer is any object with `encode(text)` returning `.ids` and `.offsets` (a `tokenizers.Tokenizer`,
e.g. `Tokenizer.from_file("tokenizer.json")`). `hansprobe/text_model.py` uses these positions to
show a text-format model to the analyses at the integer layout's sites (decision 66).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from hansprobe.errors import TaskError
from hansprobe.tasks.base import Batch
from hansprobe.validation import number_ranges

SEPARATORS = {"comma": ",", "pipe": "|", "slash": "/", "equals": "="}
CHECK_LINES = 16  # real lines of the task encoded by the tokenizer itself, against the table


def _tokens_of(encoding, spans: list[tuple[int, int]]) -> list[list[int]]:
    """For each character span, the ids of the tokens that lie inside it, or [] where a token crosses
    its edge (merged with a neighbour)."""
    out = []
    for a, b in spans:
        inside = [t for t, (s, e) in zip(encoding.ids, encoding.offsets) if s >= a and e <= b and e > s]
        crossing = any(s < b and e > a and (s < a or e > b) for s, e in encoding.offsets)
        out.append([] if crossing else inside)
    return out


@dataclass(frozen=True)
class TextTokens:
    """Token ids of the text format under one tokenizer: `node[i]` for label i, the separators."""

    node: Tensor  # (N,) int64
    comma: int
    pipe: int
    slash: int
    equals: int
    goal_first: bool = False
    dummy: int | None = None  # the teacherless `$`, where the tokenizer has it whole (`with_dummy`)

    @classmethod
    def from_tokenizer(cls, tokenizer, task) -> "TextTokens":
        """The table for `task`'s labels under `tokenizer`, checked (module docstring); a tokenizer
        that cannot carry the task is one line saying why."""
        n = task.n_nodes
        # Every label once, in the context it has in the text (between a separator and a comma).
        text, spans, seps = "", [], {}
        for i in range(n):
            text += "|" if i else ""
            spans.append((len(text), len(text) + len(str(i))))
            text += f"{i},{i}"
        text += "/0,1=0"
        enc = tokenizer.encode(text)
        got = _tokens_of(enc, spans)
        split = [i for i, ids in enumerate(got) if len(ids) != 1]
        if split:
            which = number_ranges(split, "..")
            raise TaskError(f"under this tokenizer node label{'s' if len(split) > 1 else ''} {which} "
                            f"{'are' if len(split) > 1 else 'is'} not one token (split, or merged with a separator); "
                            "hansprobe reads a text-format task only where every label is one token (decision 65): "
                            "use a tokenizer that keeps them whole, or fewer nodes")
        ids = [g[0] for g in got]
        shared = {}
        for i, t in enumerate(ids):
            shared.setdefault(t, []).append(i)
        clash = [v for v in shared.values() if len(v) > 1]
        if clash:
            raise TaskError("under this tokenizer labels " + "; ".join(", ".join(map(str, v)) for v in clash[:3])
                            + " share a token, so the candidates' decision tokens are not distinct; use another tokenizer")
        for name, ch in SEPARATORS.items():
            at = text.index(ch)  # each separator occurs in the sample text
            found = _tokens_of(enc, [(at, at + 1)])[0]
            if len(found) != 1:
                raise TaskError(f"under this tokenizer the separator {ch!r} is not a token of its own (it merges with a "
                                "neighbour); the text format needs it whole: use another tokenizer")
            seps[name] = found[0]
        table = cls(torch.tensor(ids, dtype=torch.long), goal_first=bool(getattr(task, "goal_first", False)), **seps)
        table._check_lines(tokenizer, task)
        return table

    def _check_lines(self, tokenizer, task) -> None:
        from hansprobe.tasks.ntf_format import format_ntf_lines

        batch = task.generate(CHECK_LINES, seed=0)
        prefix, target = self.encode(batch)
        for k, line in enumerate(format_ntf_lines(batch) if not self.goal_first else self._goal_first_lines(batch)):
            want = torch.cat([prefix[k], target[k]]).tolist()
            if tokenizer.encode(line).ids != want:
                raise TaskError(f"this tokenizer reads the line {line[:60]!r}... otherwise than token by token (a label "
                                "or separator changes with its neighbours); hansprobe cannot place the task's "
                                "positions under it")

    @staticmethod
    def _goal_first_lines(batch: Batch) -> list[str]:
        lines = []
        for p, c, s, g, path in zip(batch.edge_parent.tolist(), batch.edge_child.tolist(), batch.start.tolist(),
                                    batch.goal.tolist(), batch.target.tolist()):
            lines.append(f"{s},{g}/" + "|".join(f"{u},{v}" for u, v in zip(p, c)) + "=" + ",".join(map(str, path)))
        return lines

    def with_dummy(self, tokenizer, required: bool = True) -> "TextTokens":
        """This table with the teacherless dummy: the id of `$` encoded alone, which a teacherless
        text input holds in every answer slot, the commas' included (as Next-Token-Failures'
        `Graphs` dataset fills them: ids placed, not text encoded, so no merge of `$$` matters).
        Where `$` is not one token that reads back as `$`, one line saying so (`required`), else the
        table without it."""
        ids = tokenizer.encode("$").ids
        if len(ids) != 1 or tokenizer.decode(ids).strip() != "$" or ids[0] in (*self.node.tolist(), self.comma):
            if not required:
                return self
            raise TaskError("under this tokenizer the teacherless dummy '$' is not a token of its own; a teacherless "
                            "objective needs it: use another tokenizer or another objective")
        return replace(self, dummy=ids[0])

    def to_dict(self) -> dict:
        """The table as config.json stores it (re-derived from the tokenizer and compared on load)."""
        return {"node": self.node.tolist(), "comma": self.comma, "pipe": self.pipe, "slash": self.slash,
                "equals": self.equals, "goal_first": self.goal_first, "dummy": self.dummy}

    def encode(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(prefix (B, 4E + 4), target (B, 2l - 1)): the graphs' text tokens, by lookup and interleaving."""
        b, e = batch.edge_parent.shape
        col = lambda v: torch.full((b, e), v, dtype=torch.long)  # noqa: E731
        sep = col(self.pipe)
        sep[:, -1] = self.equals if self.goal_first else self.slash
        edges = torch.stack([self.node[batch.edge_parent], col(self.comma), self.node[batch.edge_child], sep], 2)
        edges = edges.reshape(b, 4 * e)  # (B, 4E): u , v |
        query = torch.stack([self.node[batch.start], torch.full((b,), self.comma), self.node[batch.goal],
                             torch.full((b,), self.slash if self.goal_first else self.equals)], 1)  # (B, 4): s , g =
        prefix = torch.cat([query, edges] if self.goal_first else [edges, query], 1)
        l = batch.target.shape[1]
        target = torch.full((b, 2 * l - 1), self.comma, dtype=torch.long)
        target[:, 0::2] = self.node[batch.target]  # s , n1 , ... , g
        return prefix, target

    def positions(self, n_edges: int, target_len: int) -> dict[str, Tensor | int]:
        """Where each part of the layout sits in the text sequence: per edge `parent`, `comma`, `child`,
        `separator` (E,), the query's `start`, `goal`, `=` (the last prompt token), and per answer
        node `answer` (l,) and the commas between them `answer_commas` (l - 1,)."""
        offset = 4 if self.goal_first else 0
        edge = torch.arange(n_edges) * 4 + offset
        query = 0 if self.goal_first else 4 * n_edges
        prefix_len = 4 * n_edges + 4
        answer = prefix_len + 2 * torch.arange(target_len)
        return {"parent": edge, "comma": edge + 1, "child": edge + 2, "separator": edge + 3, "start": query,
                "goal": query + 2, "=": prefix_len - 1, "prefix_len": prefix_len, "answer": answer,
                "answer_commas": answer[:-1] + 1}
