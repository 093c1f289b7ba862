"""Measurements: each takes a model and a task batch and returns a Result (JSON + plotly figures) and
registers itself for the report as an *analysis* (registry.py; the name report.json and the CLI use).
They measure and do not answer: the questions that read them live in hansprobe/questions.
Importing this package registers the built-in ones."""
from hansprobe.mechanics.results import Result, wilson_ci
from hansprobe.measurements.registry import ANALYSES, AnalysisContext, AnalysisSpec, register_analysis, registered
from hansprobe.measurements.behaviour import BehaviourResult, measure_behaviour
from hansprobe.measurements.compounding import CompoundingResult, measure_compounding
from hansprobe.measurements.decisions import measure_decisions
from hansprobe.measurements.dynamics import DynamicsResult, measure_dynamics
from hansprobe.measurements.entropy import EntropyResult, measure_entropy
from hansprobe.measurements.goal_dependence import GoalDependenceResult, measure_goal_dependence
from hansprobe.measurements.heads import HeadsResult, measure_heads
from hansprobe.measurements.inference import InferenceResult, measure_inference
from hansprobe.measurements.patching import measure_patching
from hansprobe.measurements.plan_depth import measure_plan_depth
from hansprobe.measurements.probes import measure_probes
from hansprobe.measurements.witness import measure_witness
from hansprobe.mechanics.follow import FollowResult, measure_follow
from hansprobe.mechanics.patterns import REFERENCE_PATTERNS

__all__ = ["Result", "wilson_ci", "ANALYSES", "AnalysisContext", "AnalysisSpec", "register_analysis", "registered",
           "BehaviourResult", "measure_behaviour", "CompoundingResult", "measure_compounding", "measure_decisions",
           "DynamicsResult", "measure_dynamics", "EntropyResult", "measure_entropy", "GoalDependenceResult",
           "measure_goal_dependence", "HeadsResult", "measure_heads", "InferenceResult", "measure_inference",
           "measure_patching", "measure_plan_depth", "measure_probes", "measure_witness", "FollowResult",
           "measure_follow", "REFERENCE_PATTERNS"]
