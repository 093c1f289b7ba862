"""The old import path, kept so that existing notebooks run: `hansprobe.analyses` was split into
`hansprobe.measurements` (measure_*, their results, register_analysis), `hansprobe.questions`
(QuestionSpec, register_question) and `hansprobe.mechanics` (what measurements share). Importing it
warns once and re-exports the names it held; import from the new homes instead."""
import warnings

from hansprobe.measurements import *  # noqa: F401,F403
from hansprobe.measurements import __all__ as _measurement_names
from hansprobe.questions import QuestionContext, QuestionSpec, register_question, registered_questions  # noqa: F401

warnings.warn("hansprobe.analyses is now hansprobe.measurements (measure_*, results, register_analysis) and "
              "hansprobe.questions (QuestionSpec, register_question); import from those", DeprecationWarning, stacklevel=2)

__all__ = [*_measurement_names, "QuestionContext", "QuestionSpec", "register_question", "registered_questions"]
