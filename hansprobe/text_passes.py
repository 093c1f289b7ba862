"""How a text-format model's passes compute only what the analyses read (docs/decisions.md 71): the
LM head restricted to the task's tokens, transformers' own key/value cache reaching TransformerLens's
bridged attention, and the blocks before a `start_at_layer` handing their input on. Each is a context
manager that changes the modules for one pass and puts them back."""
from __future__ import annotations

from contextlib import contextmanager

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


class Columns(nn.Module):
    """A linear LM head's rows `cols` only (the task's tokens, in the integer vocabulary's order)."""

    def __init__(self, head: nn.Linear, cols: Tensor):
        super().__init__()
        self.head, self.cols = head, cols

    def forward(self, x: Float[Tensor, "... d_model"], **kwargs) -> Float[Tensor, "... V"]:
        bias = self.head.bias
        return F.linear(x, self.head.weight[self.cols], None if bias is None else bias[self.cols])


def head_slot(module) -> tuple[nn.Module | None, str]:
    """(owner, child name) of the linear LM head a forward calls: the bridge's unembedding's wrapped
    module, or a transformers module's output embeddings; (None, "") where there is none to restrict."""
    unembed = getattr(module, "unembed", None)
    if isinstance(getattr(unembed, "original_component", None), nn.Linear):
        return unembed, "_original_component"  # the bridge keeps it as this child (read by a property)
    get = getattr(module, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if isinstance(head, nn.Linear):
        for name, child in module.named_children():
            if child is head:
                return module, name
    return None, ""


@contextmanager
def attention_reads_cache(module):
    """Hand each bridged attention transformers' cache under the name TransformerLens reads: its
    attention updates `past_key_values` (or `layer_past`), while a transformers 5 block passes it as
    `cache`, which would leave the cache empty. Installed for a cached call only."""
    def pre(_, args, kwargs):
        if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
            kwargs = {**kwargs, "past_key_values": kwargs["cache"]}
        return args, kwargs

    blocks = getattr(module, "blocks", None) if hasattr(module, "adapter") else None
    handles = [b.attn.register_forward_pre_hook(pre, with_kwargs=True) for b in (blocks or ()) if hasattr(b, "attn")]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _pass_through(*args, **kwargs):
    return args[0] if args else kwargs["hidden_states"]


@contextmanager
def blocks_skipped(module, first: int):
    """Blocks before `first` hand their input on instead of computing: a bridge pass with
    `start_at_layer=first` replaces their output by the residual it injects at block `first`, so
    they are waste. A transformers 5 decoder layer returns the hidden states themselves, which is
    what stands in for it; under an older transformers they run (the same logits, slower)."""
    import transformers

    skipped = []
    if int(transformers.__version__.split(".")[0]) >= 5:
        for block in list(getattr(module, "blocks", ()))[:first]:
            inner = block.original_component
            inner.forward = _pass_through  # an instance attribute: nn.Module calls it in place of the class's
            skipped.append(inner)
    try:
        yield
    finally:
        for inner in skipped:
            del inner.forward
