"""Measure every answer's error rate over graph draws (issue 36): the table of docs/calibration.md and
the rates the report quotes beside each answer (hansprobe/error_rates.json).

    python analyses/calibration.py                      # everything (~30 min on 2 cores), writes both files
    python analyses/calibration.py --quick --out-json /tmp/r.json --out-md /tmp/r.md   # a reduced run

Two parts, each model loaded once (hansprobe/calibrate.py):
- constructed models of known truth (hansprobe/constructed.py): the cheap questions (indecipherable,
  decision computed, and the Clever-Hans failure with its lookup given) on --draws independent draws
  of graphs at each n of --ns;
- every shipped checkpoint: the cheap questions on --checkpoint-draws draws at each n, and the
  costly ones (lookup, plan, the failure) through the report's own analyses on --report-draws draws at
  the report's defaults. A shipped checkpoint's "false" answers are those other than its expected
  answer (checkpoints/expected_answers.json).
Progress: a bar on a terminal, one line per draw otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT_QUESTIONS = ("lookup", "plan_represented", "clever_hans_failure", "search_recovers")
PARTS = {"constructed": "constructed", "checkpoints": "checkpoint", "search": "search"}  # --only -> the rows' source


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=None, help="draws per constructed model (default 500; --quick 40)")
    p.add_argument("--checkpoint-draws", type=int, default=None,
                   help="draws per shipped checkpoint, cheap questions (default 20; --quick 4)")
    p.add_argument("--report-draws", type=int, default=None,
                   help="draws per shipped checkpoint, costly questions (default 5; --quick 1)")
    p.add_argument("--ns", default="1000,2000", help="graphs per draw for the cheap questions (default 1000,2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a reduced run: 40 / 4 / 1 draws, three checkpoints")
    p.add_argument("--search-draws", type=int, default=None,
                   help="draws per constructed model for inference-time search (default 100; --quick 10)")
    p.add_argument("--only", choices=("constructed", "checkpoints", "search"), default=None)
    p.add_argument("--checkpoint", action="append", default=None, metavar="NAME",
                   help="measure only this shipped checkpoint (its name in checkpoints/expected_answers.json, e.g. "
                        "controls/pathstar-d2-l5-n50-untrained; repeatable): implies --only checkpoints, and the "
                        "other rows of --out-json are kept")
    p.add_argument("--out-json", default=str(ROOT / "hansprobe" / "error_rates.json"))
    p.add_argument("--out-md", default=str(ROOT / "docs" / "calibration.md"))
    p.add_argument("--render", metavar="JSON", default=None,
                   help="measure nothing: write --out-md again from a JSON this script wrote")
    a = p.parse_args(argv)
    if a.checkpoint:
        if a.only not in (None, "checkpoints"):
            p.error(f"--checkpoint measures shipped checkpoints; it does not go with --only {a.only}")
        a.only = "checkpoints"
        known = json.loads((ROOT / "checkpoints" / "expected_answers.json").read_text())["expected"]
        unknown = [n for n in a.checkpoint if n not in known]
        if unknown:
            p.error(f"no shipped checkpoint named {', '.join(unknown)}; the names are those of "
                    "checkpoints/expected_answers.json")
    for name, full, quick in (("draws", 500, 40), ("checkpoint_draws", 20, 4), ("report_draws", 5, 1),
                              ("search_draws", 100, 10)):
        if getattr(a, name) is None:  # an explicit count wins over --quick's
            setattr(a, name, quick if a.quick else full)
    try:
        a.ns = tuple(sorted({int(x) for x in a.ns.split(",")}))
    except ValueError:
        p.error(f"--ns takes comma-separated whole numbers, got {a.ns!r}")
    if min(a.ns) < 10 or min(a.draws, a.checkpoint_draws) < 1 or a.report_draws < 0:
        p.error("--ns values must be >= 10 and the draws >= 1")
    return a


def shipped(quick: bool, only: list[str] | None = None) -> list[tuple[Path, dict]]:
    table = json.loads((ROOT / "checkpoints" / "expected_answers.json").read_text())["expected"]
    names = only or list(table)
    if quick and not only:
        names = ["pathstar-d2-l5-n50-teacher-forcing", "controls/pathstar-d2-l3-n50-teacher-forcing",
                 "controls/pathstar-d2-l5-n50-untrained"]
    return [(ROOT / "checkpoints" / n, table[n]) for n in names if (ROOT / "checkpoints" / n / "config.json").is_file()]


MD_HEAD = "# Calibration: how often each answer is given, over graph draws"


def _not_ours(path: str, json_file: bool) -> str | None:
    """Why `path` may not be written: it exists and is not a file this script wrote (nothing else is replaced)."""
    p = Path(path)
    if not p.exists():
        return None
    if not p.is_file():
        return f"{path} exists and is not a regular file"
    head = p.open("rb").read(4096).decode("utf-8", "replace")
    ours = '"format": "hansprobe-error-rates"' in head if json_file else head.startswith(MD_HEAD)
    return None if ours else f"{path} exists and was not written by this script: choose another path"


def main(argv=None) -> int:
    import torch

    from hansprobe.calibrate import AnswerRates, checkpoint_rates, constructed_rates, search_rates
    from hansprobe.constructed import CONSTRUCTED, SEARCH_CONSTRUCTED
    from hansprobe.report.settings import ReportSettings

    a = _parse(argv)
    for path, is_json in ((a.out_md, False),) + (() if a.render else ((a.out_json, True),)):
        why = _not_ours(path, is_json)
        if why:
            print(f"calibration: {why}", file=sys.stderr)
            return 2
    if a.render:
        from hansprobe.storage import atomic_write_bytes

        try:
            doc = json.loads(Path(a.render).read_text())
            rows = [AnswerRates(**r) for r in doc["rows"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"calibration: --render {a.render}: not a file this script wrote ({e.__class__.__name__}: {e})",
                  file=sys.stderr)
            return 2
        atomic_write_bytes(a.out_md, markdown(rows, doc["meta"]).encode())
        return 0
    progress = True if sys.stderr.isatty() else "lines"
    rows, cost, earlier = [], {}, []
    if a.only in (None, "constructed"):
        t0 = time.perf_counter()
        rows += constructed_rates(list(CONSTRUCTED), a.ns, a.draws, a.seed, progress)
        cost["constructed"] = time.perf_counter() - t0
    if a.only in (None, "search"):
        t0 = time.perf_counter()
        rows += search_rates(list(SEARCH_CONSTRUCTED), draws=a.search_draws, seed=a.seed, progress=progress)
        cost["search"] = time.perf_counter() - t0
    if a.only in (None, "checkpoints"):
        t0 = time.perf_counter()
        for path, expected in shipped(a.quick, a.checkpoint):
            t1 = time.perf_counter()
            rows += checkpoint_rates(path, expected, a.ns, a.checkpoint_draws, REPORT_QUESTIONS, a.report_draws, a.seed,
                                     ReportSettings(), progress)
            cost[str(path.relative_to(ROOT / "checkpoints"))] = time.perf_counter() - t1
            print(f"calibration: {path.name} done in {cost[str(path.relative_to(ROOT / 'checkpoints'))]:.0f} s",
                  file=sys.stderr, flush=True)
        cost["checkpoints"] = time.perf_counter() - t0
    if a.only and Path(a.out_json).is_file():  # one part measured again: the other parts' rows and cost are kept
        old = json.loads(Path(a.out_json).read_text())
        source = PARTS[a.only]
        measured = {Path(n).name for n in a.checkpoint or ()}  # rows name a checkpoint by its directory's name
        ours = (lambda r: r["source"] == source and r["model"] in measured) if a.checkpoint else \
            (lambda r: r["source"] == source)
        rows = [AnswerRates(**r) for r in old["rows"] if not ours(r)] + rows
        # a checkpoint's cost is keyed by its name; the other parts by their own
        if a.checkpoint:
            mine = lambda k: k in a.checkpoint or k == "checkpoints"  # noqa: E731
        elif a.only == "checkpoints":
            mine = lambda k: k not in ("constructed", "search")  # noqa: E731
        else:
            mine = lambda k: k == a.only  # noqa: E731
        kept = {k: v for k, v in old["meta"]["seconds"].items() if k != "total" and not mine(k)}
        cost = {**kept, **cost}
        if a.checkpoint:  # the part's cost: every checkpoint's, kept and measured
            cost["checkpoints"] = sum(v for k, v in cost.items() if k not in ("constructed", "search", "checkpoints"))
        earlier = old["meta"].get("commands") or [old["meta"]["command"]]
    cost["total"] = cost.get("constructed", 0) + cost.get("checkpoints", 0) + cost.get("search", 0)
    meta = {"date": date.today().isoformat(), "seed": a.seed, "ns": list(a.ns), "draws": a.draws,
            "search_draws": a.search_draws,
            "checkpoint_draws": a.checkpoint_draws, "report_draws": a.report_draws, "quick": a.quick,
            "threads": torch.get_num_threads(), "seconds": {k: round(v, 1) for k, v in cost.items()},
            "command": "python analyses/calibration.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    meta["commands"] = earlier + [meta["command"]]  # the runs this table's rows come from, in order
    from hansprobe.storage import atomic_write_bytes

    atomic_write_bytes(a.out_json, (json.dumps({"format": "hansprobe-error-rates", "meta": meta,
                                                "rows": [asdict(r) for r in rows]}, indent=1) + "\n").encode())
    atomic_write_bytes(a.out_md, markdown(rows, meta).encode())
    print(f"calibration: {len(rows)} rows in {cost['total']:.0f} s -> {a.out_json}, {a.out_md}", file=sys.stderr)
    return 0


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _row(r) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items(), key=lambda kv: -kv[1]))
    false = ("—" if not r.false_answers else
             f"{_pct(r.false_rate)} [{_pct(r.false_rate_ci[0])}, {_pct(r.false_rate_ci[1])}] ({'/'.join(r.false_answers)})")
    extra = "; ".join(f"{k}: {v}" for k, v in r.wording.items() if v)
    return f"| {r.model} | {r.n_graphs} | {r.draws} | {counts}{'; ' + extra if extra else ''} | {false} |"


def markdown(rows, meta) -> str:
    from hansprobe.measurements.goal_dependence import FAMILY_ALPHA

    by_q: dict = {}
    for r in rows:
        by_q.setdefault(r.question, []).append(r)
    s = meta["seconds"]
    lines = [
        MD_HEAD,
        "",
        f"Measured by {' then '.join(f'`{c.strip()}`' for c in meta.get('commands') or [meta['command']])} on {meta['date']} "
        f"({meta['threads']} CPU thread{'s' if meta['threads'] != 1 else ''} in the last of them), seed {meta['seed']}:",
        "each row asks one question of one model on independent draws of fresh graphs (hansprobe/calibrate.py) and",
        "counts the answers. **false** is the share of draws whose answer is wrong on that model, with its exact 95%",
        "interval (Clopper-Pearson): on a constructed model (hansprobe/constructed.py) the answers its construction",
        "rules out; on a shipped checkpoint every answer other than its expected one (checkpoints/expected_answers.json,",
        "docs/controls.md). The report quotes, beside each answer, the worst measured rate of that answer where it is",
        "false (hansprobe/error_rates.json, written with this page). The family-wise goal: a false \"decided\" or",
        f"\"computed\" in at most {FAMILY_ALPHA:.0%} of draws on a model that ignores the goal (docs/decisions.md 53).",
        "",
        f"Cost: constructed models {s.get('constructed', 0):.0f} s ({meta['draws']} draws each at n = "
        f"{', '.join(map(str, meta['ns']))}), shipped checkpoints {s.get('checkpoints', 0):.0f} s "
        f"({meta['checkpoint_draws']} draws at each n for the cheap questions, {meta['report_draws']} at the report's "
        f"defaults for the costly ones, each checkpoint loaded once), inference-time search {s.get('search', 0):.0f} s "
        f"({meta.get('search_draws', '?')} draws each); {s.get('total', 0):.0f} s in all.",
        "",
    ]
    titles = {"indecipherable": "First decision token indecipherable?", "decision_computed": "Decision computed from the goal?",
              "clever_hans_failure": "Clever-Hans failure?", "lookup": "Later tokens read off the previous one?",
              "plan_represented": "Where is the first decision planned?",
              "search_recovers": "Can inference-time search recover the decision?"}
    for q in ("clever_hans_failure", "indecipherable", "decision_computed", "lookup", "plan_represented", "search_recovers"):
        if q not in by_q:
            continue
        lines += [f"## {q}", "", f"*{titles[q]}*" + (" On constructed models the lookup part is given as *yes* (they have "
                                                       "none to measure); the rate is that of the other two parts."
                                                       if q == "clever_hans_failure" else ""), ""]
        if q == "search_recovers":
            lines += [f"Constructed models: {meta.get('search_draws', '?')} draws of n graphs each (the report's "
                      f"--mechanism-graphs), every strategy of hansprobe/measurements/inference.py per draw; {s.get('search', 0):.0f} s in "
                      "all. *not needed* and *yes* are false where the decision ignores the goal; *no* and *not needed* "
                      "on the wrong-favourite model; *no* and *yes* on the planner.", ""]
        lines += ["| model | n | draws | answers | false |", "|---|---|---|---|---|"]
        lines += [_row(r) for r in sorted(by_q[q], key=lambda r: (r.source == "checkpoint", r.model, r.n_graphs))]
        lines.append("")
    from hansprobe.constructed import CONSTRUCTED, SEARCH_CONSTRUCTED

    lines += ["## The constructed models", "", "| model | d | what it is | false answers |", "|---|---|---|---|"]
    for c in CONSTRUCTED.values():
        false = "; ".join(f"{q}: {'/'.join(v)}" for q, v in c.false.items())
        lines.append(f"| {c.name} | {c.degree} | {c.what}{' — ' + c.trap if c.trap else ''} | {false} |")
    for c in SEARCH_CONSTRUCTED.values():
        if c.name not in CONSTRUCTED:
            lines.append(f"| {c.name} | {c.degree} | {c.what} | "
                         + "; ".join(f"{q}: {'/'.join(v)}" for q, v in c.false.items()) + " |")
    lines += ["", "The review's traps that do not depend on the graph draw — a witness in another prompt layout, a witness's",
              "budget in graphs seen, a learning order without a snapshot before the lookup, a lookup *no* from missing",
              "evidence, the last index as a control, the cap printed as 25% at fewer than four heads, the plan's *used* from",
              "the whole residual alone and the *at the answer position* answer from one cell — are rules, each held by a test",
              "on a constructed model or result (tests/unit/test_error_rates.py, tests/unit/test_witness.py); the goal-label parity",
              "trap depends on the draw and is in the tables above (`goal-parity`: the failure's evidence no longer says",
              "\"ignores the goal\")."]
    secs = {k: v for k, v in s.items() if k not in ("constructed", "checkpoints", "search", "total")}
    if secs:
        lines += ["", "Per checkpoint (seconds, load included): " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
