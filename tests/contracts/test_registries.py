"""A task and an analysis are one-file additions: both are defined and registered here, in the test,
and `hansprobe train|data|report` run on them without any other module changing."""
import json
from dataclasses import asdict, dataclass

import pytest
import torch

from hansprobe.measurements import AnalysisSpec, register_analysis
from hansprobe.questions import QuestionSpec, register_question
from hansprobe.mechanics.results import Result
from hansprobe.questions.registry import verdict, unregister_question
from hansprobe.measurements.registry import unregister_analysis
from hansprobe.cli import main
from hansprobe.tasks import TASKS, Batch, TaskArg, TaskSpec, format_ntf_lines, register_task
from hansprobe.tasks.base import EdgeListTokens


@dataclass(frozen=True)
class Fork(EdgeListTokens):
    """A toy task: a start with two arms of `arm_len` nodes; the goal ends one of them. Written here
    from the Batch fields alone (no path-star code), to show what a task must provide."""

    arm_len: int = 3
    n_nodes: int = 12
    name: str = "fork"

    n_edges = property(lambda self: 2 * self.arm_len)
    target_len = property(lambda self: self.arm_len + 1)
    chance = 0.5
    decision_indices = [1]
    lookup_indices = property(lambda self: list(range(2, self.arm_len + 1)))
    no_lookup_reason = ""
    bytes_per_graph = 1000

    def to_dict(self):
        return asdict(self)

    def describe(self):
        return f"fork({self.arm_len}) on {self.n_nodes} nodes"

    @property
    def counterfactuals(self):
        return {"goal_swap": lambda b, seed=0: self._build(b.start, 1 - b.goal_arm, b.arms, b.edge_parent, b.edge_child)}

    def placebo(self, batch, seed=0):
        return self._build(batch.start, batch.goal_arm, batch.arms, batch.edge_parent.flip(1), batch.edge_child.flip(1))

    def generate(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        labels = torch.rand(n, self.n_nodes, generator=g).argsort(1)[:, : 1 + 2 * self.arm_len]
        start, arms = labels[:, 0], labels[:, 1:].reshape(n, 2, self.arm_len)
        arms = arms.gather(1, arms[:, :, :1].argsort(1).expand(-1, -1, self.arm_len))  # arm 0 = smaller first node
        parent = torch.cat([start[:, None, None].expand(n, 2, 1), arms[:, :, :-1]], 2).reshape(n, -1)
        return self._build(start, torch.randint(0, 2, (n,), generator=g), arms, parent, arms.reshape(n, -1))

    def _build(self, start, goal_arm, arms, parent, child):
        n, e, rows = len(start), parent.shape[1], torch.arange(len(start))
        goal = arms[rows, goal_arm, -1]
        sep = torch.full((n, e), self.pipe)
        sep[:, -1] = self.slash
        prefix = torch.cat([torch.stack([parent, child, sep], 2).reshape(n, -1),
                            torch.stack([start, goal, torch.full_like(start, self.equals)], 1)], 1)
        node_arm = torch.full((n, self.n_nodes), -2)
        node_arm.scatter_(1, arms.reshape(n, -1), torch.arange(2).repeat_interleave(self.arm_len).expand(n, -1))
        node_arm[rows, start] = -1
        pos = torch.arange(e).expand(n, e) * 3
        return Batch(task=self, prefix=prefix, target=torch.cat([start[:, None], arms[rows, goal_arm]], 1), start=start,
                     goal=goal, goal_arm=goal_arm, candidates=arms[:, :, 0].clone(), arms=arms, node_arm=node_arm,
                     edge_parent=parent, edge_child=child, edge_parent_pos=pos.clone(), edge_child_pos=pos + 1,
                     edge_sep_pos=pos + 2)


@dataclass
class NormResult(Result):
    mean_logit_norm: float

    def figures(self):
        import plotly.graph_objects as go

        return {"logit_norm": go.Figure(go.Bar(x=["mean"], y=[self.mean_logit_norm]))}


def measure_norm(ctx) -> NormResult:
    with torch.no_grad():
        logits = ctx.objective.forced_logits(ctx.model, ctx.batch[:50])
    return NormResult(mean_logit_norm=float(logits.norm(dim=-1).mean()))


NORM_MAX = 40.0


def decide_norm(ctx):
    """A toy question over the toy analysis: yes when the logits stay below NORM_MAX."""
    norm = ctx.analysis("logit_norm")["mean_logit_norm"]
    bar = ctx.thresholds["norm_max"]  # the registration's, handed in: what report.json records is what is applied
    return verdict("yes" if norm < bar else "no", f"mean logit norm {norm:.2f} (bar {bar})", norm=norm)


@pytest.fixture
def registered_toys():
    register_task(TaskSpec(name="fork", cls=Fork, help="toy: a start with two arms",
                           args=(TaskArg("--arm-len", "arm_len", help="nodes per arm"), TaskArg("--nodes", "n_nodes")),
                           format_lines=format_ntf_lines, defaults={"arm_len": 3, "n_nodes": 12}))
    register_analysis(AnalysisSpec(name="logit_norm", title="Logit norm (a toy analysis)", measure=measure_norm,
                                   captions={"logit_norm": "Mean L2 norm of the forced logits."}, order=70))
    register_question(QuestionSpec(key="logits_tame", text="Logits tame? (a toy question)", needs=("logit_norm",),
                                   decide=decide_norm, rule="yes when the mean logit norm is below {norm_max}.",
                                   thresholds={"norm_max": NORM_MAX}, order=90))
    yield
    TASKS.pop("fork")
    unregister_analysis("logit_norm")
    unregister_question("logits_tame")


def test_a_task_and_an_analysis_registered_in_a_test_run_through_the_cli(registered_toys, tmp_path, capsys):
    assert main(["data", "--task", "fork", "-n", "2", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].count("|") == 5  # 6 edges
    run = tmp_path / "fork"
    assert main(["train", "--task", "fork", "--n-layers", "1", "--d-model", "32", "--n-heads", "2", "--steps", "8",
                 "--batch-size", "16", "--eval-every", "4", "--eval-graphs", "32", "--checkpoint-every", "4",
                 "--out", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["task"] == {"arm_len": 3, "n_nodes": 12, "name": "fork"}
    code = main(["report", str(run), "-n", "40", "--patch-pairs", "10", "--out", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    c = doc["checkpoints"][0]
    assert c["config"]["task"]["name"] == "fork" and set(c["verdicts"]) == {
        "clever_hans_failure", "lookup", "indecipherable", "search_recovers", "decision_computed", "plan_represented",
        "logits_tame"}
    assert c["analyses"]["logit_norm"]["mean_logit_norm"] > 0  # the registered analysis ran and was stored
    toy = c["verdicts"]["logits_tame"]  # the registered question was decided, from the registered analysis
    assert toy["answer"] == ("yes" if c["analyses"]["logit_norm"]["mean_logit_norm"] < NORM_MAX else "no")
    assert toy["values"]["norm"] == c["analyses"]["logit_norm"]["mean_logit_norm"]
    assert doc["questions"]["logits_tame"] == "Logits tame? (a toy question)"
    assert doc["rules"]["logits_tame"] == "yes when the mean logit norm is below 40.0." and doc["thresholds"]["norm_max"] == 40.0
    assert "logits_tame" in err or "Logits tame?" in out  # printed with the others
    assert "skipped" not in c["analyses"]["heads"]  # the toy declares lookup indices, so the lookup is searched
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Logit norm (a toy analysis)" in page and "Mean L2 norm of the forced logits." in page
    assert "Logits tame? (a toy question)" in page and "yes when the mean logit norm is below 40.0." in page
    assert main(["analyse", "logit_norm", str(run), "-n", "20", "--json"]) == 0  # and from the command line
    out = json.loads(capsys.readouterr().out)
    assert out["analysis"] == "logit_norm" and out["mean_logit_norm"] == pytest.approx(
        c["analyses"]["logit_norm"]["mean_logit_norm"], rel=0.5)


def test_a_task_argument_of_another_task_is_one_line(capsys):
    code = main(["data", "--task", "tree", "--degree", "3", "-n", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--degree is not an argument of --task tree" in err


@pytest.fixture
def toy_objective():
    from hansprobe.objectives import ObjectiveSpec, register_objective, unregister_objective

    # A name that says nothing about what it is: every consumer must read the spec, not the name.
    register_objective(ObjectiveSpec("backward-mixed", "toy: reversed labels, each answer slot `$` with probability p",
                                     reversed=True, fill="mixed", options={"p": 0.25}))
    yield
    unregister_objective("backward-mixed")


def test_an_objective_registered_in_a_test_trains_and_reports(toy_objective, tmp_path, capsys):
    import torch

    from hansprobe.objectives import get_objective, objective_names

    obj = get_objective("backward-mixed")
    assert "backward-mixed" in objective_names() and obj.reverse and obj.fill == "mixed" and obj.p == 0.25
    from helpers import tiny_task

    b = tiny_task().generate(64, 0)
    assert torch.equal(obj.labels(b), b.target.flip(1))
    masked = obj.inputs(b, torch.Generator().manual_seed(0))[:, b.prefix.shape[1]:]
    assert 0 < (masked == b.task.dummy).float().mean() < 0.6  # some slots are `$` in training ...
    assert not (obj.inputs(b)[:, b.prefix.shape[1]:] == b.task.dummy).any()  # ... none in evaluation
    assert "backward-mixed" in main_help(capsys)
    run = tmp_path / "toy"
    assert main(["train", "--degree", "2", "--path-len", "4", "--nodes", "20", "--objective", "backward-mixed", "--teacherless-p", "0.5", "--n-layers", "1",
                 "--d-model", "32", "--n-heads", "2", "--steps", "8", "--batch-size", "16", "--eval-every", "4",
                 "--eval-graphs", "32", "--checkpoint-every", "4", "--out", str(run), "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["objective"] == "backward-mixed" and cfg["objective_options"] == {"p": 0.5}
    code = main(["report", str(run), "-n", "40", "--patch-pairs", "10", "--out", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == 0, err
    c = json.loads((tmp_path / "r" / "report.json").read_text())["checkpoints"][0]
    assert c["verdicts"]["clever_hans_failure"]["answer"] == "not applicable"  # reversed, read from the spec
    assert "reversed" in c["verdicts"]["clever_hans_failure"]["evidence"]
    assert c["analyses"]["behaviour"]["label_names"][0] == "r3"  # the goal first (l = 4)


def test_an_objective_spec_that_cannot_work_is_refused():
    from hansprobe.errors import ConfigError
    from hansprobe.objectives import ObjectiveSpec, register_objective

    with pytest.raises(ConfigError, match="fill must be one of"):
        ObjectiveSpec("x", "bad", fill="half")
    with pytest.raises(ConfigError, match="takes option p"):
        ObjectiveSpec("x", "bad", fill="mixed")
    with pytest.raises(ConfigError, match="already registered"):
        register_objective(ObjectiveSpec("teacher-forcing", "again"))


def main_help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    return capsys.readouterr().out


def test_every_registry_refuses_a_duplicate_name_unless_asked_to_replace():
    """A second registration under a taken name used to replace the first silently (issue 39 part 4)."""
    from hansprobe.measurements.registry import ANALYSES
    from hansprobe.questions.registry import _QUESTIONS
    from hansprobe.errors import ConfigError, TaskError
    from hansprobe.objectives import ObjectiveSpec, _REGISTRY, register_objective

    spec = ANALYSES["behaviour"]
    with pytest.raises(ConfigError, match="analysis 'behaviour' is already registered; pass replace=True"):
        register_analysis(spec)
    assert register_analysis(spec, replace=True) is spec and ANALYSES["behaviour"] is spec
    q = _QUESTIONS["lookup"]
    with pytest.raises(ConfigError, match="question 'lookup' is already registered"):
        register_question(q)
    assert register_question(q, replace=True) is q
    with pytest.raises(TaskError, match="task 'pathstar' is already registered"):
        register_task(TASKS["pathstar"])
    assert register_task(TASKS["pathstar"], replace=True) is TASKS["pathstar"]
    with pytest.raises(ConfigError, match="objective 'reverse' is already registered"):
        register_objective(ObjectiveSpec("reverse", "again", reversed=True))
    assert _REGISTRY["reverse"].description != "again"


def test_every_measure_function_takes_seed_and_batch_size_by_keyword_only():
    """A positional call could swap them silently where the functions disagreed on their order."""
    import importlib
    import inspect
    import pkgutil

    import hansprobe.measurements
    import hansprobe.mechanics

    seen = 0
    modules = [importlib.import_module(f"{pkg.__name__}.{info.name}")
               for pkg in (hansprobe.measurements, hansprobe.mechanics) for info in pkgutil.iter_modules(pkg.__path__)]
    for mod in modules:
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            if not name.startswith("measure_") or fn.__module__ != mod.__name__:
                continue
            for p in ("seed", "batch_size"):
                if p in inspect.signature(fn).parameters:
                    seen += 1
                    assert inspect.signature(fn).parameters[p].kind is inspect.Parameter.KEYWORD_ONLY, (name, p)
    assert seen >= 15


def test_a_task_class_that_lacks_a_member_every_task_gives_is_refused_when_it_registers():
    from hansprobe.errors import TaskError

    @dataclass(frozen=True)
    class Half:
        name = "half"
        n_nodes: int = 10

        def generate(self, n, seed): ...

    with pytest.raises(TaskError, match=r"task 'half': Half lacks d_vocab, .*chance.*placebo.* \(docs/add-a-task.md\)"):
        register_task(TaskSpec(name="half", cls=Half, args=(), help="a half task"))
    assert "half" not in TASKS
