"""Questions: each reads the measurements' summaries (report.json's "analyses") and gives a verdict,
with its rule and thresholds registered beside it (registry.py; docs/add-a-question.md). They decide
and do not measure. Importing this package registers the built-in questions and notes (and, through
the measurements they read, the built-in analyses)."""
from hansprobe.questions.registry import (ANSWERS, NoteSpec, QuestionContext, QuestionSpec, register_note,
                                          register_question, registered_questions, verdict)
from hansprobe.questions import decision_computed, failure, indecipherable, lookup, plan, search_recovers  # noqa: F401  (register)

__all__ = ["ANSWERS", "NoteSpec", "QuestionContext", "QuestionSpec", "register_note", "register_question",
           "registered_questions", "verdict"]
