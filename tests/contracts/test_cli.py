import json
import subprocess
import sys

import pytest

from hansprobe.cli import main
from hansprobe.tasks import PathStar, read_ntf

from helpers import TINY_TASK_ARGS, TINY_TRAIN, shared_ntf, run_cli

TINY, TRAIN = TINY_TASK_ARGS, TINY_TRAIN  # tests/helpers/configs.py; the `ckpt` fixture (conftest.py) is this run


run = run_cli  # tests/helpers/configs.py


def test_train_json_prints_the_config(ckpt, capsys, tmp_path):
    code, out, _ = run([*TRAIN, "--out", str(tmp_path / "r"), "--json", "--objective", "reverse"], capsys)
    cfg = json.loads(out)
    assert code == 0 and cfg["objective"] == "reverse" and cfg["step"] == 6


def test_eval_json_has_the_documented_keys(ckpt, capsys):
    code, out, _ = run(["eval", str(ckpt), "-n", "50", "--json"], capsys)
    res = json.loads(out)
    assert code == 0
    assert {"exact_match", "decision_accuracy", "forced_accuracy", "free_accuracy", "n_graphs"} <= set(res)
    assert res["n_graphs"] == 50 and len(res["forced_accuracy"]) == 4 and res["chance"] == 0.5


def test_eval_on_an_ntf_file_matches_eval_on_the_same_seeded_graphs(ckpt, capsys, tmp_path):
    f = tmp_path / "g.txt"
    assert run(["data", *TINY, "-n", "40", "--seed", "7", "--out", str(f)], capsys)[0] == 0
    assert len(read_ntf(f, task=PathStar(2, 4, 20))) == 40
    _, a, _ = run(["eval", str(ckpt), "--data", str(f), "--json"], capsys)
    _, b, _ = run(["eval", str(ckpt), "-n", "40", "--seed", "7", "--json"], capsys)
    strip = lambda s: {k: v for k, v in json.loads(s).items() if k not in ("data", "seed")}  # noqa: E731
    assert strip(a) == strip(b)


def test_eval_text_output(ckpt, capsys):
    code, out, _ = run(["eval", str(ckpt), "-n", "20"], capsys)
    assert code == 0 and "decision accuracy" in out and "chance 1/d = 0.500" in out


def test_data_to_stdout_is_ntf(capsys):
    code, out, _ = run(["data", "--degree", "2", "--path-len", "5", "--nodes", "50", "-n", "3", "--seed", "1"], capsys)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and all(line.count("|") == 7 and "/" in line and "=" in line for line in lines)


def test_data_with_a_label_cue_puts_the_goal_on_the_largest_candidate(capsys):
    code, out, _ = run(["data", "--degree", "3", "--path-len", "4", "--nodes", "30", "-n", "20", "--cue", "larger-first-node"],
                       capsys)
    assert code == 0
    for line in out.splitlines():
        edges, rest = line.split("/")
        start = int(rest.split(",")[0])
        children = [int(e.split(",")[1]) for e in edges.split("|") if int(e.split(",")[0]) == start]
        assert int(rest.split("=")[1].split(",")[1]) == max(children)
    code, _, err = run(["data", "--degree", "2", "--path-len", "4", "--nodes", "30", "--cue", "smallest"], capsys)
    assert code == 2 and "invalid choice" in err


def test_eval_on_the_papers_test_split_reads_it(ckpt, capsys):
    path = shared_ntf("deg_2_path_5_nodes_50_test_20000.txt")
    code, _, err = run(["eval", str(ckpt), "--data", str(path), "-n", "10"], capsys)
    assert code == 2 and "holds G(2,5) graphs but the model was trained on G(2,4)" in err


@pytest.mark.parametrize("argv,needle", [
    (["train", "--degree", "2", "--path-len", "5", "--nodes", "8", "--out", "X"], "at least degree*(path_len-1)+1 = 9"),
    (["train", *TINY, "--objective", "teacher_forcing", "--out", "X"], "valid objectives"),
    (["train", *TINY, "--device", "cuda:7", "--out", "X"], "cuda"),
    (["train", *TINY, "--d-model", "30", "--out", "X"], "divisible"),
    (["train", "--out", "X"], "needs --degree"),
    (["train", *TINY, "--steps", "0", "--out", "X"], "must be positive"),
    (["train", *TINY, "--task", "maze", "--out", "X"], "invalid choice"),
    (["eval", "nowhere"], "does not exist"),
    (["eval", "CKPT", "--data", "nofile.txt"], "cannot read NTF file"),
    (["eval", "CKPT", "-n", "-3"], "must be positive"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, needle, ckpt, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [str(ckpt) if a == "CKPT" else a for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "X").exists()


def test_existing_output_is_never_clobbered(ckpt, capsys, tmp_path):
    before = (ckpt / "model.safetensors").read_bytes()
    code, _, err = run([*TRAIN, "--out", str(ckpt)], capsys)
    assert code == 2 and "--overwrite" in err and (ckpt / "model.safetensors").read_bytes() == before
    f = tmp_path / "g.txt"
    f.write_text("keep\n")
    code, _, err = run(["data", *TINY, "--out", str(f)], capsys)
    assert code == 2 and f.read_text() == "keep\n"


def test_console_script_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hansprobe", "eval", str(tmp_path / "none")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


def test_entropy_json_has_the_documented_keys(ckpt, capsys):
    code, out, _ = run(["entropy", str(ckpt), "-n", "100", "--json"], capsys)
    res = json.loads(out)
    assert code == 0
    assert {"decision_accuracy", "decision_accuracy_ci", "chance", "entropy_nats", "candidate_entropy_nats", "log_d",
            "mass_outside_candidates", "information_nats", "information_nats_ci", "indecipherable", "outcome",
            "candidate_accuracy", "candidate_accuracy_ci", "equivalence", "goal_dependence"} <= set(res)
    assert isinstance(res["indecipherable"], bool) and res["n_graphs"] == 100
    code, out, _ = run(["entropy", str(ckpt), "-n", "100"], capsys)
    assert code == 0 and "outcome:" in out and "x log d" in out and "goal dependence" in out


def test_dynamics_command(tmp_path, capsys):
    out_dir = tmp_path / "r"
    assert main([*TRAIN, "--out", str(out_dir), "--snapshot-at", "2,4", "--json"]) == 0
    capsys.readouterr()
    code, out, _ = run(["dynamics", str(out_dir), "-n", "30", "--json"], capsys)
    assert code == 0 and json.loads(out)["steps"] == [2, 4, 6]
    code, out, _ = run(["dynamics", str(out_dir), "-n", "30"], capsys)
    assert code == 0 and "learning order" in out


def test_resume_from_the_cli_extends_a_run(tmp_path, capsys):
    out_dir = tmp_path / "r"
    assert main([*TRAIN, "--out", str(out_dir), "--json"]) == 0
    capsys.readouterr()
    code, out, _ = run(["train", "--resume", "--out", str(out_dir), "--steps", "9", "--json"], capsys)
    assert code == 0 and json.loads(out)["step"] == 9


def test_train_logs_one_plain_line_per_evaluation_when_stderr_is_not_a_terminal(tmp_path, capsys):
    assert main([*TRAIN, "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("train: ") and "steps 1..6" in err[0]
    assert [line.split()[2] for line in err[1:]] == ["3/6", "6/6"] and all("s left)" in line for line in err[1:])
    assert main([*TRAIN, "--json", "--out", str(tmp_path / "q")]) == 0  # --json: quiet
    assert capsys.readouterr().err == ""


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("hansprobe 0.")


def test_analysis_commands_log_plain_progress_lines_when_stderr_is_not_a_terminal(ckpt, capsys):
    assert main(["eval", str(ckpt), "-n", "40", "--batch-size", "20"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in err] == ["behaviour: 1/2 batches", "behaviour: 2/2 batches"]
    assert main(["eval", str(ckpt), "-n", "40", "--batch-size", "20", "--json"]) == 0
    assert capsys.readouterr().err == ""


def test_every_cli_default_equals_its_dataclass_default():
    """Issue 27: argparse restated the dataclasses' defaults and one had drifted (--checkpoint-every
    250 in the CLI, 500 in TrainConfig). The option groups are now built from the fields
    (hansprobe.options): every option field is an option, with the field's default and help."""
    from dataclasses import MISSING, fields

    from hansprobe.cli import build_parser
    from hansprobe.model import ModelConfig
    from hansprobe.options import ANALYSIS_SEED, option_fields
    from hansprobe.report import ReportSettings
    from hansprobe.train import TrainConfig

    train = vars(build_parser().parse_args(["train", "--out", "x"]))
    for cls in (TrainConfig, ModelConfig):
        assert {f.name for f in option_fields(cls)} <= set(train), cls.__name__
        for f in fields(cls):
            if f.name in train and f.name != "steps":  # --steps defaults to None: 3000, or the resumed run's own
                declared = f.default_factory() if f.default is MISSING else f.default  # d_mlp None: 4 d_model
                assert train[f.name] == declared, (cls.__name__, f.name)
    assert (train["steps"] or TrainConfig().steps) == TrainConfig().steps
    report = vars(build_parser().parse_args(["report", "c", "--out", "x"]))
    for name in ("mechanism_graphs", "patch_pairs", "seed", "batch_size", "device", "witness", "jobs"):
        assert report[name] == getattr(ReportSettings(), name), name
    assert report["default_graphs"] == ReportSettings().n_graphs and ReportSettings().seed == ANALYSIS_SEED
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    for f in option_fields(TrainConfig):  # the help is the field's own
        assert " ".join(f.metadata["help"].split()) in help_text, f.name


@pytest.mark.parametrize("command,analysis", [("eval", "behaviour"), ("entropy", "entropy")])
def test_a_result_prints_itself_alike_from_its_command_and_from_analyse(ckpt, command, analysis, capsys):
    """Issue 27: each Result prints itself (Result.text()); the command and `analyse NAME` print
    the same lines below their one-line headers."""
    code, own, _ = run_cli([command, str(ckpt), "-n", "60"], capsys)
    assert code == 0
    code, generic, _ = run_cli(["analyse", analysis, str(ckpt), "-n", "60"], capsys)
    assert code == 0
    body = own.splitlines()[1:]
    assert len(body) >= 3 and generic.splitlines()[1:] == body


@pytest.mark.parametrize("alias,name,extra", [("heads", "heads", ["--ablate", "0.0,0.1"]),
                                              ("patch", "patching", ["--sweep", "resid", "--direction", "both"]),
                                              ("probe", "probes", ["--layers", "1", "--positions", "goal,="]),
                                              ("entropy", "entropy", [])])
def test_analysis_commands_are_aliases_of_analyse_with_the_options_on_their_spec(ckpt, alias, name, extra, capsys, tmp_path):
    """Issue 27: heads / patch / probe / entropy are `analyse NAME`, their options declared on the
    AnalysisSpec: the same JSON from both, the option reaching the analysis, --out the same file."""
    from hansprobe.measurements.registry import ANALYSES

    common = [str(ckpt), "-n", "40", "--json", *extra]
    code, own, _ = run_cli([alias, *common, "--out", str(tmp_path / "a.json")], capsys)
    assert code == 0
    code, generic, _ = run_cli(["analyse", name, *common], capsys)
    assert code == 0 and json.loads(own) == json.loads(generic) == json.loads((tmp_path / "a.json").read_text())
    out, spec = json.loads(own), ANALYSES[name]
    assert spec.command == alias and out["analysis"] == name
    if alias == "heads":  # the group given on the command line was ablated
        assert [[0, 0], [0, 1]] in [a["heads"] for a in out["ablations"] if a["pattern"] == "user"]
    if alias == "patch" and out["measurable"]:
        assert set(out["sweeps"]) == {"resid"} and set(out["sweeps"]["resid"]) == {"sufficiency", "necessity"}
    if alias == "probe":
        assert out["layers"] == [1] and len(out["accuracy"][0]) == 2


def test_an_option_of_another_analysis_is_a_one_line_error(ckpt, capsys):
    code, _, err = run_cli(["analyse", "entropy", str(ckpt), "-n", "20", "--ablate", "0.0"], capsys)
    assert code == 2 and "--ablate is an option of heads, not of entropy" in err and err.count("\n") == 1


def test_the_report_runs_each_analysis_with_its_options_defaults():
    from hansprobe.measurements.registry import ANALYSES, AnalysisContext, run_analysis

    seen = {}
    for spec in ANALYSES.values():
        if spec.options:
            run_analysis(__import__("dataclasses").replace(spec, measure=lambda ctx: seen.update({spec.name: ctx.options})),
                         AnalysisContext(*[None] * 12))
            assert seen[spec.name] == {o.dest: o.default for o in spec.options}
    assert {"heads", "patching", "probes"} <= set(seen)
