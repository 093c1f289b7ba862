"""Models trained *elsewhere* on the task as text: a Llama under teacher forcing at G(2,5) (the
failure: r2 can only be read off r1) and a 4-layer GPT-NeoX under teacher forcing at G(2,3) (r1 is the
goal's parent, so it decides from the goal; at 2 layers no seed tried learned it: docs/controls.md), each trained with plain `transformers` + torch on
Next-Token-Failures text lines (`u,v|...|u,v/s,g=s,n1,...,g`) through a byte-level BPE tokenizer
trained here (the `tokenizers` package), and saved with `save_pretrained` beside the tokenizer.
hansprobe's only parts are writing the training lines; the tokenizer, the models and the training
loop never touch it. Then each is imported with `hansprobe import --format hf` into
checkpoints/controls/ (the verdict matrix's text-format failure and planner):

    python analyses/train_text_format_controls.py --work runs/text-controls   # every entry of CONTROLS; ~2 h on one core
    python analyses/train_text_format_controls.py --work runs/text-controls --only neox-l3-teacher-forcing --seed 1
    python analyses/train_text_format_controls.py --work runs/text-controls --only llama-l5-untrained   # no step: the null

The answer is scored as Next-Token-Failures' finetune.py scores it: cross-entropy on every target
token, the commas between answer nodes included; reverse reverses the target's node order;
decision-only scores the start and r1 alone (hansprobe's objective of that name).
"""
import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

DEGREE = 2
# name: (architecture, objective the target is written for, path length, nodes, steps, layers). The failure is
# at G(2,5) as the integer references: at l = 4 the only inner answer node r2 is also the goal's
# parent, and a text model trained there read r2 off the goal, not off r1 (follow rate 0.00), so l = 4
# cannot show the lookup (docs/controls.md). 20 nodes, not 50: a Llama at G(2,5) on 50 nodes learned
# nothing beyond the copies in 3,000 steps, where on 20 nodes it had found a rule by 1,500.
CONTROLS = {
    "llama-l5-teacher-forcing": ("llama", "teacher-forcing", 5, 20, 6000, 2),  # shipped: the text-format failure
    "neox-l3-teacher-forcing": ("neox", "teacher-forcing", 3, 20, 3000, 2),  # seeds 0-5 not learned (docs/controls.md)
    "llama-l3-teacher-forcing": ("llama", "teacher-forcing", 3, 20, 3000, 2),  # learned r1 by step 750; not shipped
    "neox-l3-decision-only": ("neox", "decision-only", 3, 20, 3000, 2),  # r1 at chance to step 2,250; not shipped
    "neox-l3-teacher-forcing-4layers": ("neox", "teacher-forcing", 3, 20, 1500, 4),  # shipped: the text-format planner
    # shipped: the failure's Llama at its initialisation (seed 0), no step taken: a text model that
    # ignores the goal and has no lookup, the null the text-format answers are calibrated on
    "llama-l5-untrained": ("llama", "teacher-forcing", 5, 20, 0, 2),
}

DECISION_ONLY = [0, 2]  # the target's tokens s , r1 , ...: the start and the decision


def lines_of(n: int, seed: int, path_len: int, nodes: int) -> list[str]:
    """n fresh graphs as NTF text (the only use of hansprobe before the import)."""
    from hansprobe.tasks import PathStar
    from hansprobe.tasks.ntf_format import format_ntf_lines

    return format_ntf_lines(PathStar(DEGREE, path_len, nodes).generate(n, seed=seed))


def train_tokenizer(path_len: int, nodes: int, seed: int = 1):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines_of(5000, seed, path_len, nodes), trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return tok


def new_model(kind: str, vocab: int, layers: int = 2):
    from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig

    shape = dict(vocab_size=vocab, hidden_size=128, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=512,
                 max_position_embeddings=64)  # the text of G(2,5) is 45 tokens
    # GPT-NeoX rotates every dim of each head here (Pythia rotates a quarter): the text lookup reads
    # "the token two before", a relative position the rotary dims carry.
    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0}
    cfg = GPTNeoXConfig(**shape, rope_parameters=rope) if kind == "neox" else LlamaConfig(**shape)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")


def encode(tok, lines: list[str], reverse: bool) -> tuple[torch.Tensor, int]:
    """(ids (B, T), prefix length): prompt `...=` then the target, reversed node by node for reverse."""
    if reverse:
        lines = [p + "=" + ",".join(t.split(",")[::-1]) for p, t in (line.split("=") for line in lines)]
    ids = [e.ids for e in tok.encode_batch(lines)]
    prefix = len(tok.encode(lines[0].split("=")[0] + "=").ids)
    assert len({len(i) for i in ids}) == 1, "every line must be as long in tokens (labels whole)"
    return torch.tensor(ids), prefix


def train(name: str, work: Path, steps: int | None, batch: int, lr: float, seed: int) -> Path:
    kind, objective, path_len, nodes, default_steps, layers = CONTROLS[name]
    steps = default_steps if steps is None else steps
    tok = train_tokenizer(path_len, nodes)
    torch.manual_seed(seed)
    model = new_model(kind, tok.get_vocab_size(), layers).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / max(steps, 1))))))
    held, p = encode(tok, lines_of(500, 10_000, path_len, nodes), objective == "reverse")
    print(f"{name}: {steps} steps of G({DEGREE},{path_len}) on {nodes} nodes as text ({held.shape[1]} tokens), "
          f"{kind}, {objective}; a line every 250 steps", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    for step in range(steps):
        x, p = encode(tok, lines_of(batch, seed * 1_000_003 + step, path_len, nodes), objective == "reverse")
        logits = model(x[:, :-1]).logits[:, p - 1:]  # (B, target, V): every target token, commas included
        want = x[:, p:]
        if objective == "decision-only":  # hansprobe's decision-only: the start and r1 alone, no lookup to learn
            logits, want = logits[:, DECISION_ONLY], want[:, DECISION_ONLY]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), want.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            model.eval()
            with torch.no_grad():
                pred = model(held[:, :-1]).logits[:, p - 1:].argmax(-1)
            model.train()
            ok = (pred == held[:, p:]).float().mean(0)[0::2]  # forced accuracy of each answer node
            print(f"{name}: step {step + 1}/{steps} loss {loss.item():.4f} forced accuracy by answer node "
                  f"{', '.join(f'{a:.2f}' for a in ok.tolist())} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    out = work / name
    model.eval().save_pretrained(out)
    tok.save(str(out / "tokenizer.json"))
    (out / "training.json").write_text(json.dumps({"steps": steps, "batch_size": batch, "lr": lr, "seed": seed,
                                                   "objective": objective, "train_s": round(time.perf_counter() - t0)}))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="directory for the save_pretrained models")
    ap.add_argument("--only", choices=sorted(CONTROLS), default=None)
    ap.add_argument("--steps", type=int, default=None, help="default: each control's own (CONTROLS)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoints", type=Path, default=Path(__file__).resolve().parents[1] / "checkpoints" / "controls")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in [args.only] if args.only else CONTROLS:
        src = train(name, args.work, args.steps, args.batch_size, args.lr, args.seed)
        arch, objective, path_len, nodes, default_steps, layers = CONTROLS[name]
        dest = args.checkpoints / (f"text-pathstar-d{DEGREE}-l{path_len}-n{nodes}-{arch}-"
                                   + ("untrained" if default_steps == 0 else objective)
                                   + (f"-{layers}layers" if layers != 2 else ""))
        cmd = [sys.executable, "-m", "hansprobe", "import", str(src), "--format", "hf", "--degree", str(DEGREE),
               "--path-len", str(path_len), "--nodes", str(nodes), "--objective", objective, "--out", str(dest),
               "--overwrite"]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
