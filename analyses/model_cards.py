"""Measure every checkpoint in checkpoints/ (references) and checkpoints/controls/ and write
docs/model-cards.md.

    python analyses/model_cards.py [--n-graphs 2000] [--seed 1234] [--out docs/model-cards.md] [--only NAME ...]

Each card gives the run's training settings and, measured here by hansprobe on fresh graphs (seed
1234, which training never uses) and, where it exists, on the paper's own test split
(../shared/data/ntf), the report's five verdicts with their evidence (the same code and graphs as
`hansprobe report`), behaviour and first-token entropy with 95% CIs, goal dependence, the heads'
causal search, the plan-depth profile, patching and the learning order for runs with snapshots. Nothing in the
cards is typed by hand.
"""
import argparse
import math
import time
from pathlib import Path

import torch

from hansprobe.measurements import measure_behaviour, measure_entropy
from hansprobe.checkpoint import load_checkpoint
from hansprobe.report import QUESTIONS, ReportSettings, measure_checkpoint
from hansprobe.storage import atomic_write_bytes
from hansprobe.tasks import read_ntf

ROOT = Path(__file__).resolve().parents[1]
NTF = ROOT.parent / "shared" / "data" / "ntf"
# The failure measured beside its capacity witness (same task and shape, decides forwards): report --witness.
WITNESSES = {"pathstar-d2-l5-n50-teacher-forcing-4layers-6000steps": "pathstar-d2-l5-n50-multi-token-4layers-6000steps"}
NTF_GRAPHS = 5000  # of the 20,000 in a split: the goal-dependence pairs and the bootstrap make all of it slow on CPU


def checkpoint_dirs() -> list[Path]:
    """References first (checkpoints/*), then the controls (checkpoints/controls/*)."""
    found = []
    for root in (ROOT / "checkpoints", ROOT / "checkpoints" / "controls"):
        found += sorted(p for p in root.iterdir() if (p / "config.json").is_file())
    return found


def ci(v, c, digits=3):
    return f"{v:.{digits}f} [{c[0]:.{digits}f}, {c[1]:.{digits}f}]"


def plan_depth_section(pd: dict) -> list[str]:
    """The report's plan-depth profile (already measured): held-out probe accuracy of each target of
    the sub-goal chain, at the best position of each block input, and each search's chosen cell."""
    if pd.get("skipped") or pd.get("applicable"):
        return ["", f"Plan depth profile: not measured ({pd.get('skipped') or pd.get('applicable')}).", ""]
    names = ["embed" if k == 0 else f"after block {k - 1}" for k in pd["layers"]]
    lines = ["", f"Plan depth profile ({pd['n_eval']} evaluation graphs; probes fitted on another {2 * pd['n_eval']}, "
             f"cells chosen on a further {pd['n_eval']}; {pd['hops']} backward hops from the goal to the decision; blocks "
             f"that write: {len(pd['blocks'])}). Best held-out accuracy over the positions from the goal to the decision "
             "position, per block input:", "", "| target (chance) | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for name, prof in pd["profile"].items():
        cells = []
        for row in prof["accuracy"]:
            vals = [v for v in row if v is not None and v == v]
            cells.append(f"{max(vals):.2f}" if vals else "—")
        if "by_role" in prof:
            cells = [f"{max(v[i] for v in prof['by_role'].values()):.2f}" for i in range(len(names))]
        lines.append(f"| {name} ({prof['chance']:.2f}) | " + " | ".join(cells) + " |")
    lines.append("")
    for key, s in pd["searches"].items():
        c = pd["causal"].get(key)
        lines.append(f"- {s['target']}, {'before the answer' if s['kind'] == 'before' else 'at the decision position'}: "
                     f"`{s['position_label']}` at layer {s['layer']}, accuracy {ci(s['accuracy'], s['accuracy_ci'])}, "
                     f"selectivity {ci(s['selectivity'], s['selectivity_ci'])}, whole-search null p = {s['null_p']:.2g}"
                     + (f"; patching from the goal-swap partner restores {c['whole_residual']['normalized']:.2f} (whole "
                        f"residual), {c['probe_directions']['normalized']:.2f} (probe directions)" if c else ""))
    lines.append("")
    return lines


def patching_lines(p: dict) -> list[str]:
    lines = ["", f"Activation patching ({p['n_pairs']} goal-swap pairs; metric at label index {p['metric_label_index']}): "
             f"clean logit difference {p['clean_logit_diff']:.3f}, corrupted {p['corrupted_logit_diff']:.3f}. {p['verdict']}."]
    if p["measurable"] and "resid" in p["sweeps"]:
        z = p["sweeps"]["resid"]["sufficiency"]["normalized"]
        keep = [i for i in range(p["metric_position"] + 1) if max(abs(row[i]) for row in z) >= 0.05]
        lines += ["", "Residual stream (resid_pre), clean into corrupted, normalised; positions where any layer moves it by >= 0.05:", "",
                  "| layer | " + " | ".join(p["position_labels"][i] for i in keep) + " |", "|---|" + "---|" * len(keep)]
        for l, row in enumerate(z):
            lines.append(f"| {l} | " + " | ".join(f"{row[i]:.2f}" for i in keep) + " |")
    if p.get("shortcut"):
        lines += ["", "Shortcut patching (share predicting the swapped-in node's successor after patching resid_pre at "
                  "r_(i-1)'s position): " + "; ".join(f"index {i}: " + ", ".join(f"L{l} {v:.3f}" for l, v in enumerate(rates))
                                                     for i, rates in p["shortcut"]["move_rate"].items()) + "."]
    return lines


def heads_lines(h: dict, source: str) -> list[str]:
    idx = h["query_label_indices"]
    lines = ["", f"Heads ({h['n_graphs']} graphs of {source}; attention at the shortcut queries, label indices "
             f"{idx[0]}..{idx[-1]}, the last index {h['last_label_index']} apart; ablation drop = forced accuracy lost at "
             "those indices under mean / zero ablation):", "",
             "| head | edge lookup (parent + child + separator) | separator | at the last index | child->parent lookup | "
             "from each separator: own parent / own child | single-head drop | in the mechanism |", "|---|---|---|---|---|---|---|---|"]
    for r in h["heads"]:
        sep = r["prompt_roles"]["separator"]
        lines.append(f"| L{r['layer']}H{r['head']} | {ci(r['edge_lookup_score'], r['edge_lookup_ci'])} | "
                     f"{r['edge_lookup_components']['separator']:.3f} | {r['edge_lookup_last']:.3f} | {r['child_parent_score']:.3f} | "
                     f"{sep['own parent']:.3f} / {sep['own child']:.3f} | {r['ablation_drop']:+.3f} / {r['ablation_drop_zero']:+.3f} | "
                     f"{'**yes**' if r['in_mechanism'] else 'no'} |")
    m = h["mechanism"]
    steps = "; ".join(f"+L{s['add'][0]}H{s['add'][1]} -> forced accuracy {s['shortcut_accuracy']:.3f}" for s in m["search"])
    lines += ["", f"A uniform head would put {h['patterns']['edge_lookup']['span']['uniform']:.3f} on the edge's span. "
              f"Greedy search (mean ablation, from {h['baseline']['shortcut_accuracy']:.3f}): {steps}. Group and layer "
              "ablations (forced accuracy per label index, mean ablation):", ""]
    for a in h["ablations"]:
        if a["kind"] != "head" and a["mode"] == "mean":
            zero = next(z["drop"] for z in h["ablations"] if z["label"] == a["label"] and z["mode"] == "zero")
            lines.append(f"- {a['label']} {a['heads']}: {', '.join(f'{x:.3f}' for x in a['forced_accuracy'])} "
                         f"(drop at {idx[0]}..{idx[-1]}: {a['drop']:+.3f}; zero ablation: {zero:+.3f})")
    f = h["follow"]
    if f:
        by = ", ".join(f"r{i} {v['rate']:.3f}" for i, v in f["follow_rate_by_position"].items())
        control = ", ".join(f"r{i} {v['true_next']:.3f}" for i, v in f["control"].items())
        lines += ["", f"Counterfactual-prefix follow rate (indices {idx[0]}..{idx[-1]}): {ci(f['follow_rate'], f['follow_rate_ci'])}; "
                  f"by index {by} (the last index apart: under forward targets the goal can be copied from the prompt "
                  f"there). Control (a node with no successor swapped in): still answers the true r_i at {control}."]
    return lines + ["", f"Heads verdict: {h['verdict']}."]


def goal_dependence_lines(e: dict) -> list[str]:
    gd = e.get("goal_dependence") or {}
    if not gd.get("applicable"):
        return ["", f"Goal dependence: not applicable ({gd.get('reason', 'not measured')})."]
    lines = ["", f"Goal dependence ({gd['n_graphs']} pairs per kind; Δ = change of the candidate log-odds when only the "
             "goal's place moves; decided on the signed mean, within ±0.05 nats (decisions.md 38); |Δ| and the placebo "
             "(the same edges relisted) are description):", "",
             "| pairs | mean abs(Δ) (nats) | placebo mean abs(Δ) | excess over the placebo | signed mean Δ | argmax follows the goal | status |",
             "|---|---|---|---|---|---|---|"]
    for kind, v in gd["kinds"].items():
        lines.append(f"| {kind.replace('_', '-')} | {ci(v['abs_delta_mean'], v['abs_delta_ci'])} | {v['placebo_abs_delta_mean']:.3f} | "
                     f"{ci(v['excess_mean'], v['excess_ci'])} | {ci(v['delta_mean'], v['delta_mean_ci'])} | "
                     f"{ci(v['follow_share'], v['follow_ci'])} | {v['status']} |")
    return lines


def compounding_line(c: dict) -> str:
    """The compounding analysis's one sentence (CompoundingResult.line) from its summary."""
    from hansprobe.measurements.compounding import CompoundingResult

    return CompoundingResult(**c).line()


def card(path: Path, n: int, seed: int) -> list[str]:
    ck = load_checkpoint(path)
    cfg, task, obj = ck.config, ck.task, ck.objective
    tr = cfg["train"]
    imp = cfg.get("imported_from")
    if imp:  # made elsewhere: what the import checked, and where its making is described
        arch = cfg["model"].get("hf_config", {}).get("model_type", imp["format"])
        commas = imp.get("comma_accuracy")
        trained = (f"a {arch} model made outside hansprobe and imported (`--format {imp['format']}`: logits within "
                   f"{imp['max_logit_diff']:.1e} of {imp['parity_reference']}"
                   + (f"; the commas between answer nodes predicted in {commas:.3f} of cases" if commas is not None else "")
                   + "; how it was made: docs/controls.md)")
    elif tr:
        trained = (f"trained {cfg['step']} steps of {tr['batch_size']} fresh graphs, lr {tr['lr']}, warmup "
                   f"{tr['warmup_steps']}, seed {cfg['seed']}")
    else:
        trained = f"untrained: its initialisation from seed {cfg['seed']}"
    rel = path.relative_to(ROOT / "checkpoints")
    lines = [f"## `{rel}`", "",
             f"{task.describe()}, objective **{obj.name}**; {cfg['model']['n_layers']} layers, d_model "
             f"{cfg['model']['d_model']}, {cfg['model']['n_heads']} heads; {trained}, on {cfg.get('device', 'cpu')} "
             f"(torch {cfg['versions'].get('torch')}, transformer-lens {cfg['versions'].get('transformer-lens')}).", ""]
    witness = next((w for w in (ROOT / "checkpoints" / WITNESSES.get(path.name, "-"),) if (w / "config.json").is_file()), None)
    rep = measure_checkpoint(path, ReportSettings(n_graphs=n, seed=seed, witness=str(witness) if witness else None))
    a = rep.analyses
    src = f"{n} fresh graphs, seed {seed}"
    lines += [f"Report verdicts ({src}; heads, probes, dynamics on the first {rep.provenance['mechanism_graphs']}, "
              f"{rep.provenance['patch_pairs']} patching pairs; the same code and graphs as `hansprobe report`):", "",
              "| question | answer | evidence |", "|---|---|---|"]
    for key, text in QUESTIONS.items():
        v = rep.verdicts[key]
        evidence = v["evidence"].replace("|", "\\|")  # a bare | (as in |Δ|) would end the table cell
        lines.append(f"| {text} | **{v['answer']}** | {evidence} |")
    lines += [f"- note: {note}" for note in rep.notes]
    sources = [(src, a["behaviour"], a["entropy"])]
    ntf = NTF / f"deg_{getattr(task, 'degree', 0)}_path_{getattr(task, 'path_len', 0)}_nodes_{task.n_nodes}_test_20000.txt"
    if task.name == "pathstar" and ntf.is_file() and not getattr(task, "cue", None):
        batch = read_ntf(ntf, task=task, limit=NTF_GRAPHS)
        sources.append((f"the paper's test split `{ntf.name}` (its first {len(batch):,} graphs)",
                        measure_behaviour(ck.model, obj, batch).to_dict(), measure_entropy(ck.model, obj, batch, seed=seed).summary()))
    lines += ["", "| measured on | exact match | decision acc. (chance) | forced acc. per position | free acc. per position |",
              "|---|---|---|---|---|"]
    for name, b, _ in sources:
        lines.append(f"| {name} | {ci(b['exact_match'], b['exact_match_ci'])} | {ci(b['decision_accuracy'], b['decision_accuracy_ci'])} "
                     f"({b['chance']:.2f}) | {', '.join(f'{x:.3f}' for x in b['forced_accuracy'])} | "
                     f"{', '.join(f'{x:.3f}' for x in b['free_accuracy'])} |")
    comp, inf = a.get("compounding", {}), a.get("inference", {})
    if "skipped" not in comp:
        lines += ["", f"Error compounding ({src}, greedy decoding): {compounding_line(comp)}."]
    if inf and "skipped" not in inf:
        g = inf["rows"][0]
        best = max(inf["rows"], key=lambda r: r["accuracy"] - r["uniform_accuracy"])
        lines += ["", f"Inference-time search (the first {inf['n_graphs']} graphs; CIs at {inf['ci_level']:.2%}, family-wise "
                  f"over {len(inf['rows'])} strategies): greedy {ci(g['accuracy'], g['accuracy_ci'])} against a uniform "
                  f"guesser's {g['uniform_accuracy']:.3f}; furthest above its guesser: {best['strategy']} "
                  f"{ci(best['accuracy'], best['accuracy_ci'])} against {best['uniform_accuracy']:.3f}."]
    lines += ["", f"First decision token (label index {obj.decision_index(task.target_len)}), 95% CIs:", "",
              "| measured on | accuracy among the candidates | H over candidates / log d | mass outside candidates | "
              "information over uniform (nats) | outcome |", "|---|---|---|---|---|---|"]
    for name, _, e in sources:
        lines.append(f"| {name} | {ci(e['candidate_accuracy'], e['candidate_accuracy_ci'])} | "
                     f"{ci(e['candidate_entropy_frac'], e['candidate_entropy_frac_ci'])} | "
                     f"{ci(e['mass_outside_candidates'], e['mass_outside_candidates_ci'])} | "
                     f"{ci(e['information_nats'], e['information_nats_ci'])} | **{e['outcome']}** |")
    e = a["entropy"]
    follows = [f"{k} {v['rate']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]" for k, v in e["preference"].items() if v["follows"]]
    lines += ["", f"Outcome ({src}): {e['verdict']}."]
    if follows:
        lines.append(f"The top candidate is picked more often than chance ({e['chance']:.2f}) by these rules: {'; '.join(follows)}.")
    lines += goal_dependence_lines(e)
    dec = a["decisions"]
    if "skipped" not in dec:  # a tree: every decision of the path, not only the first
        depth = task.target_len - 1
        lines += ["", f"Every decision of the path ({src}; label k among the children of r_(k-1), depth - k backward hops "
                  "from the goal; goal swap at that level, signed Δ of the candidate log-odds):", "",
                  "| decision | hops from the goal | accuracy among the candidates (chance) | goal swap: signed Δ (nats) | outcome |",
                  "|---|---|---|---|---|"]
        for d in dec["decisions"]:
            g = d["goal_swap"]
            lines.append(f"| r{d['index']} | {depth - d['index']} | {ci(d['candidate_accuracy'], d['candidate_accuracy_ci'])} "
                         f"({dec['chance']:.2f}) | {ci(g['delta_mean'], g['delta_mean_ci'])}: {g['status']} | **{d['outcome']}** |")
    if "skipped" not in a["heads"]:
        lines += heads_lines(a["heads"], src)
    else:
        lines += ["", f"Heads: not measured ({a['heads']['skipped']})."]
    lines += plan_depth_section(a["plan_depth"])
    lines += patching_lines(a["patching"])
    dyn = a["dynamics"]
    if "skipped" not in dyn:
        order = ", ".join(f"r{p} at step {dyn['learned_at'][p]}" if dyn["learned_at"][p] is not None else f"r{p} never"
                          for p in dyn["learning_order"])
        lines += ["", f"Learning order (first snapshot with forced accuracy >= 0.9, {dyn['n_graphs']} graphs; snapshots at "
                  f"{', '.join(map(str, dyn['steps']))}): {order}.", "",
                  "| step | " + " | ".join(f"r{p}" for p in range(task.target_len)) + " | H/log d | decision acc. |",
                  "|---|" + "---|" * (task.target_len + 2)]
        for s_, row, h, acc in zip(dyn["steps"], dyn["forced_accuracy"], dyn["candidate_entropy_frac"], dyn["decision_accuracy"]):
            lines.append(f"| {s_} | " + " | ".join(f"{x:.3f}" for x in row) + f" | {h:.3f} | {acc:.3f} |")
        if dyn.get("loss_by_position"):
            lines += ["", f"Where the supervision goes: training loss per label position (nats; log d = "
                      f"{math.log(1 / task.chance):.3f}) and each "
                      f"position's share of the gradient over all parameters ({dyn['grad_graphs']} graphs):", "",
                      "| step | " + " | ".join(f"loss r{p}" for p in range(task.target_len)) + " | "
                      + " | ".join(f"grad r{p}" for p in range(task.target_len)) + " |",
                      "|---|" + "---|" * (2 * task.target_len)]
            for s_, loss, grad in zip(dyn["steps"], dyn["loss_by_position"], dyn["grad_share"]):
                lines.append(f"| {s_} | " + " | ".join(f"{x:.3f}" for x in loss) + " | " + " | ".join(f"{x:.2f}" for x in grad) + " |")
    return lines + [""]

def replace_cards(args) -> None:
    """Re-measure some checkpoints and splice their sections into the existing cards file."""
    text = args.out.read_text()
    for name in args.only:
        t = time.perf_counter()
        path = next((p for p in checkpoint_dirs() if str(p.relative_to(ROOT / "checkpoints")) == name or p.name == name), None)
        if path is None:
            raise SystemExit(f"no checkpoint {name!r} in checkpoints/ or checkpoints/controls/")
        new = "\n".join(card(path, args.n_graphs, args.seed))
        head = f"## `{path.relative_to(ROOT / 'checkpoints')}`"
        start = text.find(head)
        if start < 0:  # a new checkpoint: before the closing timing line
            start = end = text.rindex("_Measured in")
        else:
            nxt = text.find("\n## ", start + len(head))
            end = nxt + 1 if nxt >= 0 else text.rindex("_Measured in")
        text = text[:start] + new + "\n" + text[end:]
        secs = time.perf_counter() - t
        text = text.rstrip("\n") + f"\n_`{name}` re-measured alone (`--only`) in {secs:.0f} s._\n"
        print(f"re-measured {name} in {secs:.0f} s", flush=True)
    atomic_write_bytes(args.out, text.encode())
    print(f"wrote {args.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-graphs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "model-cards.md")
    ap.add_argument("--which", choices=["all", "references", "controls"], default="all",
                    help="which checkpoints to measure (two processes can split the work; concatenate their files)")
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME",
                    help="re-measure only these checkpoints and replace their sections in --out")
    args = ap.parse_args()
    if args.only:
        return replace_cards(args)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t = time.perf_counter()
    out = ["# Model cards", "",
           "Written by `python analyses/model_cards.py` from the checkpoints in `checkpoints/` (references, trained by "
           "`analyses/train_reference_checkpoints.py`) and `checkpoints/controls/` (controls with known answers, made by "
           "`analyses/train_control_checkpoints.py`; docs/controls.md). Every figure below was measured by hansprobe; "
           "CIs are 95% (Wilson for accuracies, bootstrap for means).", ""]
    for path in checkpoint_dirs():
        is_control = path.parent.name == "controls"
        if (args.which == "references" and is_control) or (args.which == "controls" and not is_control):
            continue
        out += card(path, args.n_graphs, args.seed)
        print(f"measured {path.name}", flush=True)
    out.append(f"_Measured in {time.perf_counter() - t:.0f} s._")
    atomic_write_bytes(args.out, ("\n".join(out) + "\n").encode())  # a killed run leaves the old cards whole
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
