"""Shared mechanics: what several measurements use and none owns — the Result base and its intervals
(results.py), batched forward passes (forward.py), residual activations (activations.py), reference
attention patterns (patterns.py), probe targets (probe_targets.py), the counterfactual follow rate
(follow.py) and steering along a probe (steering.py). Nothing here registers or decides."""
