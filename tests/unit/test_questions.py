"""A question's thresholds are the values its rule applies: handed to `decide` from the registration,
and, where a measurement applies one first, checked against the value that measurement recorded."""
from dataclasses import replace

import pytest

from hansprobe.errors import ConfigError
from hansprobe.questions import QuestionSpec, register_question, verdict
from hansprobe.questions.registry import _QUESTIONS, decide_some, registered_thresholds, thresholds, unregister_question


@pytest.fixture
def restore_questions():
    saved = dict(_QUESTIONS)
    yield
    _QUESTIONS.clear()
    _QUESTIONS.update(saved)


def test_decide_gets_the_registered_thresholds_and_the_report_records_the_same(restore_questions):
    seen = {}

    def decide(ctx):
        seen.update(ctx.thresholds)
        return verdict("yes" if ctx.analysis("toy")["x"] > ctx.thresholds["toy_bar"] else "no", "x against the bar")

    register_question(QuestionSpec(key="toy_bar_q", text="x above the bar?", needs=("toy",), decide=decide,
                                   rule="yes when x > {toy_bar}", thresholds={"toy_bar": 0.3}))
    assert decide_some(None, {"toy": {"x": 0.5}}, ["toy_bar_q"])["toy_bar_q"]["answer"] == "yes"
    assert seen == {"toy_bar": 0.3} == {"toy_bar": thresholds()["toy_bar"]}
    # registering it again with another bar changes what is applied and what is recorded together
    register_question(replace(_QUESTIONS["toy_bar_q"], thresholds={"toy_bar": 0.7}), replace=True)
    assert decide_some(None, {"toy": {"x": 0.5}}, ["toy_bar_q"])["toy_bar_q"]["answer"] == "no"
    assert seen["toy_bar"] == thresholds()["toy_bar"] == 0.7
    unregister_question("toy_bar_q")


def test_a_threshold_a_measurement_applied_otherwise_is_refused_not_recorded_wrongly(restore_questions):
    lookup = _QUESTIONS["lookup"]
    heads = {"thresholds": {"drop": 0.5, "max_set_fraction": 0.25, "follow_majority": 0.5}}
    lookup.check_applied({"heads": heads})  # the registered values are the applied ones
    register_question(replace(lookup, thresholds={**lookup.thresholds, "lookup_drop": 0.4}), replace=True)
    with pytest.raises(ConfigError, match=r"heads analysis applied thresholds.drop = 0.5 but question 'lookup' records "
                                          r"lookup_drop = 0.4"):
        decide_some("teacher-forcing", {"heads": heads, "behaviour": {}}, ["lookup"])


def test_applied_by_may_only_name_the_questions_own_thresholds():
    with pytest.raises(ConfigError, match="applied_by names bar, which are not among its thresholds"):
        QuestionSpec(key="k", text="t", needs=(), decide=lambda ctx: None, rule="r", applied_by={"bar": "x.bar"})
