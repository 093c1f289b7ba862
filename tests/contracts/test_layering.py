"""The package's layering holds: no import circles, counting imports inside functions too (a lazy
import hides a circle from Python, not from a reader), every module imports on its own in a fresh
process, and the trainer imports no analysis."""
import ast
import subprocess
import sys
from pathlib import Path

from helpers import REPO

ROOT = REPO / "hansprobe"


def modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        name = ".".join(("hansprobe", *f.relative_to(ROOT).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the hansprobe modules it imports anywhere in its source (`from a.b import c` counts
    as a.b.c when that is a module, else a.b)."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hansprobe") and not node.level:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in mods else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("hansprobe")}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_even_through_lazy_imports():
    assert cycles(import_graph()) == []


def test_the_trainer_imports_no_analysis():
    graph = import_graph()
    assert not {d for d in graph["hansprobe.train"] if d.startswith(("hansprobe.mechanics", "hansprobe.measurements",
                                                                      "hansprobe.questions"))}


def test_every_module_imports_on_its_own_in_a_fresh_process():
    names = sorted(m for m in modules() if not m.endswith("__main__"))  # __main__ runs the CLI
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    for m in [k for k in sys.modules if k.startswith('hansprobe')]:\n"
            "        del sys.modules[m]\n"
            "    importlib.import_module(name)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


LAYERS = [  # lowest first (docs/api.md); a module may import only from its own layer or below
    ["hansprobe.errors", "hansprobe.validation", "hansprobe.resources", "hansprobe.options", "hansprobe.progress",
     "hansprobe.error_rates"],
    ["hansprobe.tasks"],
    ["hansprobe.objectives", "hansprobe.model", "hansprobe.multitoken", "hansprobe.fused", "hansprobe.distributed",
     "hansprobe.constructed", "hansprobe.search"],
    ["hansprobe.storage"],
    ["hansprobe.gpt2_reference", "hansprobe.interop", "hansprobe.causal_lm", "hansprobe.text_model", "hansprobe.text_passes",
     "hansprobe.finetune",
     "hansprobe.ntf_finetuned"],
    ["hansprobe.checkpoint"],
    ["hansprobe.train"],
    ["hansprobe.mechanics"],
    ["hansprobe.measurements"],
    ["hansprobe.questions"],
    ["hansprobe.report", "hansprobe.sweep", "hansprobe.calibrate", "hansprobe.analyses"],
    ["hansprobe.cli", "hansprobe.__main__", "hansprobe"],
]


def rank(module: str) -> int:
    best = None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and docs/api.md)"
    return best[0]


def test_no_module_imports_one_from_a_layer_above_it():
    upward = [(a, b) for a, deps in import_graph().items() for b in deps
              if b != "hansprobe" and rank(b) > rank(a)]
    assert upward == []


def test_a_command_that_measures_nothing_starts_without_the_analyses(tmp_path):
    """`hansprobe data` (and train, sweep, import) is parsed without the analysis commands and
    imports no analysis, scipy, scikit-learn or plotly (about 2 s a process); `hansprobe.report`'s
    names still load on first use."""
    heavy = ("scipy", "sklearn", "plotly", "hansprobe.measurements", "hansprobe.questions", "hansprobe.report.run")
    code = ("import sys\nfrom hansprobe.cli import main\n"
            f"assert main(['data', '--degree', '2', '--path-len', '3', '--nodes', '12', '-n', '2', '--out', {str(tmp_path / 'g.txt')!r}]) == 0\n"
            f"print([m for m in {heavy!r} if m in sys.modules])\n"
            "from hansprobe.report import QUESTIONS, ReportSettings\n"
            f"print([m for m in {heavy!r} if m in sys.modules])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    before, after = proc.stdout.splitlines()[-2:]
    assert before == "[]"
    assert {"hansprobe.measurements", "hansprobe.questions", "hansprobe.report.run"} <= set(eval(after))


def test_the_light_parser_reads_its_commands_as_the_full_one_does():
    from hansprobe.cli import LIGHT_COMMANDS, build_parser

    lines = [["train", "--degree", "2", "--path-len", "4", "--objective", "reverse", "--steps", "5", "--out", "r"],
             ["data", "--degree", "2", "--path-len", "3", "--nodes", "12", "-n", "4", "--out", "g.txt"],
             ["sweep", "s.toml", "--out", "s", "--jobs", "2"], ["train", "--resume", "--out", "r"]]
    assert {line[0] for line in lines} <= LIGHT_COMMANDS
    full, light = build_parser(), build_parser(with_analyses=False)
    for line in lines:
        assert vars(light.parse_args(line)) == vars(full.parse_args(line))


def test_the_old_import_path_still_runs_with_a_warning_naming_the_new_homes():
    code = ("import warnings\nwarnings.simplefilter('error')\n"
            "try:\n    import hansprobe.analyses\nexcept DeprecationWarning as e:\n    print(e)\n"
            "warnings.simplefilter('ignore')\nimport hansprobe.analyses as old, hansprobe.measurements as new\n"
            "print(old.measure_heads is new.measure_heads, old.register_question.__module__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    warning, same = proc.stdout.splitlines()
    assert "hansprobe.measurements" in warning and "hansprobe.questions" in warning
    assert same == "True hansprobe.questions.registry"


def test_no_function_is_longer_than_80_lines():
    """Short functions (CONTRIBUTING.md): a long one is split by what its parts do, not trimmed."""
    long = [(str(path.relative_to(ROOT.parent)), node.name, node.end_lineno - node.lineno + 1)
            for path in modules().values() for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80]
    assert long == []
