"""Analyses: each takes a model and a task batch and returns a Result (JSON + plotly figures)."""
from hansprobe.analyses.base import Result, wilson_ci
from hansprobe.analyses.behaviour import BehaviourResult, measure_behaviour
from hansprobe.analyses.dynamics import DynamicsResult, measure_dynamics
from hansprobe.analyses.entropy import EntropyResult, measure_entropy
from hansprobe.analyses.follow import FollowResult, measure_follow
from hansprobe.analyses.heads import HeadsResult, measure_heads
from hansprobe.analyses.patterns import REFERENCE_PATTERNS

__all__ = ["Result", "wilson_ci", "BehaviourResult", "measure_behaviour", "EntropyResult", "measure_entropy",
           "DynamicsResult", "measure_dynamics", "FollowResult", "measure_follow", "HeadsResult", "measure_heads",
           "REFERENCE_PATTERNS"]
