"""Steering along a probe (hansprobe/mechanics/steering.py): the site reruns only the blocks after the probe's
layer and must give what the full hooked forward gives with the same edit; the analysis-level use
(steer / ablate against random directions) is checked in test_probes.py."""
import numpy as np
import pytest
import torch

from hansprobe.objectives import get_objective

from helpers import tiny_model, tiny_task


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_steering_reruns_only_the_later_blocks_and_gets_the_hooked_result(layer):
    """The steering site keeps the residual at the probe's layer and reruns the blocks after it; an
    edit there must give what the full hooked forward gives with the same edit at that hook."""
    from hansprobe.mechanics.activations import resid_hook
    from hansprobe.mechanics.steering import _Site

    task = tiny_task()
    model, obj = tiny_model(task, seed=4, n_layers=2), get_objective("teacher-forcing")
    batch = task.generate(24, 6)
    site = _Site(model, obj, batch, layer, batch_size=10)
    assert site.direct  # the native bridge's blocks run alone
    position = site.at  # the decision position itself: an edit there reaches the logits from every layer
    shift = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    dec, comp = batch.candidates[:, 0], batch.candidates[:, 1]
    got = site.logit_diff(dec, comp, position, lambda x, rows: x + shift)

    def hook(x, hook):
        x = x.clone()
        x[:, position] += shift
        return x
    with torch.no_grad(), model.hooks(fwd_hooks=[(resid_hook(layer), hook)]):
        logits = model(obj.inputs(batch))[:, site.at]
    want = (logits[torch.arange(24), dec] - logits[torch.arange(24), comp]).numpy()
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(site.logit_diff(dec, comp, position, None) - want).max() > 1e-3  # the edit changed something
