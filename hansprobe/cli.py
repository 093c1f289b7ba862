"""`hansprobe` command line: parses flags, calls the library, prints. Bad input is one line on
stderr and exit code 2; `--json` prints one JSON object on stdout."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from hansprobe.errors import HansprobeError, shown
from hansprobe.options import ANALYSIS_SEED as DEFAULT_ANALYSIS_SEED, default_of, option_fields
from hansprobe.report.settings import ReportSettings
from hansprobe.validation import SEED_MAX


def _speaks() -> bool:
    """Under torchrun only rank 0 prints errors: one message, not one per process."""
    import os

    return os.environ.get("RANK", "0") == "0"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage block too)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n" if _speaks() else None)


class _ArgumentsRefused(Exception):
    pass


class _CheckingParser(_Parser):
    """The same parser, raising instead of exiting: for checking a command line without running it."""

    def error(self, message):
        raise _ArgumentsRefused(f"{self.prog}: {message}")


def _count_or_zero(text):
    """A whole number >= 0 (argparse type)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return v


def _positive(kind=int):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v) or v <= 0:  # nan <= 0 is False: test finiteness first
            raise argparse.ArgumentTypeError(f"{text!r} must be positive and finite")
        return v
    return parse


def _non_negative_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return v


def _seed(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (seeds are whole numbers 0..2^63-1)") from None
    if not 0 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{text} is out of range; seeds are whole numbers 0..2^63-1")
    return v


def _steps_list(text):
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of steps") from None


def _int_list(text):
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        out = []
    if not out:  # "," or "" is no list: it would select nothing and fail deep inside
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers (e.g. 0,1,2)")
    return out


def _str_list(text):
    out = [x.strip() for x in text.split(",") if x.strip()]
    if not out:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list (e.g. goal,=,a0)")
    return out


def _head_group(text):
    try:
        group = [tuple(int(x) for x in item.split(".")) for item in text.split(",") if item.strip()]
    except ValueError:
        group = []
    if not group or any(len(h) != 2 for h in group):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of heads like 1.0,1.2 (layer.head)")
    return group


_PARSE = {"positive": _positive(), "count": _count_or_zero, "positive_float": _positive(float),
          "non_negative_float": _non_negative_float, "steps": _steps_list, "seed": _seed, "text": str,
          "ints": _int_list, "texts": _str_list, "heads": _head_group}


def _add_options(group, cls, only: tuple[str, ...] | None = None, **defaults):
    """One option per `option(...)` field of dataclass `cls` (hansprobe.options): its flag, range,
    default and help come from the field, so the parser cannot disagree with the library.
    `defaults` overrides a parsed default (e.g. None where "not given" means something)."""
    for f in option_fields(cls):
        if only is not None and f.name not in only:
            continue
        md, shown = f.metadata, default_of(f)
        flag = md["flag"] or "--" + f.name.replace("_", "-")
        text = md["help"] + ("" if shown in (None, [], False) else f" (default {shown})")
        if md["parse"] == "flag":
            group.add_argument(flag, dest=f.name, action="store_true", help=md["help"])
        else:
            group.add_argument(flag, dest=f.name, type=_PARSE[md["parse"]], default=defaults.get(f.name, shown),
                               metavar=md["metavar"], choices=md["choices"], help=text)


def _options_of(args, cls) -> dict:
    """The parsed values of `cls`'s option fields that the command has, ready for cls(**...)."""
    return {f.name: getattr(args, f.name) for f in option_fields(cls) if hasattr(args, f.name)}


def _add_command_options(group, spec) -> None:
    """An analysis's own options (AnalysisSpec.options): default None = not given, so that
    run_analysis fills in the one default on the spec and can tell which options were given."""
    for o in spec.options:
        given = o.default not in (None, [], ())
        text = o.help + (f" (default {' '.join(map(str, o.default)) if o.repeat else o.default})" if given else "")
        group.add_argument(o.flag, dest=o.dest, type=_PARSE[o.parse], choices=o.choices, metavar=o.metavar, default=None,
                           action="append" if o.repeat else "store", help=text)


def _add_analysis_command(p, specs) -> None:
    """What `analyse NAME` and each alias (`heads`, `probe`, ...) take: a checkpoint, the graphs,
    the report's context options, the analyses' own options and a JSON file to write."""
    p.add_argument("checkpoint", type=Path)
    _add_graphs(p, "analyse")
    _add_options(p.add_argument_group("the context, as in the report"), ReportSettings,
                 only=("mechanism_graphs", "patch_pairs", "witness"))
    for spec in specs:
        if spec.options:
            _add_command_options(p.add_argument_group(f"options of {spec.name}"), spec)
    p.add_argument("--out", type=Path, default=None, dest="json_out", help="also write the JSON result to this file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def _add_task(p, required=True):
    """`--task NAME` and every registered task's own arguments (tasks/registry.py)."""
    from hansprobe.tasks import TASKS

    g = p.add_argument_group("task")
    g.add_argument("--task", default="pathstar", choices=sorted(TASKS),
                   help="task family (default pathstar): " + "; ".join(f"{n}: {s.help}" for n, s in sorted(TASKS.items())))
    seen = set()
    for spec in TASKS.values():
        for a in spec.args:
            if a.flag in seen:  # shared by several tasks (e.g. --nodes)
                continue
            seen.add(a.flag)
            if a.action:
                g.add_argument(a.flag, dest=a.field, action=a.action, default=None, help=f"{a.help} [{spec.name}]")
            else:
                g.add_argument(a.flag, dest=a.field, type=a.type, choices=a.choices, default=None,
                               help=f"{a.help} [{spec.name}]")
    p.set_defaults(task_required=required)


# Graphs each command measures on when -n is not given: the one table of these defaults.
DEFAULT_GRAPHS = {"eval": 2000, "dynamics": 500, "report": ReportSettings.n_graphs, "analyse": ReportSettings.n_graphs}


def _add_graphs(p, command: str):
    g = p.add_argument_group("graphs to measure on")
    g.add_argument("-n", "--n-graphs", type=_positive(), default=None,
                   help=f"fresh graphs to generate (default {DEFAULT_GRAPHS[command]}); with --data: read only the first N")
    p.set_defaults(default_graphs=DEFAULT_GRAPHS[command])
    # the defaults are the report's own (ReportSettings), so every measuring command agrees with it
    g.add_argument("--seed", type=_seed, default=ReportSettings.seed, help=f"graph seed (default {ReportSettings.seed}; training never uses it)")
    g.add_argument("--data", type=Path, help="read graphs from an NTF text file instead (e.g. ../shared/data/ntf/...); -n limits how many")
    g.add_argument("--device", default=ReportSettings.device, help=f"cpu, cuda, cuda:N or auto (default {ReportSettings.device})")
    g.add_argument("--batch-size", type=_positive(), default=ReportSettings.batch_size,
                   help=f"graphs per forward pass (default {ReportSettings.batch_size})")
    g.add_argument("--json", action="store_true", help="print one JSON object on stdout")


# Commands that measure nothing are parsed without the analysis commands, whose options are read
# from the analysis registry: importing it imports every analysis (scipy, scikit-learn, plotly),
# about 2 s of every `hansprobe train` process otherwise (torchrun ranks, sweep runs).
LIGHT_COMMANDS = frozenset({"train", "data", "sweep", "import"})


def build_parser(parser_class=_Parser, with_analyses: bool = True) -> argparse.ArgumentParser:
    """The whole command line: one builder per command (`with_analyses`: also the analysis commands,
    which import the analyses; a command that measures nothing is parsed without them)."""
    parser = parser_class(prog="hansprobe", description="Measure the Clever-Hans shortcut of next-token training on lookahead tasks.")
    from hansprobe import __version__

    parser.add_argument("--version", action="version", version=f"hansprobe {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an unexpected error (also accepted after the command)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=parser_class)
    _train_parser(sub)
    _measure_parsers(sub)
    if with_analyses:
        _analysis_parsers(sub)
    _report_parser(sub)
    _import_parser(sub)
    _sweep_parser(sub)
    _data_parser(sub)
    return parser


def _train_parser(sub) -> None:
    from hansprobe.model import ModelConfig
    from hansprobe.objectives import OPTIONS, get_objective, objective_names
    from hansprobe.train import TrainConfig

    specs = [get_objective(n).spec for n in objective_names()]
    takes = {key: [f"{s.name} (default {s.options[key]})" for s in specs if key in s.options] for key in OPTIONS}
    p = sub.add_parser("train", help="train a hooked transformer on a task under an objective")
    _add_task(p, required=False)
    p.add_argument("--objective", default="teacher-forcing", help=" | ".join(objective_names()))
    for key, opt in OPTIONS.items():  # each objective option once, as its spec declares it
        p.add_argument(opt.flag, type=opt.type, default=None, metavar=opt.metavar, dest=f"objective_{key}",
                       help=f"{opt.help}; taken by {', '.join(takes[key])}")
    m = p.add_argument_group("model")
    _add_options(m, ModelConfig)
    m.add_argument("--base-model", type=Path, default=None, metavar="DIR",
                   help="fine-tune this local pretrained causal LM (save_pretrained directory with tokenizer.json) on "
                        "the task as text instead of a new model; the model options above are then not used")
    t = p.add_argument_group("training")
    _add_options(t, TrainConfig, steps=None)  # None: 3000, or with --resume the run's own horizon
    t.add_argument("--seed", type=_seed, default=0, help="model initialisation and training graphs (default 0)")
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu; CUDA trains under bf16 autocast)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--until", type=int, default=None, metavar="STEP",
                   help="stop after this step with a complete checkpoint, the schedule unchanged (continue with --resume)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--json", action="store_true", help="no progress bar; print the final config as JSON")


def _measure_parsers(sub) -> None:
    p = sub.add_parser("eval", help="exact match, decision and per-position accuracy (free and forced)")
    p.add_argument("checkpoint", type=Path)
    _add_graphs(p, "eval")
    p = sub.add_parser("dynamics", help="learning order: per-position forced accuracy and decision entropy over training")
    p.add_argument("run_dir", type=Path)
    _add_graphs(p, "dynamics")


def _analysis_parsers(sub) -> None:
    from hansprobe.measurements.registry import ANALYSES

    p = sub.add_parser("analyse", help="run one registered analysis on a checkpoint (the report's, or one you "
                                       "registered) and print its summary")
    p.add_argument("name", choices=sorted(ANALYSES), help="the analysis (hansprobe.measurements.registry)")
    _add_analysis_command(p, sorted(ANALYSES.values(), key=lambda s: s.name))
    for spec in sorted((s for s in ANALYSES.values() if s.command), key=lambda s: s.command):
        p = sub.add_parser(spec.command, help=f"{spec.command_help} (= analyse {spec.name})")
        _add_analysis_command(p, [spec])
        p.set_defaults(name=spec.name)


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="every analysis, the verdicts, report.html + report.json (checkpoints side by side)")
    p.add_argument("checkpoints", type=Path, nargs="+", metavar="CKPT")
    _add_graphs(p, "report")
    p.add_argument("--out", type=Path, required=True, help="directory to write report.html and report.json into")
    _add_options(p.add_argument_group("report"), ReportSettings)
    p.add_argument("--verbose", action="store_true", help="print each verdict's full evidence, not only the clause that decided")


def _import_parser(sub) -> None:
    from hansprobe.interop import FORMATS
    from hansprobe.objectives import get_objective, objective_names

    p = sub.add_parser("import", help="a Hugging Face causal LM / nanoGPT / Next-Token-Failures model trained elsewhere on "
                                      "hansprobe's tokens -> a hansprobe checkpoint")
    p.add_argument("source", type=Path, help="hf (any causal LM the bridge boots: GPT-2, GPT-NeoX, Llama, Phi, ...), hf-gpt2: "
                                             "a save_pretrained directory; nanogpt, ntf: a state dict (.pt or .safetensors)")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    _add_task(p, required=False)
    p.add_argument("--objective", default=None, help="what it was trained with: " + " | ".join(
        n for n in objective_names() if not get_objective(n).spec.options))
    p.add_argument("--n-heads", type=_positive(), default=None, help="attention heads (NTF files do not store it; nanoGPT ckpt.pt does)")
    p.add_argument("--base-model", type=Path, default=None, metavar="DIR",
                   help="ntf: the file is a Next-Token-Failures fine-tune (finetune.py) of this GPT-2 or Pythia "
                        "save_pretrained directory, whose config and tokenizer.json it was trained with")
    p.add_argument("--out", type=Path, default=None, help="checkpoint directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--to-safetensors", type=Path, default=None, metavar="FILE",
                   help="instead: convert the pickled state dict to a safetensors file once, and stop")
    p.add_argument("--json", action="store_true", help="print the new checkpoint's config as JSON")


def _sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="a grid of training runs from a TOML spec: run here, or emit Slurm scripts; gather a table")
    p.add_argument("spec", type=Path, help="the sweep spec (docs/sweeps.md)")
    p.add_argument("--out", type=Path, required=True, help="sweep directory (runs/ inside; finished runs are skipped)")
    p.add_argument("--jobs", type=_positive(), default=1, help="runs at a time here (default 1)")
    p.add_argument("--emit", choices=["slurm"], default=None, help="write launch scripts and a Slurm array script; run nothing")
    p.add_argument("--gather", action="store_true", help="only gather the finished runs into sweep.csv/json/html")
    p.add_argument("--max-runs", type=_positive(), default=None, metavar="N",
                   help="allow a grid of more than 1000 runs (the sweep refuses a larger one before writing anything)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")


def _data_parser(sub) -> None:
    p = sub.add_parser("data", help="write seeded graphs of a task as NTF text lines")
    _add_task(p)
    p.add_argument("-n", "--n-graphs", type=_positive(), default=1000)
    p.add_argument("--seed", type=_seed, default=DEFAULT_ANALYSIS_SEED)
    p.add_argument("--out", type=Path, help="file to write (default stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--format", choices=("text",), default="text",
                   help="text: the Next-Token-Failures lines u,v|...|u,v/s,g=s,n1,...,g, which a model fine-tuned on "
                        "the text reads (through its tokenizer) and --data reads back; the only format")


# --- commands ---------------------------------------------------------------------------------
def _task(args):
    """The task the arguments describe; only the chosen task's arguments may be given."""
    from hansprobe.errors import ConfigError
    from hansprobe.tasks import TASKS, get_task_spec

    spec = get_task_spec(args.task)
    own = {a.field for a in spec.args}
    stray = sorted({a.flag for s in TASKS.values() for a in s.args if a.field not in own and getattr(args, a.field, None) is not None})
    if stray:
        raise ConfigError(f"{', '.join(stray)} {'is' if len(stray) == 1 else 'are'} not an argument of --task {spec.name}; "
                          f"it takes {', '.join(a.flag for a in spec.args)}")
    return spec.from_args(args, required=not spec.defaults)


def _train_setup(args):
    """(task, objective, model config, train config) of a new run from its parsed arguments, with
    every check that can be made before training (the one-line errors train would give)."""
    from hansprobe.model import ModelConfig
    from hansprobe.objectives import OPTIONS, get_objective
    from hansprobe.train import TrainConfig, check_task_options

    task = _task(args)  # a one-line error names the task arguments that are missing
    model_cfg = ModelConfig(**_options_of(args, ModelConfig))
    train_cfg = TrainConfig(**{**_options_of(args, TrainConfig), "steps": args.steps or TrainConfig.steps})
    options = {k: getattr(args, f"objective_{k}") for k in OPTIONS if getattr(args, f"objective_{k}") is not None}
    objective = get_objective(args.objective, options)
    check_task_options(task, train_cfg)
    return task, objective, model_cfg, train_cfg


def check_train_arguments(argv: list[str]) -> None:
    """Parse `hansprobe ARGV` (a train command line, without --out) with the parser train uses and
    build its configs, raising the one-line error train would give; runs nothing."""
    from hansprobe.errors import ConfigError

    try:
        args = build_parser(_CheckingParser).parse_args([*argv, "--out", "checked-only"])
    except _ArgumentsRefused as e:
        raise ConfigError(str(e)) from None
    if args.command != "train" or args.resume:
        raise ConfigError("a sweep run must be a new `train` command")
    _train_setup(args)


def cmd_train(args) -> int:
    from hansprobe.train import train

    if args.resume:
        cfg = train(args.out, resume=True, steps=args.steps, device=args.device, progress=_progress(args),
                    until=args.until)
    else:
        task, objective, model_cfg, train_cfg = _train_setup(args)
        cfg = train(args.out, task, objective, model_cfg, train_cfg, seed=args.seed, device=args.device,
                    overwrite=args.overwrite, progress=_progress(args), until=args.until, base_model=args.base_model)
    from hansprobe.distributed import world

    if world()[0] != 0:  # under torchrun only rank 0 speaks
        return 0
    if args.json:
        print(json.dumps(cfg, sort_keys=True))
    else:
        m = cfg["metrics"]
        print(f"trained {cfg['step']} steps into {args.out}: exact match {m.get('exact_match', float('nan')):.3f}, "
              f"decision accuracy {m.get('decision_accuracy', float('nan')):.3f} on {m.get('eval_graphs')} held-out graphs")
    return 0


def load_graphs(args, task):
    """The graphs an analysis command measures on: an NTF file (--data) or fresh seeded graphs."""
    from hansprobe.tasks.registry import read_task_text

    if args.data is not None:
        batch = read_task_text(args.data, task, args.n_graphs)
        return batch, {"data": str(args.data), "n_graphs": len(batch)}
    n = args.n_graphs or args.default_graphs
    return task.generate(n, args.seed), {"seed": args.seed, "n_graphs": n}


def _progress(args) -> bool | str:
    """A bar for a person at a terminal, one plain line per step in a log file, nothing under --json."""
    return False if args.json else True if sys.stderr.isatty() else "lines"


def _checkpoint_and_graphs(args):
    """What every analysis command starts from: the checkpoint and the graphs to measure on."""
    from hansprobe.checkpoint import check_batch_memory, load_checkpoint

    out = getattr(args, "json_out", None)
    if out is not None:  # before minutes of measuring, not after
        from hansprobe.storage import check_output_file

        check_output_file(out, args.overwrite)
    ck = load_checkpoint(args.checkpoint, device=args.device)
    if getattr(args, "batch_size", None):
        check_batch_memory(ck.model, args.batch_size, args.device)
    batch, source = load_graphs(args, ck.task)
    return ck, batch, {"checkpoint": str(args.checkpoint), **source}


def _finish_json(args, source: dict, result: dict) -> None:
    """The command's JSON object: printed under --json, written to --out where the command has it."""
    out = {**source, **result}
    if getattr(args, "json_out", None) is not None:
        from hansprobe.storage import json_bytes, write_output_file

        write_output_file(args.json_out, json_bytes(out), args.overwrite)
    if args.json:
        print(json.dumps(out, sort_keys=True))


def cmd_eval(args) -> int:
    from hansprobe.measurements import measure_behaviour

    ck, batch, source = _checkpoint_and_graphs(args)
    res = measure_behaviour(ck.model, ck.objective, batch, batch_size=args.batch_size, progress=_progress(args))
    _finish_json(args, source, res.to_dict())
    if args.json:
        return 0
    where = f"{source['data']}" if "data" in source else f"seed {source['seed']}"
    print(f"{shown(args.checkpoint)} ({ck.objective.name}, {ck.task.describe()}) on {res.n_graphs} graphs from {shown(where)}; 95% Wilson CIs")
    print(res.text())
    return 0


def cmd_dynamics(args) -> int:
    from hansprobe.measurements import measure_dynamics
    from hansprobe.checkpoint import read_config
    from hansprobe.tasks import task_from_dict

    task = task_from_dict(read_config(args.run_dir)["task"])
    batch, source = load_graphs(args, task)
    res = measure_dynamics(args.run_dir, batch, device=args.device, batch_size=args.batch_size, progress=_progress(args))
    if args.json:
        print(json.dumps({"run_dir": str(args.run_dir), **source, **res.to_dict()}, sort_keys=True))
        return 0
    print(f"{shown(args.run_dir)} ({res.objective}): {len(res.steps)} snapshots measured on {res.n_graphs} graphs")
    print(res.text())
    return 0


def cmd_data(args) -> int:
    from hansprobe.errors import ConfigError
    from hansprobe.tasks import get_task_spec

    spec = get_task_spec(args.task)
    if spec.format_lines is None:
        raise ConfigError(f"--task {spec.name} has no text format to write")
    batch = _task(args).generate(args.n_graphs, args.seed)
    text = "".join(line + "\n" for line in spec.format_lines(batch))
    if args.out is None:
        sys.stdout.write(text)
        return 0
    from hansprobe.storage import write_output_file

    write_output_file(args.out, text.encode(), args.overwrite)
    return 0


def cmd_report(args) -> int:
    from hansprobe.report import ANSWERS, QUESTIONS, publish_report
    from hansprobe.error_rates import rate_text

    settings = ReportSettings(**_options_of(args, ReportSettings), n_graphs=args.n_graphs or args.default_graphs,
                              seed=args.seed, data=None if args.data is None else str(args.data),
                              batch_size=args.batch_size, device=args.device)
    # a bar at a terminal; otherwise one plain line per analysis on stderr, so a redirected run shows it is alive
    printed, doc = 0, None
    for built in publish_report(args.out, args.checkpoints, settings, progress=_progress(args)):
        doc = built["json"]  # written to --out already: a killed run keeps what it finished
        if args.json:
            continue
        for ck in doc["checkpoints"][printed:]:  # each checkpoint's verdicts as soon as it is measured
            print(f"{shown(ck['name'])} ({ck['config']['objective']}, {ck['provenance']['n_graphs']} graphs)")
            width = max(map(len, ANSWERS))  # one column for every checkpoint
            for key, text in QUESTIONS.items():
                v = ck["verdicts"][key]
                print(_wrap(f"  {text:<39} {v['answer'].upper():<{width}} ", v["evidence"] if args.verbose else v["summary"]))
                if args.verbose and v.get("error_rate"):
                    print(_wrap("    error rate: ", rate_text(v["error_rate"], v["answer"])))
            for note in ck.get("notes", []):
                print(_wrap("  note: ", note))
            sys.stdout.flush()
        printed = len(doc["checkpoints"])
    if args.json:
        print(json.dumps(doc, sort_keys=True))
        return 0
    print(f"wrote {shown(args.out / 'report.html')} and {shown(args.out / 'report.json')}")
    return 0  # whatever the verdicts: they are findings, not failures


def _wrap(head: str, text: str) -> str:
    """`head` then `text`, wrapped to the terminal's width with continuation lines indented under the
    text; one line when stdout is not a terminal (logs, pipes: easier to grep)."""
    if not sys.stdout.isatty():
        return head + text
    import shutil
    import textwrap

    width = max(60, shutil.get_terminal_size().columns)
    return textwrap.fill(text, width=width, initial_indent=head, subsequent_indent=" " * len(head))


def cmd_analyse(args) -> int:
    """Any registered analysis from the command line (`analyse NAME`, or its alias `heads`, `probe`,
    `patch`, `entropy`): its summary as JSON (--json, --out) or its Result's own lines."""
    from dataclasses import replace

    from hansprobe.measurements.registry import ANALYSES, option_values, run_analysis
    from hansprobe.report.run import analysis_context
    from hansprobe.storage import jsonable

    spec = ANALYSES[args.name]
    options = {o.dest: getattr(args, o.dest) for s in ANALYSES.values() for o in s.options if hasattr(args, o.dest)}
    option_values(spec, options)  # an option of another analysis fails before anything loads
    ck, batch, source = _checkpoint_and_graphs(args)
    settings = ReportSettings(**_options_of(args, ReportSettings), n_graphs=len(batch), seed=args.seed,
                              batch_size=args.batch_size, device=args.device)
    ctx = analysis_context(ck, batch, settings)  # the report's own context: the same graphs, pairs and witness
    reason = spec.skip(ctx)
    res = None if reason else run_analysis(spec, replace(ctx, progress=_progress(args)), options)
    summary = {"skipped": reason} if reason else spec.summarise(res)
    _finish_json(args, {**source, "analysis": spec.name}, jsonable(summary))
    if args.json:
        return 0
    if res is None:
        print(f"{shown(args.checkpoint)}: {spec.name} skipped: {reason}")
    else:  # the same lines as the analysis's own command, where it has one (Result.text)
        print(f"{shown(args.checkpoint)} ({ck.objective.name}, {ck.task.describe()}): {spec.title} on {len(batch)} graphs")
        print(res.text())
    return 0


def cmd_sweep(args) -> int:
    from hansprobe.sweep import MAX_RUNS, check_runs, emit_slurm, expand, gather, load_spec, run_local

    spec = load_spec(args.spec)
    if args.out.exists() and not args.out.is_dir():
        raise HansprobeError(f"--out {args.out} is a file; give a directory for the sweep")
    if not args.gather:  # every run's command line, checked by train's own parser before anything runs or is written
        check_runs(spec, check_train_arguments, max_runs=args.max_runs or MAX_RUNS)
    if args.emit == "slurm":
        slurm = emit_slurm(spec, args.out, args.spec)
        print(f"wrote {len(expand(spec))} launch scripts in {args.out / 'launch'} and {slurm}; submit with "
              f"`cd {args.out} && sbatch sweep.slurm`, then `hansprobe sweep {args.spec} --out {args.out} --gather`")
        return 0
    failed = []
    if not args.gather:
        quiet = args.json
        lines = run_local(spec, args.out, args.jobs, log=(lambda line: None) if quiet else
                          (lambda line: print(line, file=sys.stderr, flush=True)))
        failed = [line for line in lines if ": FAILED" in line]
    rows = gather(spec, args.out)
    from hansprobe.mechanics.results import fmt_ci as _fmt_ci

    if args.json:
        print(json.dumps(rows, sort_keys=True))
        return 1 if failed else 0
    for r in rows:
        acc = (f"decision accuracy {_fmt_ci(r['decision_accuracy'], r['decision_accuracy_ci'])}, exact match "
               f"{_fmt_ci(r['exact_match'], r['exact_match_ci'])} (evaluated at step {r['step']})"
               if "decision_accuracy" in r else "")
        print(f"{r['run']}: {r['status']} {acc}")
    print(f"wrote {args.out / 'sweep.csv'}, sweep.json and sweep.html; `hansprobe report {args.out / 'runs'} --out ...` "
          "measures every run")
    if failed:
        print(f"hansprobe: {len(failed)} of {len(expand(spec))} runs failed (see above); fix them and run the sweep again: "
              "finished runs are skipped", file=sys.stderr)
        return 1
    return 0


def cmd_import(args) -> int:
    from hansprobe.errors import ConfigError
    from hansprobe.interop import import_model, read_state_dict, save_state_dict_safetensors
    from hansprobe.objectives import get_objective

    if args.to_safetensors is not None:
        if args.fmt in ("hf", "hf-gpt2"):
            raise ConfigError(f"{args.fmt} directories are safetensors already; --to-safetensors is for nanogpt and ntf files")
        from hansprobe.storage import check_output_file

        check_output_file(args.to_safetensors, args.overwrite)
        save_state_dict_safetensors(read_state_dict(args.source), args.to_safetensors)
        print(f"wrote {shown(args.to_safetensors)}; import it from there from now on (no pickle involved)")
        return 0
    missing = [flag for flag, v in (("--objective", args.objective), ("--out", args.out)) if v is None]
    if missing:
        raise ConfigError(f"import needs {', '.join(missing)}: the objective the model was trained with, and where to write")
    task = _task(args)
    if args.base_model is not None:  # a Next-Token-Failures fine-tune with the model it started from
        from hansprobe.ntf_finetuned import import_finetuned

        cfg = import_finetuned(args.source, args.base_model, args.out, task, get_objective(args.objective), args.fmt,
                               args.n_heads, args.overwrite)
    else:
        cfg = import_model(args.source, args.fmt, args.out, task, get_objective(args.objective), n_heads=args.n_heads,
                           overwrite=args.overwrite)
    if args.json:
        print(json.dumps(cfg, sort_keys=True))
    else:
        m = cfg["model"]
        print(f"imported {shown(args.source)} ({args.fmt}: {m['n_layers']} layers, {m['n_heads']} heads, d_model {m['d_model']}) "
              f"as {args.out} for {task.describe()}, {args.objective}; hooked-model logits match the source within "
              f"{cfg['imported_from']['max_logit_diff']:.1e}")
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "dynamics": cmd_dynamics, "report": cmd_report, "import": cmd_import,
            "analyse": cmd_analyse, "sweep": cmd_sweep, "data": cmd_data}


def _one_line(text: str) -> str:
    text = shown(" ".join(str(text).split()))  # a path's ESC or non-UTF-8 bytes never reach the terminal raw
    return text if len(text) <= 600 else text[:597] + "..."


def main(argv: list[str] | None = None) -> int:
    entry = argv is None  # run as the process (console script, python -m), not called in-process
    if entry:
        import hansprobe.progress

        hansprobe.progress.PROCESS_ENTRY = True
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # the top-level options take no value
    parser = build_parser(with_analyses=command not in LIGHT_COMMANDS)
    debug = "--debug" in argv  # anywhere on the line, so it can be added at the end of a failing command
    args = parser.parse_args([a for a in argv if a != "--debug"])
    try:
        return COMMANDS.get(args.command, cmd_analyse)(args)  # the rest are aliases of `analyse NAME`
    except HansprobeError as e:
        if debug:
            raise
        if _speaks():
            print(f"hansprobe: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from hansprobe.progress import INTERRUPTED, leave

        print(INTERRUPTED, file=sys.stderr)
        if entry:  # the process itself: leave now, without the exit's joins on a killed pool (decisions.md 68)
            leave(130)
        return 130
    except BrokenPipeError:  # `hansprobe ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except Exception as e:  # last resort: every expected failure is a HansprobeError above
        if debug:
            raise
        if isinstance(e, MemoryError) or "can't allocate memory" in str(e) or "out of memory" in str(e).lower():
            print(f"hansprobe: error: ran out of memory ({type(e).__name__}); use fewer graphs (-n), a smaller "
                  "--batch-size or a smaller model", file=sys.stderr)
        elif isinstance(e, OSError) and getattr(e, "filename", None):
            from hansprobe.errors import os_error_line

            print(f"hansprobe: error: {os_error_line(e, e.filename, 'use')}", file=sys.stderr)
        else:
            print(f"hansprobe: error: unexpected {type(e).__name__}: {_one_line(e)} — this is a bug, please report it "
                  f"with the command (run it again with --debug for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
