"""Analyses: each takes a model and a task batch and returns a Result (JSON + plotly figures), and
registers itself for the report (analyses/registry.py); the questions the report answers are
registered beside them (analyses/questions.py). Importing this package registers the built-in ones."""
from hansprobe.analyses.base import Result, wilson_ci
from hansprobe.analyses.behaviour import BehaviourResult, measure_behaviour
from hansprobe.analyses.dynamics import DynamicsResult, measure_dynamics
from hansprobe.analyses.entropy import EntropyResult, measure_entropy
from hansprobe.analyses.follow import FollowResult, measure_follow
from hansprobe.analyses.heads import HeadsResult, measure_heads
from hansprobe.analyses.patching import measure_patching
from hansprobe.analyses.patterns import REFERENCE_PATTERNS
from hansprobe.analyses.probes import measure_probes
from hansprobe.analyses import compounding, decisions, failure, inference, lookup, plan, plan_depth, witness  # noqa: F401  (register questions, the witness, trees' decisions, compounding, search)
from hansprobe.analyses.questions import QuestionContext, QuestionSpec, register_question, registered_questions
from hansprobe.analyses.registry import ANALYSES, AnalysisContext, AnalysisSpec, register_analysis, registered

__all__ = ["Result", "wilson_ci", "BehaviourResult", "measure_behaviour", "EntropyResult", "measure_entropy",
           "DynamicsResult", "measure_dynamics", "FollowResult", "measure_follow", "HeadsResult", "measure_heads",
           "REFERENCE_PATTERNS", "measure_patching", "measure_probes", "ANALYSES", "AnalysisContext", "AnalysisSpec",
           "register_analysis", "registered",
           "QuestionContext", "QuestionSpec", "register_question", "registered_questions"]
