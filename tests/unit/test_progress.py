"""Progress for long work (hansprobe/progress.py): inside the report, an analysis's own loops show a
heartbeat under the report's plain lines, so that an analysis of a large model is not silent."""
from hansprobe import progress


def test_a_heartbeat_prints_a_line_at_most_every_interval(monkeypatch, capsys):
    clock = iter([0.0, 10.0, 59.0, 61.0, 70.0, 125.0])  # the start, then one reading per update
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(progress, "HEARTBEAT_S", 60.0)
    bar = progress.progress_bar(5, "search", "heartbeat", unit="batch")
    for _ in range(5):
        bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["search: 3/5 batches", "search: 5/5 batches"]
    assert lines[0].endswith("(61 s elapsed, ~41 s left)")


def test_the_report_gives_its_analyses_a_heartbeat_under_lines_a_bar_under_a_bar_else_nothing():
    from hansprobe.report.run import _inner_progress

    assert _inner_progress(progress.progress_bar(3, "report", "lines")) == "heartbeat"
    assert _inner_progress(progress.progress_bar(3, "report", True)) is True
    assert _inner_progress(progress.progress_bar(3, "report", False)) is False
    assert _inner_progress(None) is False
