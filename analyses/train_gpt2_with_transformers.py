"""A model trained *elsewhere*: a Hugging Face GPT-2 trained with plain `transformers` + torch on
path-star lines in the NTF text format, saved with `save_pretrained`. hansprobe's only part is
writing the training text (any NTF file works, e.g. one made by the paper's own code); the model,
tokenisation and training loop below never touch hansprobe. Then import and report it:

    python analyses/train_gpt2_with_transformers.py --out /tmp/gpt2-tf          # ~25 min on one CPU core
    hansprobe import /tmp/gpt2-tf --format hf-gpt2 --degree 2 --path-len 5 --nodes 50 \\
        --objective teacher-forcing --out /tmp/gpt2-tf-imported
    hansprobe report /tmp/gpt2-tf-imported --out /tmp/gpt2-report

docs/interop.md gives what this run reached and what the report said.
"""
import argparse
import math
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel


def tokenize(line: str, n_nodes: int) -> list[int]:
    """The NTF numeral tokenizer's ids: nodes 0..N-1, '|' N, '=' N+1, '/' N+2, '$' N+3; commas dropped."""
    special = {"|": n_nodes, "=": n_nodes + 1, "/": n_nodes + 2, "$": n_nodes + 3}
    return [int(t) if t.isdigit() else special[t] for t in re.findall(r"\d+|[|=/$]", line)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="directory for save_pretrained")
    ap.add_argument("--data", type=Path, default=None, help="NTF training lines (default: write 600,000 with seed 7)")
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.data is None:  # the only use of hansprobe: write training text in the NTF format
        from hansprobe.tasks import PathStar, write_ntf

        args.data = args.out.parent / f"{args.out.name}-train.txt"
        write_ntf(args.data, PathStar(2, 5, args.nodes).generate(600_000, seed=7))
    lines = [l.strip() for l in args.data.read_text().splitlines() if l.strip()]
    seqs = torch.tensor([tokenize(l, args.nodes) for l in lines])  # (n, P + l), all the same length
    prefix_len = tokenize(lines[0].split("=")[0] + "=", args.nodes).__len__()
    print(f"{len(seqs)} lines, sequence length {seqs.shape[1]}, prefix {prefix_len}")

    cfg = GPT2Config(vocab_size=args.nodes + 4, n_positions=seqs.shape[1], n_embd=128, n_layer=2, n_head=4,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    model = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))))
    gen = torch.Generator().manual_seed(args.seed)
    t = time.perf_counter()
    model.train()
    for step in range(1, args.steps + 1):
        batch = seqs[torch.randint(0, len(seqs), (args.batch_size,), generator=gen)]
        logits = model(input_ids=batch[:, :-1]).logits  # teacher forcing: the true answer as input
        loss = F.cross_entropy(logits[:, prefix_len - 1:].reshape(-1, cfg.vocab_size), batch[:, prefix_len:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps:
            print(f"step {step}: loss {loss.item():.4f} ({time.perf_counter() - t:.0f} s)", flush=True)
    model.eval()
    model.save_pretrained(args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
