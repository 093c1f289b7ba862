"""The shortcut-detection report: verdict rules, report.json schema, reproducibility, the files it
writes and the CLI. The page itself (self-contained HTML, Chromium): test_report_html.py. The `runs`
and `report` fixtures (four tiny runs, one report) are session-wide, in conftest.py."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hansprobe.cli import main
from hansprobe.errors import ConfigError
from hansprobe.questions.indecipherable import indecipherable_verdict
from hansprobe.report import ANSWERS, FORMAT, QUESTIONS, ReportSettings, write_report
from hansprobe.storage import jsonable

from helpers import REPO, TINY_REPORT, TINY_TRAIN_ARGS as TRAIN, typed_cells

SMALL = TINY_REPORT  # in process; the parallel path: below


# --- verdict rules on hand-made analysis results (more in test_verdicts.py; the plan: test_plan_depth.py) --
def test_indecipherable_verdict_is_the_entropy_analysis_outcome():
    e = {"outcome": "indecipherable", "verdict": "candidate accuracy ... equivalent", "decision_accuracy": 0.5,
         "decision_accuracy_ci": [0.48, 0.52], "candidate_accuracy": 0.5, "candidate_accuracy_ci": [0.48, 0.52],
         "equivalence": {"band": [0.4, 0.6], "p_value": 0.001, "equivalent": True}, "chance": 0.5,
         "information_nats": 0.0, "information_nats_ci": [-0.01, 0.01], "candidate_entropy_frac": 0.99,
         "candidate_entropy_frac_ci": [0.98, 1.0], "mass_outside_candidates": 0.01,
         "preference": {"edge listed first": {"rate": 0.6, "ci": [0.55, 0.65], "follows": True}}}
    v = indecipherable_verdict(e)
    assert v["answer"] == "yes" and "edge listed first" in v["evidence"] and v["evidence"].startswith("candidate accuracy")
    for outcome, answer in (("decided", "no"), ("not learned", "not learned"), ("inconclusive", "inconclusive")):
        assert indecipherable_verdict({**e, "outcome": outcome})["answer"] == answer


# --- the report on real (tiny) checkpoints -------------------------------------------------------
def test_every_built_in_threshold_a_measurement_applies_is_recorded_by_it(report):
    """Each `applied_by` path exists in the summaries of a real report and holds the registered value (a
    question whose measurement applied another one is refused: test_questions.py)."""
    from hansprobe.questions import registered_questions

    _, doc = report
    checked = 0
    for q in registered_questions():
        for name, path in q.applied_by.items():
            analysis, *keys = path.split(".")
            for c in doc["checkpoints"]:
                value = c["analyses"].get(analysis)
                if value is None or "skipped" in value:
                    continue
                for k in keys:
                    value = value[k]
                assert value == q.thresholds[name], (q.key, name)
                checked += 1
    assert checked >= 10


def test_report_json_has_the_documented_schema(report, runs):
    out, doc = report
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert doc["format"] == FORMAT and doc["format_version"] == 2 and list(doc["questions"]) == list(QUESTIONS)
    assert doc["pending"] == []
    assert list(QUESTIONS)[0] == "clever_hans_failure"  # the page leads with the combined verdict
    assert [c["name"] for c in doc["checkpoints"]] == [p.name for p in runs.values()]
    for c in doc["checkpoints"]:
        assert set(c) == {"name", "path", "config", "provenance", "training_curve", "verdicts", "analyses", "notes"}
        assert set(c["verdicts"]) == set(QUESTIONS)
        for v in c["verdicts"].values():
            assert v["answer"] in ANSWERS and v["evidence"] and set(v) == {"answer", "summary", "evidence", "values", "error_rate"}
            assert 0 < len(v["summary"].split()) <= 16 and v["summary"].rstrip(" …") in v["evidence"] or \
                v["summary"].startswith("the signature")  # the clause that decided, from the evidence
        assert set(c["analyses"]) == {"behaviour", "compounding", "entropy", "inference", "decisions", "heads", "plan_depth",
                                      "patching", "dynamics", "witness"}
        # the JSON contract other tools read (issue 38)
        assert "first_error_at_decision_share" in c["analyses"]["compounding"]
        assert all({"accuracy", "accuracy_ci", "uniform_accuracy", "beats_uniform"} <= set(r)
                   for r in c["analyses"]["inference"]["rows"])
        if c["config"]["objective"] in ("reverse", "teacherless"):  # no failure verdict: no witness is looked for
            assert c["analyses"]["witness"] == {"skipped": "no capacity witness was given (report --witness CKPT)"}
        else:  # a witness found among the report's checkpoints: same task, layout and shape, another objective
            assert Path(c["analyses"]["witness"]["path"]).parent == Path(c["path"]).parent
        assert c["provenance"]["n_graphs"] == 40 and c["provenance"]["graphs"] == {"seed": SMALL.seed}
        assert c["training_curve"] and c["training_curve"][-1]["step"] == 6
    by = {c["config"]["objective"]: c for c in doc["checkpoints"]}
    assert by["teacherless"]["verdicts"]["lookup"]["answer"] == "not applicable"
    assert by["teacherless"]["verdicts"]["clever_hans_failure"]["answer"] == "not applicable"
    assert by["reverse"]["verdicts"]["clever_hans_failure"]["answer"] == "not applicable"
    assert by["reverse"]["verdicts"]["indecipherable"]["answer"] == "not applicable"
    # issue 23 part 6: under reversed targets no cell is taken inside the answer: the plan question does not apply
    assert "reversed targets" in by["reverse"]["analyses"]["plan_depth"]["applicable"]
    assert by["reverse"]["verdicts"]["plan_represented"]["answer"] == "not applicable"
    assert "skipped" in by["teacherless"]["analyses"]["heads"]
    assert "skipped" not in by["teacher-forcing"]["analyses"]["dynamics"]  # it kept a snapshot
    assert "skipped" in by["reverse"]["analyses"]["dynamics"]


def _without_witness(c: dict) -> dict:
    """A checkpoint's report without what depends on the other checkpoints beside it: the capacity
    witness found among them (issue 36 part 7) and the failure verdict's words about it."""
    c = json.loads(json.dumps(c))
    c["analyses"].pop("witness")
    c["verdicts"].pop("clever_hans_failure")
    return c


def test_report_is_reproducible(runs, report, tmp_path):
    """The same checkpoint and settings give the same JSON, whether measured alone or beside others
    (but for the witness the others may provide)."""
    _, doc = report
    again = write_report(tmp_path, [runs["teacher-forcing"]], SMALL)
    strip = lambda c: re.sub(r'"measured_with": \{[^}]*\}', "", json.dumps(_without_witness(c), sort_keys=True))  # noqa: E731
    assert strip(again["checkpoints"][0]) == strip(doc["checkpoints"][0])
    assert again["checkpoints"][0]["analyses"]["witness"] == {"skipped": "no capacity witness was given (report --witness CKPT)"}


def test_report_refuses_bad_settings_and_duplicate_names(runs, tmp_path):
    with pytest.raises(ConfigError, match="at least 10 graphs"):
        ReportSettings(n_graphs=3)
    with pytest.raises(ConfigError, match="share a directory name"):
        write_report(tmp_path / "o", [runs["reverse"], runs["reverse"]], SMALL)


def test_cli_report_exit_codes(runs, tmp_path, capsys):
    ck = str(runs["teacher-forcing"])
    assert main(["report", ck, "-n", "20", "--mechanism-graphs", "12", "--patch-pairs", "10", "--out", str(tmp_path / "r"),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    c = doc["checkpoints"][0]
    assert c["provenance"]["n_graphs"] == 20 and c["analyses"]["behaviour"]["n_graphs"] == 20
    assert c["provenance"]["mechanism_graphs"] == 12 and c["analyses"]["heads"]["n_graphs"] == 12
    assert c["analyses"]["plan_depth"]["n_graphs"] == 12 and c["analyses"]["patching"]["n_pairs"] == 10
    (tmp_path / "file").write_text("x")
    assert main(["report", ck, "-n", "20", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hansprobe: error:") and "\n" not in err


def test_a_data_file_that_does_not_fit_fails_before_measuring(runs, tmp_path, capsys):
    from hansprobe.tasks import PathStar, write_ntf

    write_ntf(tmp_path / "g.txt", PathStar(3, 4, 20).generate(20, seed=1))  # another task than the runs'
    assert main(["report", str(runs["reverse"]), "--data", str(tmp_path / "g.txt"), "--out", str(tmp_path / "r")]) == 2
    assert "use a file of the model's task" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_report_on_a_path_too_short_for_the_shortcut(tmp_path):
    argv = [a if a != "4" else "3" for a in TRAIN]  # --path-len 3: start, decision, then the goal (copied)
    assert main([*argv, "--out", str(tmp_path / "short")]) == 0
    doc = write_report(tmp_path / "r", [tmp_path / "short"], SMALL)
    c = doc["checkpoints"][0]
    assert c["verdicts"]["lookup"]["answer"] == "not applicable" and "too short" in c["verdicts"]["lookup"]["evidence"]
    # no lookup index: the failure is not applicable, unless another part already refutes it
    failure = c["verdicts"]["clever_hans_failure"]
    assert failure["answer"] in ("not applicable", "no")
    if failure["answer"] == "no":
        assert c["verdicts"]["indecipherable"]["answer"] in ("no", "not learned") or c["verdicts"]["decision_computed"]["answer"] == "yes"
    assert c["verdicts"]["decision_computed"]["answer"] in ("yes", "no", "inconclusive")  # defined at l = 3


def test_a_directory_of_checkpoints_stands_for_its_checkpoints(runs, tmp_path):
    from hansprobe.report import expand_checkpoint_dirs

    root = next(iter(runs.values())).parent  # holds the three tiny runs (and nothing else with a config.json)
    assert expand_checkpoint_dirs([root]) == sorted(runs.values())
    single = runs["reverse"]
    assert expand_checkpoint_dirs([single, root]) == [single, *sorted(runs.values())]
    with pytest.raises(ConfigError, match="at least one"):
        expand_checkpoint_dirs([])


def test_a_report_whose_output_is_not_a_terminal_logs_one_line_per_analysis(runs, tmp_path, capsys):
    assert main(["report", str(runs["reverse"]), "-n", "20", "--mechanism-graphs", "12", "--patch-pairs", "10",
                 "--out", str(tmp_path / "r")]) == 0
    from hansprobe.report import n_analyses

    n = n_analyses()  # every registered analysis, the witness (skipped here) included
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("report: ")]
    assert len(lines) == n + 1 and lines[0] == f"report: {n} analyses to run ({n} per checkpoint)"
    assert lines[1].startswith(f"report: 1/{n} reverse: behaviour done") and "s left" in lines[-1]


# --- issue 14, defect 6: report.json and report.html are switched together ----------------------
class Killed(BaseException):
    """Stands for a SIGKILL at that instant: nothing after it runs (no except handler catches it)."""


def _die_at_replace(monkeypatch, n):
    real, calls = os.replace, [0]

    def replace(a, b):
        calls[0] += 1
        if calls[0] == n:
            raise Killed
        return real(a, b)
    monkeypatch.setattr(os, "replace", replace)


def test_the_page_carries_the_hash_of_its_json(report, tmp_path):
    from hansprobe.errors import CheckpointError
    from hansprobe.report import read_report

    out, doc = report
    assert read_report(out) == json.loads((out / "report.json").read_text())
    shutil.copytree(out, tmp_path / "r")
    (tmp_path / "r" / "report.json").write_text((out / "report.json").read_text().replace('"teacher-forcing"', '"x"', 1))
    with pytest.raises(CheckpointError, match="come from different report runs"):
        read_report(tmp_path / "r")


def test_a_kill_between_the_two_renames_is_finished_by_the_next_reader(report, tmp_path, monkeypatch):
    from hansprobe.checkpoint import publish_together
    from hansprobe.report import read_report

    out, _ = report
    r = tmp_path / "r"
    shutil.copytree(out, r)
    old_html = (r / "report.html").read_text()
    new_json = (r / "report.json").read_bytes().replace(b'"format"', b'"format" ', 1)
    new_html = old_html.replace(re.search(r'content="([0-9a-f]{64})"', old_html).group(1),
                                __import__("hashlib").sha256(new_json).hexdigest())
    # renames: 3 into the staging directory (json, html, READY), then json into place (4), html into place (5)
    _die_at_replace(monkeypatch, 5)
    with pytest.raises(Killed):
        publish_together(r, {"report.json": new_json, "report.html": new_html.encode()})
    monkeypatch.undo()
    assert (r / "report.json").read_bytes() == new_json and (r / "report.html").read_text() == old_html  # torn
    read_report(r)  # finishes the switch instead of reading a torn pair
    assert (r / "report.html").read_text() == new_html and not list(r.glob(".hansprobe-staging-*"))


def test_a_failure_before_the_switch_keeps_the_old_pair_and_debris_is_removed(report, tmp_path, monkeypatch):
    from hansprobe.checkpoint import publish_together
    from hansprobe.report import read_report

    out, _ = report
    r = tmp_path / "r"
    shutil.copytree(out, r)
    before = {n: (r / n).read_bytes() for n in ("report.json", "report.html")}
    _die_at_replace(monkeypatch, 2)  # while the html is written into .staging (e.g. the disk fills up)
    with pytest.raises(Killed):
        publish_together(r, {"report.json": b"{}", "report.html": b"<html></html>"})
    monkeypatch.undo()
    assert {n: (r / n).read_bytes() for n in before} == before
    # what a SIGKILL at that moment leaves (no handler runs): a staging directory without READY, and the
    # temporary of a page write
    staging = r / (".hansprobe-staging-" + "0" * 32)
    staging.mkdir()
    (staging / "report.json").write_bytes(b"{}")
    (r / ".report.html.hansprobe-abc12345.tmp").write_bytes(b"x" * 1000)
    assert read_report(r) == json.loads(before["report.json"])
    assert sorted(p.name for p in r.iterdir()) == ["report.html", "report.json"]


def test_a_killed_report_keeps_the_checkpoints_it_finished(runs, tmp_path, capsys, monkeypatch):
    """The report is written after each checkpoint and prints its verdicts then: a run killed while
    measuring the second checkpoint leaves the first on disk and on screen, the second as pending."""
    import hansprobe.report.run as report
    from hansprobe.report import read_report

    real, calls = report.measure_checkpoint, []

    def measure(path, settings, progress=None):
        calls.append(path)
        if len(calls) == 2:
            raise Killed
        return real(path, settings, progress)
    monkeypatch.setattr(report, "measure_checkpoint", measure)
    paths = [runs["teacher-forcing"], runs["reverse"]]
    with pytest.raises(Killed):
        main(["report", *map(str, paths), "-n", "40", "--patch-pairs", "20", "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert "teacher-forcing (teacher-forcing, 40 graphs)" in out and "Clever-Hans failure?" in out
    doc = read_report(tmp_path / "r")
    assert [c["name"] for c in doc["checkpoints"]] == ["teacher-forcing"] and doc["pending"] == ["reverse"]
    assert "Partial report:</b> 1 checkpoint(s) still being measured (reverse)" in (tmp_path / "r" / "report.html").read_text()


def documented_values() -> dict[str, set[str]]:
    """The `values` keys docs/report.md documents per question (top level; for decision_computed the
    pair kinds and, under "*", the keys of each kind)."""
    text = (REPO / "docs" / "report.md").read_text()
    para = " ".join(text.split("`values` per question:")[1].split("answers carry no values")[0].split())
    out = {}
    for part in re.split(r"; (?=`[a-z_]+` —)", para):
        m = re.match(r"`([a-z_]+)` — (.*)", part.strip())
        body = re.sub(r"\([^()]*(\([^()]*\)[^()]*)*\)", "", m.group(2))  # drop the explanations in parentheses
        out[m.group(1)] = set(re.findall(r"`([a-z_]+)`", body))
    kinds = re.search(r"per pair kind \(`([a-z_]+)`,\s*`([a-z_]+)`\)", para).groups()
    out["decision_computed"] = set(kinds) | {"*" + k for k in out["decision_computed"]}
    return out


def _close(a, b, path="") -> list[str]:
    """Where two JSON values differ beyond float rounding (thread counts may change the last bits)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return ([f"{path}: keys {sorted(set(a) ^ set(b))}"] if set(a) != set(b) else
                [d for k in a for d in _close(a[k], b[k], f"{path}.{k}")])
    if isinstance(a, list) and isinstance(b, list):
        return [f"{path}: lengths"] if len(a) != len(b) else [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, (int, float)):
        return [] if b == pytest.approx(a, rel=1e-4, abs=1e-6) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_checkpoints_measured_in_parallel_processes_give_the_same_report(runs, report, tmp_path):
    """--jobs 2: two worker processes of one thread each; the same verdicts, evidence and analyses
    (up to float rounding), in the order given."""
    from dataclasses import replace

    names = ["teacher-forcing", "reverse"]
    doc = write_report(tmp_path, [runs[n] for n in names], replace(SMALL, jobs=2))
    _, serial = report
    by_name = {c["name"]: c for c in serial["checkpoints"]}
    assert [c["name"] for c in doc["checkpoints"]] == [runs[n].name for n in names]
    for c in doc["checkpoints"]:
        ref = by_name[c["name"]]
        assert {k: v["answer"] for k, v in c["verdicts"].items()} == {k: v["answer"] for k, v in ref["verdicts"].items()}  # answers too
        assert _close(_without_witness(ref)["analyses"], _without_witness(c)["analyses"]) == []
    assert (tmp_path / "report.html").is_file()


def test_report_jobs_are_checked():
    with pytest.raises(ConfigError, match="--jobs"):
        ReportSettings(jobs=-1)
    assert ReportSettings(jobs=0).workers(3) >= 1 and ReportSettings(jobs=4).workers(2) == 2
    assert ReportSettings(jobs=0, device="cuda").workers(4) == 1


def test_report_json_and_docs_agree_on_every_verdict_value(report):
    """Every key docs/report.md documents for a verdict's `values` is in report.json, and every key in
    report.json is documented (both ways, so a rename cannot pass unnoticed)."""
    _, doc = report
    documented = documented_values()
    assert set(documented) == set(QUESTIONS)
    seen = {q: set() for q in QUESTIONS}
    for c in doc["checkpoints"]:
        for q, v in c["verdicts"].items():
            if v["answer"] == "not applicable" and not (q == "plan_represented" and "hops" in v["values"]):
                assert not v["values"], (q, v["values"])  # documented: n/a answers carry no values (but the plan's
                continue  # n/a for want of depth, which says how many blocks and hops)
            keys = set(v["values"])
            if q == "decision_computed":
                keys |= {"*" + k for kind in v["values"].values() for k in kind}
            assert keys <= documented[q], (q, keys - documented[q])
            seen[q] |= keys
    for q in ("lookup", "indecipherable", "decision_computed", "plan_represented"):
        assert seen[q] == documented[q], (q, documented[q] - seen[q])


@pytest.mark.parametrize("name", ["entropy", "patching"])
def test_analyse_on_the_command_line_gives_the_reports_own_numbers(runs, report, name, capsys):
    """Issue 27: `hansprobe analyse NAME` built its own context (patching got every graph as pairs
    where the report gives it the first 200); both now build the one in report.run.analysis_context."""
    _, doc = report
    c = next(c for c in doc["checkpoints"] if c["name"] == "teacher-forcing")
    s = SMALL
    assert main(["analyse", name, str(runs["teacher-forcing"]), "-n", str(s.n_graphs), "--patch-pairs",
                 str(s.patch_pairs), "--mechanism-graphs", str(s.mechanism_graphs), "--batch-size", str(s.batch_size),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    mine = {k: v for k, v in out.items() if k not in ("analysis", "checkpoint", "graphs", "seed", "n_graphs_read")}
    theirs = c["analyses"][name]
    assert {k: theirs[k] for k in mine if k in theirs} == {k: v for k, v in mine.items() if k in theirs}
    if name == "patching":
        assert out["n_pairs"] == s.patch_pairs  # not the -n graphs


def test_behaviour_entropy_and_decisions_share_one_forced_pass_and_give_what_they_give_alone(ckpt):
    """The report's context runs the forced pass once (AnalysisContext.forced_logprobs); behaviour
    and entropy measured through it equal the analyses run alone, with one pass fewer each."""
    from hansprobe.measurements import ANALYSES, measure_behaviour, measure_entropy
    from hansprobe.measurements.registry import run_analysis
    from hansprobe.checkpoint import load_checkpoint
    from hansprobe.report.run import analysis_context

    ck = load_checkpoint(ckpt, device="cpu")
    batch = ck.task.generate(300, 7)
    passes = []
    handle = ck.model.register_forward_pre_hook(lambda mod, args: passes.append(args[0].shape[0]))
    try:
        ctx = analysis_context(ck, batch, ReportSettings(n_graphs=300, batch_size=100))
        shared = {n: run_analysis(ANALYSES[n], ctx).to_dict() for n in ("behaviour", "entropy")}
        n_shared, passes[:] = len(passes), []
        alone = {"behaviour": measure_behaviour(ck.model, ck.objective, batch, batch_size=100).to_dict(),
                 "entropy": measure_entropy(ck.model, ck.objective, batch, batch_size=100, seed=ctx.seed).to_dict()}
        n_alone = len(passes)
    finally:
        handle.remove()
    assert shared == alone
    assert ctx.cache["forced_logp"].shape == (300, batch.target.shape[1], ck.model.cfg.d_vocab)
    assert n_alone - n_shared == 3  # entropy's own forced pass, 3 chunks of 100, is the one saved


def test_each_checkpoint_is_serialised_and_each_figure_drawn_once_however_often_the_page_is_rewritten(
        runs, tmp_path, monkeypatch):
    """The report so far is rewritten after every checkpoint; what a finished checkpoint contributes
    (its JSON, its figures' HTML) is made once, so n checkpoints cost n, not n(n+1)/2 — and the
    page's figures keep unique ids."""
    from dataclasses import asdict

    import hansprobe.report.html as html
    from hansprobe.report.run import CheckpointReport

    drawn, dicts, real_draw, real_dict = [], [], html._figure_html, CheckpointReport.to_dict
    monkeypatch.setattr(html, "_figure_html", lambda fig, div_id: drawn.append(div_id) or real_draw(fig, div_id))

    def to_dict(self):
        dicts.append(self.name)
        d = real_dict(self)
        old = asdict(self)  # what the dict was before: asdict, then the figures dropped
        old.pop("figures")
        assert json.dumps(d, sort_keys=True) == json.dumps(jsonable(old), sort_keys=True)
        return d
    monkeypatch.setattr(CheckpointReport, "to_dict", to_dict)
    paths = [runs[n] for n in ("teacher-forcing", "reverse", "teacherless")]
    write_report(tmp_path, paths, SMALL)
    assert sorted(dicts) == sorted(p.name for p in paths)
    assert drawn and len(drawn) == len(set(drawn))  # once each, every id its own
    page = (tmp_path / "report.html").read_text()
    assert all(page.count(f'id="{i}"') == 1 for i in drawn)


def test_two_reports_compare_field_by_field_ignoring_provenance(tmp_path, capsys):
    from hansprobe.report.compare import differences, main as compare

    before = {"hansprobe": "0.1.0", "checkpoints": [{"provenance": {"t": 1}, "verdicts": {"lookup": {"answer": "yes"}}}],
              "thresholds": {"a": 1}}
    after = {"hansprobe": "0.2.0", "checkpoints": [{"provenance": {"t": 2}, "verdicts": {"lookup": {"answer": "no"}}}],
             "thresholds": {"a": 1, "b": 2}}
    assert differences(before, after) == [("changed", "/checkpoints[0]/verdicts/lookup/answer", "yes", "no"),
                                          ("added", "/thresholds/b", None, 2)]
    assert differences(before, before) == []
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(before))
    b.write_text(json.dumps({**before, "thresholds": {"a": 1, "b": 2}}))
    assert compare([str(a), str(b)]) == 0  # only added fields: behaviour unchanged
    assert compare([str(a), str(a)]) == 0 and "0 difference(s)" in capsys.readouterr().out
    b.write_text(json.dumps(after))
    assert compare([str(a), str(b)]) == 1


def test_the_cells_questions_read_have_the_typed_shape(report):
    """On the tiny runs (the shipped checkpoints, with causal checks and sweeps: test_verdict_matrix.py)."""
    assert typed_cells(report[1])["cell"] > 0
