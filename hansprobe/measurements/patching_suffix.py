"""Activation patching on a model that runs from a held prefix (a text-format model's
`forward_after`): the same sweeps as `transformer_lens.patching`, run in chunks of the batch size,
each patched pass only over the positions from the first one the patch can change (docs/decisions.md 72).

A goal-swap pair's runs agree on every position before the goal, so a patch there is no patch, and
a patch at position j changes nothing before j (a causal model). Each chunk therefore holds the
keys and values of its run up to the first position where some patched-in activation differs from
the run's own, once, and every patched pass continues from them: on the edge-first layout that is a
handful of text positions instead of the whole prompt, and memory is bounded by the chunk. The
values come back as a `PatchingResult` of the full grid, as `_by_position_sweep` returns, so that
normalising and bootstrap intervals are the library's. Shortcut patching's passes
(`swap_patched_predictions`) continue the same way from r_(i-1)'s position.
"""
from __future__ import annotations

from functools import partial

import torch

from hansprobe.mechanics.forward import chunks

# sweep -> the activation it patches (per position, or for "heads" a head's output at every position)
SWEEP_ACTIVATION = {"resid": "resid_pre", "attn": "attn_out", "mlp": "mlp_out", "heads-by-pos": "z", "heads": "z"}


def _hook(sweep: str, cell: list[int], source: torch.Tensor, first: int):
    """The hook that writes the patched-in activation `source` (b, T, ...) into the run at `cell`;
    it sees positions first.. of the run (`forward_after`)."""
    def hook(act, hook):  # (b, new, d) or (b, new, H, d_head)
        act = act.clone()
        if sweep == "heads":
            act[:, :, cell[1]] = source[:, first: first + act.shape[1], cell[1]]
        elif sweep == "heads-by-pos":
            act[:, cell[1] - first, cell[2]] = source[:, cell[1], cell[2]]
        else:
            act[:, cell[1] - first] = source[:, cell[1]]
        return act
    return hook


@torch.no_grad()
def suffix_sweeps(tlp, model, runs: dict, sweeps, pos: int, metrics: dict, batch_size: int,
                  progress: bool | str = False) -> dict:
    """{(direction, sweep): PatchingResult (metric, *grid, batch)}: `runs` maps each direction to
    (tokens patched into, tokens patched from), each (B, T); `metrics` maps a name to
    fn(logits at `pos` (b, V), the chunk's rows of the batch, the unpatched run's logits there (b, V))
    -> (b,). Cells whose patch changes nothing get the unpatched run's values, as in the library."""
    names = {s: [tlp.utils.get_act_name(SWEEP_ACTIVATION[s], layer) for layer in range(model.cfg.n_layers)] for s in sweeps}
    wanted = {n for ns in names.values() for n in ns}
    b_all, t_all = next(iter(runs.values()))[0].shape
    values, baseline = {}, {d: torch.empty(len(metrics), b_all) for d in runs}
    done = 0
    for chunk in chunks(torch.arange(b_all), batch_size, "patching", progress):
        rows = slice(done, done + len(chunk))
        done += len(chunk)
        cached = {}  # the chunk's activations and logits at `pos` of each run, computed once for both directions

        def run(x):
            if id(x) not in cached:
                logits, cache = model.run_with_cache(x[rows, :pos + 1], names_filter=lambda n: n in wanted)
                cached[id(x)] = (logits[:, pos].float(), cache)
            return cached[id(x)]

        for direction, (x_into, x_from) in runs.items():
            (own_last, own), (_, source) = run(x_into), run(x_from)
            # (L, pos+1[, H]): where some row's patched-in activation differs from the run's own
            differs = {s: torch.stack([(source[n] != own[n]).any(-1).any(0) for n in names[s]]) for s in sweeps}
            changed = [d.nonzero()[:, 1].min() for d in differs.values() if d.any()]
            first = int(min(changed)) if changed else pos + 1  # no patch changes a position before this one
            kv = model.keys_values(x_into[rows, :first]) if 0 < first <= pos else None
            first = first if kv is not None else 0
            x = x_into[rows, :pos + 1]
            base = torch.stack([fn(own_last, rows, own_last) for fn in metrics.values()])  # (M, b)
            baseline[direction][:, rows] = base
            for s in sweeps:
                d = differs[s]
                grid = (d.shape[0], d.shape[2]) if s == "heads" else (d.shape[0], t_all, *d.shape[2:])
                vals = values.setdefault((direction, s), torch.empty(len(metrics), *grid, b_all))
                vals[..., rows] = base.view(len(metrics), *([1] * len(grid)), -1)
                cells = d.any(1).nonzero() if s == "heads" else d.nonzero()  # (layer, head) | (layer, pos[, head])
                for cell in cells.tolist():
                    hook = _hook(s, cell, source[names[s][cell[0]]], first)
                    last = model.forward_after(kv, x, [(names[s][cell[0]], hook)])[:, -1].float()
                    vals[(slice(None), *cell, rows)] = torch.stack([fn(last, rows, own_last) for fn in metrics.values()])
    return {(direction, s): tlp.PatchingResult(
                values=vals, axis_names=_axes(s, vals.ndim - 2), metric_names=list(metrics), reduced=False,
                index_df=tlp.make_df_from_ranges(list(vals.shape[1:-1]), _axes(s, vals.ndim - 2)),
                baseline=baseline[direction], has_metric_axis=True)
            for (direction, s), vals in values.items()}


def _axes(sweep: str, ndim: int) -> list[str]:
    """The library's names for a sweep's axes."""
    return ["layer", "head"] if sweep == "heads" else ["layer", "pos", "head"][:ndim]


def swap_patched_predictions(model, x, w, pos: int) -> list[torch.Tensor]:
    """Per layer, the argmax at `pos` of `x` (b, T) with the residual entering that layer at `pos`
    taken from the run where the token there is `w` (b,): both runs continue from the keys and
    values of the positions before `pos`, which they share (`forward_after`)."""
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]
    kv = model.keys_values(x[:, :pos])
    swapped = x[:, :pos + 1].clone()
    swapped[:, pos] = w
    kept = {}

    def keep(act, hook, n):
        kept[n] = act[:, -1].clone()

    def put(act, hook, n):
        act = act.clone()
        act[:, -1] = kept[n]
        return act

    model.forward_after(kv, swapped, [(n, partial(keep, n=n)) for n in names])
    return [model.forward_after(kv, x[:, :pos + 1], [(n, partial(put, n=n))])[:, -1].argmax(-1).cpu() for n in names]
