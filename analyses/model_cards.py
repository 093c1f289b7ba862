"""Measure every checkpoint in checkpoints/ and write docs/model-cards.md.

    python analyses/model_cards.py [--n-graphs 2000] [--seed 1234] [--out docs/model-cards.md]

Each card gives the run's training settings and, measured here by hansprobe on fresh graphs (seed
1234, which training never uses) and, where it exists, on the paper's own test split
(../shared/data/ntf), behaviour and first-token entropy with 95% CIs, and the learning order for runs
with snapshots. Nothing in the cards is typed by hand.
"""
import argparse
import time
from pathlib import Path

import torch

from hansprobe.analyses import measure_behaviour, measure_dynamics, measure_entropy
from hansprobe.analyses.heads import measure_heads
from hansprobe.analyses.patching import measure_patching
from hansprobe.analyses.probes import measure_probes
from hansprobe.checkpoint import load_checkpoint, model_from_config
from hansprobe.tasks import read_ntf

ROOT = Path(__file__).resolve().parents[1]
NTF = ROOT.parent / "shared" / "data" / "ntf"


def ci(v, c, digits=3):
    return f"{v:.{digits}f} [{c[0]:.{digits}f}, {c[1]:.{digits}f}]"


@torch.no_grad()
def separator_sources(model, obj, batch, size: int = 500):
    """Per head: attention from each edge's separator to the same edge's parent and child token."""
    par = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    chi = torch.zeros_like(par)
    e = torch.arange(batch.edge_parent.shape[1])
    for chunk in batch.split(size):
        _, cache = model.run_with_cache(obj.inputs(chunk), names_filter=lambda n: n.endswith("hook_pattern"))
        for l in range(model.cfg.n_layers):
            pat = cache[f"blocks.{l}.attn.hook_pattern"]  # (b, H, T, T)
            at_sep = pat[:, :, chunk.edge_sep_pos[0]]  # (b, H, E, T); positions are the same in every graph
            par[l] += at_sep[:, :, e, chunk.edge_parent_pos[0]].sum((0, 2)) / len(e)
            chi[l] += at_sep[:, :, e, chunk.edge_child_pos[0]].sum((0, 2)) / len(e)
    n = len(batch)
    return [(l, h, float(par[l, h] / n), float(chi[l, h] / n)) for l in range(par.shape[0]) for h in range(par.shape[1])]


def probe_section(ck, batch) -> list[str]:
    untrained, _ = model_from_config(ck.config, "cpu")
    lines = ["", f"Probes ({len(batch)} fresh graphs, 5 folds grouped by graph; accuracy [95% CI] / selectivity vs shuffled "
             "labels; untrained model in brackets). Layer 0 = embeddings, k = after block k-1:", ""]
    for target in ("goal_arm", "decision_node"):
        r = measure_probes(ck.model, ck.objective, batch, target, untrained_model=untrained)
        lines += [f"*{target}* — {r.description}:", "", "| layer | " + " | ".join(r.position_labels) + " |",
                  "|---|" + "---|" * len(r.position_labels)]
        for li, layer in enumerate(r.layers):
            cells = []
            for j in range(len(r.positions)):
                a, c = r.accuracy[li][j], r.accuracy_ci[li][j]
                cells.append(f"{a:.2f} [{c[0]:.2f}, {c[1]:.2f}] / {r.selectivity[li][j]:+.2f} ({r.untrained[li][j]:.2f})")
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
        if r.best:
            b = r.best
            lines += ["", f"Most selective cell before the answer: layer {b['layer']} at `{b['position_label']}`, accuracy "
                      f"{b['accuracy']:.3f}, selectivity {b['selectivity']:+.3f} (chance {r.chance:.2f})."]
        if r.causal:
            c = r.causal
            lines.append(f"Steering along the probe there changes the decision logit difference by "
                         f"{c['steer_probe']['mean_change']:+.3f} [{c['steer_probe']['ci'][0]:+.3f}, {c['steer_probe']['ci'][1]:+.3f}] "
                         f"(random directions {c['steer_random']['mean_change']:+.3f}); projecting the probe out: "
                         f"{c['ablate_probe']['mean_change']:+.3f} (random {c['ablate_random']['mean_change']:+.3f}).")
        lines.append("")
    return lines


def patching_section(ck, batch) -> list[str]:
    r = measure_patching(ck.model, ck.objective, batch, sweeps=("resid", "heads"), directions=("sufficiency",))
    lines = ["", f"Activation patching ({r.n_pairs} goal-swap pairs; metric at label index {r.metric_label_index}): "
             f"clean logit difference {r.clean_logit_diff:.3f}, corrupted {r.corrupted_logit_diff:.3f}. {r.verdict}."]
    if r.measurable:
        z = r.sweeps["resid"]["sufficiency"]["normalized"]
        lines += ["", "Residual stream (resid_pre), clean into corrupted, normalised; positions where any layer moves it by >= 0.05:", "",
                  "| layer | " + " | ".join(r.position_labels[p] for p in range(r.metric_position + 1)
                                          if max(abs(row[p]) for row in z) >= 0.05) + " |"]
        keep = [p for p in range(r.metric_position + 1) if max(abs(row[p]) for row in z) >= 0.05]
        lines.append("|---|" + "---|" * len(keep))
        for l, row in enumerate(z):
            lines.append(f"| {l} | " + " | ".join(f"{row[p]:.2f}" for p in keep) + " |")
    if r.shortcut:
        lines += ["", "Shortcut patching (share predicting the swapped-in node's successor after patching resid_pre at "
                  "r_(i-1)'s position): " + "; ".join(f"index {i}: " + ", ".join(f"L{l} {v:.3f}" for l, v in enumerate(rates))
                                                     for i, rates in r.shortcut["move_rate"].items()) + "."]
    return lines


def card(path: Path, n: int, seed: int) -> list[str]:
    ck = load_checkpoint(path)
    cfg, task, obj = ck.config, ck.task, ck.objective
    tr = cfg["train"]
    lines = [f"## `{path.name}`", "",
             f"{task.describe()}, objective **{obj.name}**; {cfg['model']['n_layers']} layers, d_model "
             f"{cfg['model']['d_model']}, {cfg['model']['n_heads']} heads; trained {cfg['step']} steps of "
             f"{tr['batch_size']} fresh graphs, lr {tr['lr']}, warmup {tr['warmup_steps']}, seed {cfg['seed']}, "
             f"on {cfg.get('device', 'cpu')} (torch {cfg['versions'].get('torch')}, transformer-lens "
             f"{cfg['versions'].get('transformer-lens')}).", ""]
    sources = [(f"{n} fresh graphs, seed {seed}", task.generate(n, seed))]
    ntf = NTF / f"deg_{task.degree}_path_{task.path_len}_nodes_{task.n_nodes}_test_20000.txt"
    if ntf.is_file():
        sources.append((f"the paper's test split `{ntf.name}` (20,000 graphs)", read_ntf(ntf, task=task)))
    lines += ["| measured on | exact match | decision acc. (chance) | forced acc. per position | free acc. per position |",
              "|---|---|---|---|---|"]
    ent = {}
    for name, batch in sources:
        b = measure_behaviour(ck.model, obj, batch)
        ent[name] = measure_entropy(ck.model, obj, batch)
        lines.append(f"| {name} | {ci(b.exact_match, b.exact_match_ci)} | {ci(b.decision_accuracy, b.decision_accuracy_ci)} "
                     f"({b.chance:.2f}) | {', '.join(f'{a:.3f}' for a in b.forced_accuracy)} | "
                     f"{', '.join(f'{a:.3f}' for a in b.free_accuracy)} |")
    lines += ["", "First decision token (label index "
              f"{obj.decision_index(task.target_len)}), 95% CIs:", "",
              "| measured on | H over candidates / log d | H full vocab (nats) | mass outside candidates | information over uniform (nats) | indecipherable |",
              "|---|---|---|---|---|---|"]
    for name, e in ent.items():
        lines.append(f"| {name} | {ci(e.candidate_entropy_frac, e.candidate_entropy_frac_ci)} | {ci(e.entropy_nats, e.entropy_nats_ci)} | "
                     f"{ci(e.mass_outside_candidates, e.mass_outside_candidates_ci)} | {ci(e.information_nats, e.information_nats_ci)} | "
                     f"**{'yes' if e.indecipherable else 'no'}** |")
    first = next(iter(ent.values()))
    follows = [f"{k} {v['rate']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]" for k, v in first.preference.items() if v["follows"]]
    lines += ["", f"Verdict ({sources[0][0]}): {first.verdict}."]
    if follows:
        lines.append(f"The top candidate is not uniform over these rules (chance {first.chance:.2f}): {'; '.join(follows)}.")
    if not obj.teacherless:
        h = measure_heads(ck.model, obj, sources[0][1])
        lines += ["", f"Heads ({sources[0][0]}; attention at the shortcut queries, label indices 2..{task.target_len - 1}; "
                  "ablation drop = forced accuracy lost at indices 2..l-2 under mean / zero ablation):", "",
                  "| head | edge lookup (parent + child + separator) | separator | child->parent lookup | single-head drop | Clever-Hans |",
                  "|---|---|---|---|---|---|"]
        for r in h.heads:
            lines.append(f"| L{r['layer']}H{r['head']} | {ci(r['edge_lookup_score'], r['edge_lookup_ci'])} | "
                         f"{r['edge_lookup_components']['separator']:.3f} | {r['child_parent_score']:.3f} | "
                         f"{r['ablation_drop']:+.3f} / {r['ablation_drop_zero']:+.3f} | {'**yes**' if r['clever_hans'] else 'no'} |")
        uni = h.patterns["edge_lookup"]["span"]["uniform"]
        lines += ["", f"A uniform head would put {uni:.3f} on the edge's span. Group and layer ablations (forced accuracy per "
                  "label index, mean ablation):", ""]
        for a in h.ablations:
            if a["kind"] != "head" and a["mode"] == "mean":
                lines.append(f"- {a['label']} {a['heads']}: {', '.join(f'{x:.3f}' for x in a['forced_accuracy'])} "
                             f"(drop at 2..l-2: {a['drop']:+.3f}; zero ablation: "
                             f"{next(z['drop'] for z in h.ablations if z['label'] == a['label'] and z['mode'] == 'zero'):+.3f})")
        f = h.follow
        if f:
            by = ", ".join(f"r{i} {v['rate']:.3f}" for i, v in f["follow_rate_by_position"].items())
            control = ", ".join(f"r{i} {v['true_next']:.3f}" for i, v in f["control"].items())
            lines += ["", f"Counterfactual-prefix follow rate (indices 2..l-2): {ci(f['follow_rate'], f['follow_rate_ci'])}; "
                      f"by index {by} (the last index apart: under forward targets the goal can be copied from the prompt there). Control (a node with no successor "
                      f"swapped in): still answers the true r_i at "
                      f"{control}.", "",
                      f"Verdict: {h.verdict}."]
    if not obj.teacherless:
        lines += ["", "Where the separator's content comes from: attention of each head *at the separator after an edge* "
                  "to that edge's parent and child tokens (mean over edges and graphs):", "",
                  "| head | to the parent | to the child |", "|---|---|---|"]
        for l, hd, par, chi in separator_sources(ck.model, obj, sources[0][1]):
            lines.append(f"| L{l}H{hd} | {par:.3f} | {chi:.3f} |")
    lines += probe_section(ck, task.generate(min(n, 1000), seed))
    lines += patching_section(ck, task.generate(200, seed))
    if (path / "snapshots").is_dir():
        dyn = measure_dynamics(path, task.generate(min(n, 1000), seed))
        order = ", ".join(f"r{p} at step {dyn.learned_at[p]}" if dyn.learned_at[p] is not None else f"r{p} never"
                          for p in dyn.learning_order)
        lines += ["", f"Learning order (first snapshot with forced accuracy >= 0.9, {dyn.n_graphs} graphs; snapshots at "
                  f"{', '.join(map(str, dyn.steps))}): {order}.", "",
                  "| step | " + " | ".join(f"r{p}" for p in range(task.target_len)) + " | H/log d | decision acc. |",
                  "|---|" + "---|" * (task.target_len + 2)]
        for s, row, h, a in zip(dyn.steps, dyn.forced_accuracy, dyn.candidate_entropy_frac, dyn.decision_accuracy):
            lines.append(f"| {s} | " + " | ".join(f"{x:.3f}" for x in row) + f" | {h:.3f} | {a:.3f} |")
    return lines + [""]


def replace_cards(args) -> None:
    """Re-measure some checkpoints and splice their sections into the existing cards file."""
    text = args.out.read_text()
    for name in args.only:
        t = time.perf_counter()
        new = "\n".join(card(ROOT / "checkpoints" / name, args.n_graphs, args.seed))
        head = f"## `{name}`"
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
    args.out.write_text(text)
    print(f"wrote {args.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-graphs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "model-cards.md")
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME",
                    help="re-measure only these checkpoints and replace their sections in --out")
    args = ap.parse_args()
    if args.only:
        return replace_cards(args)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t = time.perf_counter()
    out = ["# Model cards", "",
           "Written by `python analyses/model_cards.py` from the checkpoints in `checkpoints/` (trained by "
           "`analyses/train_reference_checkpoints.py`). Every figure below was measured by hansprobe; "
           "CIs are 95% (Wilson for accuracies, bootstrap for means).", ""]
    for path in sorted(p for p in (ROOT / "checkpoints").iterdir() if (p / "config.json").is_file()):
        out += card(path, args.n_graphs, args.seed)
        print(f"measured {path.name}", flush=True)
    out.append(f"_Measured in {time.perf_counter() - t:.0f} s._")
    args.out.write_text("\n".join(out) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
