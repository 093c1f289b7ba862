"""Training objectives: model inputs, labels and greedy decoding for each (design.md table).

Every objective predicts the l target tokens at input positions P-1 .. P+l-2; they differ in the
order of the target (forward or reversed) and in what fills the answer slots of the input (the true
prefix, or the dummy `$`).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from hansprobe.errors import ConfigError
from hansprobe.fused import FusedGPT, inference_view, logits_at, output_logits
from hansprobe.tasks.base import Batch

FILLS = ("truth", "dummy", "mixed")  # what the answer slots of the training input hold
SCORED = ("all", "decision")  # which labels the loss scores


@dataclass(frozen=True)
class ObjectiveOption:
    """An option an objective may take (ObjectiveSpec.options names it by key): its command-line flag,
    type and help, so that `hansprobe train` and a sweep spec read them from here."""

    flag: str
    type: type
    metavar: str
    help: str

    def __str__(self) -> str:  # what older callers printed: the help text
        return self.help


OPTIONS = {"p": ObjectiveOption("--teacherless-p", float, "P", "partial fills: chance that each answer-slot input is `$` in training"),
           "k": ObjectiveOption("--extra-heads", int, "K", "extra output heads predicting r_(i+1) .. r_(i+k)")}


@dataclass(frozen=True)
class ObjectiveSpec:
    """One registered objective: everything a consumer may ask about it, so that none reads the name.

    reversed: the labels are the target reversed (r_(l-1) .. r_0).  fill: what the answer slots of the
    training input hold: "truth" (the true prefix; the shortcut is available), "dummy" (`$` in every
    slot, in training and evaluation), "mixed" (each slot `$` with probability option p in training,
    the true prefix in evaluation).  options: the options it takes with their defaults (keys from
    OPTIONS: "p" for a mixed fill, "k" for extra heads).  aliases: other names `get_objective` accepts.
    scored: which labels the loss scores: "all", or "decision": the decision token and the first
    label (the start, copied from the query: it carries nothing about the plan, and without it the
    objective's own greedy decoding would feed the decision a wrong start); docs/decisions.md 58.
    """

    name: str
    description: str
    reversed: bool = False
    fill: str = "truth"
    options: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    scored: str = "all"

    def __post_init__(self):
        if self.scored not in SCORED:
            raise ConfigError(f"objective {self.name!r}: scored must be one of {', '.join(SCORED)}, got {self.scored!r}")
        if self.fill not in FILLS:
            raise ConfigError(f"objective {self.name!r}: fill must be one of {', '.join(FILLS)}, got {self.fill!r}")
        unknown = set(self.options) - set(OPTIONS)
        if unknown:
            raise ConfigError(f"objective {self.name!r}: unknown options {sorted(unknown)}; known: {', '.join(OPTIONS)}")
        if (self.fill == "mixed") != ("p" in self.options):
            raise ConfigError(f"objective {self.name!r}: a mixed fill takes option p, and only a mixed fill does")


_REGISTRY: dict[str, ObjectiveSpec] = {}
_ALIASES: dict[str, str] = {}


def register_objective(spec: ObjectiveSpec, replace: bool = False) -> ObjectiveSpec:
    """Add an objective: `hansprobe train --objective NAME`, the report and every analysis read it
    through its spec (docs/add-an-objective.md). Returns the spec."""
    if not replace and (spec.name in _REGISTRY or spec.name in _ALIASES):
        raise ConfigError(f"objective {spec.name!r} is already registered; pass replace=True to redefine it")
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def unregister_objective(name: str) -> None:
    """Remove a registered objective (tests that register a toy one)."""
    spec = _REGISTRY.pop(name)
    for alias in spec.aliases:
        _ALIASES.pop(alias, None)


def objective_names() -> tuple[str, ...]:
    """The registered objectives, in registration order."""
    return tuple(_REGISTRY)


for _spec in (
    ObjectiveSpec("teacher-forcing", "next-token prediction on the true answer prefix", aliases=("tf",)),
    ObjectiveSpec("teacherless", "every answer slot of the input is the dummy `$`", fill="dummy"),
    ObjectiveSpec("reverse", "the answer reversed (goal first), on the true reversed prefix", reversed=True),
    ObjectiveSpec("reverse-teacherless", "the answer reversed, dummy inputs", reversed=True, fill="dummy",
                  aliases=("reverse+teacherless",)),
    ObjectiveSpec("partial-teacherless", "each answer slot `$` with probability p in training", fill="mixed",
                  options={"p": 0.5}),
    ObjectiveSpec("multi-token", "teacher forcing plus k extra heads predicting the next k tokens", options={"k": 1}),
    # The supervision teacher forcing leaves once the lookup fits the later tokens: r1 alone (the
    # argument's |C|^l search; docs/study-supervision.md).
    ObjectiveSpec("decision-only", "teacher forcing with the loss on the decision token only (and the start)",
                  scored="decision"),
):
    register_objective(_spec)
OBJECTIVES = objective_names()  # the built-in ones (a toy registered later is in objective_names())

Model = Callable[[Int[Tensor, "B T"]], Float[Tensor, "B T V"]]


def autocast(device: torch.device | str):
    """bf16 autocast on CUDA, nothing on CPU (where results must be bit-reproducible)."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@dataclass(frozen=True)
class Objective:
    """name: a registered objective (`objective_names()`); its spec says what it is.  p: a mixed-fill
    objective's chance that each answer-slot input is replaced by `$` during training (0 = teacher
    forcing, 1 = teacherless).  k: the extra output heads predicting r_(i+1) .. r_(i+k) of an
    objective that takes them (`hansprobe.multitoken`; analyses read the main head). Evaluation and
    every analysis of a mixed-fill or extra-head model use the true answer prefix, as teacher forcing
    does: that is how such a model is decoded."""

    name: str
    p: float | None = None
    k: int | None = None

    def __post_init__(self):
        allowed = self.spec.options
        for key in ("p", "k"):
            if getattr(self, key) is not None and key not in allowed:
                takes = "; ".join(f"{n} takes {', '.join(o)}" for n, o in
                                  ((n, _REGISTRY[n].options) for n in _REGISTRY) if o)
                raise ConfigError(f"objective {self.name} takes no option {key!r}; {takes}")
        if self.p is not None and (isinstance(self.p, bool) or not isinstance(self.p, (int, float))
                                   or not 0.0 <= self.p <= 1.0):
            raise ConfigError(f"{self.name} p must be a number in [0, 1], got {self.p!r}")
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= 16):
            raise ConfigError(f"{self.name} k (extra heads) must be an integer in 1..16, got {self.k!r}")

    @property
    def spec(self) -> ObjectiveSpec:
        try:
            return _REGISTRY[self.name]
        except KeyError:
            raise ConfigError(f"unknown objective {self.name!r}; valid objectives: {', '.join(_REGISTRY)}") from None

    @property
    def options(self) -> dict:
        """The objective's options as stored in config.json ("objective_options"; {} for the plain ones)."""
        return {key: getattr(self, key) for key in self.spec.options}

    @property
    def extra_heads(self) -> int:
        return (self.k or 0) if "k" in self.spec.options else 0

    @property
    def reverse(self) -> bool:
        """The labels are the target reversed (goal first)."""
        return self.spec.reversed

    @property
    def fill(self) -> str:
        """What the answer slots of the training input hold: truth, dummy or mixed (ObjectiveSpec)."""
        return self.spec.fill

    @property
    def teacherless(self) -> bool:
        """Dummy tokens in every answer slot, in training and evaluation alike."""
        return self.spec.fill == "dummy"

    @property
    def teacher_forced(self) -> bool:
        """True when the input holds the true answer prefix (the shortcut is available)."""
        return not self.teacherless

    def labels(self, batch: Batch) -> Int[Tensor, "B L"]:
        """The target in the order this objective predicts it."""
        return batch.target.flip(1) if self.reverse else batch.target

    def label_names(self, target_len: int) -> list[str]:
        """The path token each label position holds, in label order: r0 .. r(l-1) forward, r(l-1) .. r0
        reversed (r0 the start, r(l-1) the goal), so a figure of reversed labels names the tokens."""
        order = range(target_len - 1, -1, -1) if self.reverse else range(target_len)
        return [f"r{i}" for i in order]

    def decision_index(self, target_len: int) -> int:
        """Where the decision token (the start's child on the goal arm) sits among the labels."""
        return target_len - 2 if self.reverse else 1

    def scored_indices(self, target_len: int) -> list[int]:
        """The label indices the training loss scores: all of them, or the start and the decision."""
        if self.spec.scored == "decision":
            return sorted({0, self.decision_index(target_len)})
        return list(range(target_len))

    def label_slice(self, batch: Batch) -> slice:
        """Input positions whose next-token logits are scored: P-1 .. P+l-2."""
        p = batch.prefix.shape[1]
        return slice(p - 1, p - 1 + batch.target.shape[1])

    def inputs(self, batch: Batch, generator: torch.Generator | None = None) -> Int[Tensor, "B T"]:
        """The model input: prefix ++ answer slots (l-1 tokens). `generator` (CPU) is given by the
        trainer only: partial-teacherless then replaces each slot by `$` with probability p."""
        labels = self.labels(batch)
        if self.teacherless:
            fill = torch.full_like(labels[:, :-1], batch.task.dummy)
        else:
            fill = labels[:, :-1]
            if self.fill == "mixed" and generator is not None:
                masked = (torch.rand(fill.shape, generator=generator) < self.p).to(fill.device)  # (B, L-1)
                fill = torch.where(masked, torch.full_like(fill, batch.task.dummy), fill)
        return torch.cat([batch.prefix, fill], dim=1)

    def loss(self, logits: Float[Tensor, "B T V"], batch: Batch) -> Tensor:
        """Cross-entropy on the target positions the objective scores (all l of them for most)."""
        logits = output_logits(logits)
        scored = logits[:, self.label_slice(batch)].float()  # (B, L, V)
        labels = self.labels(batch)
        if self.spec.scored != "all":
            keep = self.scored_indices(labels.shape[1])
            scored, labels = scored[:, keep], labels[:, keep]  # (B, S, V), (B, S)
        return F.cross_entropy(scored.reshape(-1, scored.shape[-1]), labels.reshape(-1))

    @torch.no_grad()
    def forced_logits(self, model: Model, batch: Batch) -> Float[Tensor, "B L V"]:
        """Logits at the target positions with the objective's own input (one forward pass)."""
        with autocast(batch.prefix.device):
            return logits_at(model, self.inputs(batch), self.label_slice(batch)).float()

    @torch.no_grad()
    def decode(self, model: Model, batch: Batch, forced: Tensor | None = None) -> Int[Tensor, "B L"]:
        """Greedy decoding as the objective's users would run it, in label order.

        Teacherless objectives answer all positions in one pass with the dummies in the answer slots.
        The others feed back their own predictions; that is computed here as a fixed point of whole
        forward passes, which gives exactly the token-by-token result: with causal attention the
        logits at label i depend only on the tokens before it, so after k passes the first k labels
        are the greedy ones, and a row whose predictions no longer change is the greedy sequence. A
        model that is right from the second token on converges in 2-3 passes instead of l. Through
        the fused forward the prompt (unchanged by every pass) is run once, and each pass runs only
        the l label positions from its keys and values (`FusedGPT.extend`; a text-format model's through
        transformers' cache, `TextFormatModel.extend`).
        `forced`: the argmax predictions with the true prefix (B, L), when the caller has them."""
        if self.teacherless:
            return forced if forced is not None else self.forced_logits(model, batch).argmax(-1)
        pred = (forced if forced is not None else self.forced_logits(model, batch).argmax(-1)).clone()  # (B, L)
        # A row whose forced argmax is the true answer before the last label is greedy already: the
        # decoding would feed it exactly the forced input again. Only the others need passes.
        labels = self.labels(batch)
        active = torch.nonzero((pred[:, :-1] != labels[:, :-1]).any(1)).flatten()
        sl = self.label_slice(batch)  # P-1 .. P+l-2: the prompt's last token, then the fed-back answers
        net = inference_view(model)
        with autocast(batch.prefix.device):
            kv = None
            if hasattr(net, "keys_values") and len(active):  # the prompt's keys and values once; each pass runs the l label positions
                kv = net.keys_values(batch.prefix[active, :sl.start])  # None: a text model that fills no cache or is hooked
                row = torch.zeros(len(pred), dtype=torch.long, device=pred.device)
                row[active] = torch.arange(len(active), device=pred.device)  # a graph's row in kv
            for _ in range(pred.shape[1] if len(active) else 0):  # at most l passes; usually 2-3
                x = torch.cat([batch.prefix[active], pred[active, :-1]], dim=1)
                if kv is not None:
                    rows = row[active]
                    new = net.extend([(k[rows], v[rows]) for k, v in kv], x[:, sl.start:]).argmax(-1)
                else:  # something is hooked on the model: its own forward, so that the hooks apply
                    new = logits_at(model, x, sl).argmax(-1)  # (b, L)
                changed = (new != pred[active]).any(1)
                pred[active] = new
                active = active[changed]
                if len(active) == 0:
                    break
        return pred


    @torch.no_grad()
    def correctness(self, model: Model, batch: Batch, batch_size: int = 1000, chunks=None,
                    guesses: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(forced, free): per graph and label position, whether the forced-input argmax and the
        greedy decoding are right, (B, L) bool on CPU, in chunks of `batch_size` graphs (`chunks`:
        an iterable of sub-batches to use instead, e.g. one with a progress bar, in batch order).
        `guesses`: the forced-input argmax of the whole batch (B, L), when the caller has it."""
        device = next(model.parameters()).device
        forced, free, start = [], [], 0
        for chunk in chunks if chunks is not None else batch.split(batch_size):
            chunk = chunk.to(device)
            labels = self.labels(chunk)
            if guesses is None:
                guess = self.forced_logits(model, chunk).argmax(-1)  # (b, L): also the decoding's first pass
            else:
                guess = guesses[start:start + len(chunk)].to(device)
            start += len(chunk)
            forced.append((guess == labels).cpu())
            free.append((self.decode(model, chunk, forced=guess) == labels).cpu())
        return torch.cat(forced), torch.cat(free)

    def evaluate(self, model: Model, batch: Batch, batch_size: int = 1000) -> dict:
        """The training log's metrics (no intervals; `analyses.behaviour` adds them): exact match,
        decision accuracy and per-position accuracy, forced and free."""
        forced, free = self.correctness(model, batch, batch_size)
        n, k = free.shape[0], self.decision_index(free.shape[1])
        share = lambda ok: int(ok.sum()) / n  # noqa: E731  (exact: counts, not a float32 mean)
        return {"exact_match": share(free.all(1)), "decision_accuracy": share(free[:, k]),
                "forced_accuracy": [share(c) for c in forced.T], "free_accuracy": [share(c) for c in free.T],
                "eval_graphs": n}


def successor_indices(target_len: int) -> list[int]:
    """Label indices whose token follows from the previous one through one edge: 2 .. l-1 (the last
    one can also be copied from the prompt, where the goal is). What the follow rate and shortcut
    patching swap, in the objective's label order; a path-star task's own `lookup_indices`."""
    return list(range(2, target_len))


def inner_lookup_indices(target_len: int) -> list[int]:
    """Label indices read only through the lookup (the successor indices but the last): 2 .. l-2 (at l-1 the goal can be copied from the
    prompt). Empty for path_len <= 3: then there is no lookup index at all."""
    return list(range(2, target_len - 1))


def get_objective(name: str, options: dict | None = None) -> Objective:
    """The objective called `name` (or one of its aliases) with its options (defaults from its
    ObjectiveSpec); unknown names get an error listing the valid ones."""
    if not isinstance(name, str):
        raise ConfigError(f"objective must be a name like \"teacher-forcing\", got {name!r}")
    canonical = _ALIASES.get(name, name)
    if canonical not in _REGISTRY:
        raise ConfigError(f"unknown objective {name!r}; valid objectives: {', '.join(_REGISTRY)}")
    if options is not None and not isinstance(options, dict):
        raise ConfigError(f"objective options must be a JSON object, got {options!r}")
    opts = {**_REGISTRY[canonical].options, **(options or {})}
    unknown = set(opts) - set(OPTIONS)
    if unknown:
        raise ConfigError(f"unknown objective options {sorted(unknown)}")
    return Objective(canonical, **opts)


def as_objective(objective: Objective | str) -> Objective:
    """An Objective, from itself or from a registered name (with default options)."""
    return objective if isinstance(objective, Objective) else get_objective(objective)


def objective_from_config(cfg: dict) -> Objective:
    """The objective a checkpoint's config.json names, with its options."""
    return get_objective(cfg["objective"], cfg.get("objective_options"))
