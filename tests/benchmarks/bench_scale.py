"""A GPT-2-small-shaped text-format model (124M parameters: 12 layers, d_model 768, 12 heads, GPT-2's
50,257-token vocabulary; random weights, seeded) through the whole report on CPU: wall time and peak
memory at each -n and --batch-size asked; the same peak at two -n for one --batch-size shows that
memory is bounded by the batch and not by -n.

The model is built with transformers, saved with `save_pretrained` beside a byte-level BPE trained on
the task's text (labels are single tokens, as under GPT-2's own tokenizer; its ids sit inside the
model's vocabulary), imported with `hansprobe import --format hf`, and reported on in a fresh process
whose peak resident memory is read from the OS (getrusage of the child). Every analysis runs through
the hooked bridge (the fused forward knows only hansprobe's own layout).

    python tests/benchmarks/bench_scale.py                       # -n 500 --batch-size 50 (about an hour on 2 threads)
    python tests/benchmarks/bench_scale.py -n 50 500             # the memory bound: the same batch, ten times the graphs
    python tests/benchmarks/bench_scale.py -n 50 --mechanism-graphs 50 --patch-pairs 20 --batch-size 25
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TASK = ["--degree", "2", "--path-len", "5", "--nodes", "50"]


def build(directory: Path, seed: int) -> int:
    """Save the random GPT-2-small-shaped model and its tokenizer; return its parameter count."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the tests' own BPE builder (tests/helpers)
    from helpers.references import path_star_bpe
    from hansprobe.tasks import PathStar

    tok = path_star_bpe(PathStar(2, 5, 50), vocab_size=400)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)).eval()
    model.save_pretrained(directory)
    tok.save(str(directory / "tokenizer.json"))
    return sum(p.numel() for p in model.parameters())


def child_run(cmd: list[str], env: dict, peak_file: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS of the command's own process in GiB, exit code): a fresh interpreter
    runs `hansprobe CMD` (its progress lines pass through to stderr) and writes its getrusage peak."""
    probe = ("import pathlib, resource, runpy, sys\nsys.argv = sys.argv[1:]\n"
             "try:\n    runpy.run_module('hansprobe', run_name='__main__')\n"
             "finally:\n    pathlib.Path(%r).write_text("
             "str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n" % str(peak_file))
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", probe, "hansprobe", *cmd], stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t
    peak = int(peak_file.read_text()) / 2**20 if peak_file.is_file() else float("nan")  # KiB -> GiB
    return wall, peak, res.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, nargs="+", default=[500])
    ap.add_argument("--batch-size", type=int, nargs="+", default=[50])
    ap.add_argument("--mechanism-graphs", type=int, default=None, help="the report's default unless given")
    ap.add_argument("--patch-pairs", type=int, default=None, help="the report's default unless given")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="the report's --device (cpu, cuda); peak memory is the host's")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    extra = [*(["--mechanism-graphs", str(args.mechanism_graphs)] if args.mechanism_graphs else []),
             *(["--patch-pairs", str(args.patch_pairs)] if args.patch_pairs else [])]
    with tempfile.TemporaryDirectory() as tmp:
        src, ckpt = Path(tmp) / "gpt2-small-random", Path(tmp) / "imported"
        n_params = build(src, args.seed)
        wall, peak, rc = child_run(["import", str(src), "--format", "hf", *TASK, "--objective", "teacher-forcing",
                                    "--out", str(ckpt)], env, Path(tmp) / "peak-import")
        if rc:
            sys.exit(f"import failed (exit {rc}; its message is above)")
        print(f"{n_params / 1e6:.1f}M parameters; import {wall:.0f} s, peak {peak:.2f} GiB", flush=True)
        for n in args.n:
            for b in args.batch_size:
                out = Path(tmp) / f"report-n{n}-b{b}"
                wall, peak, rc = child_run(["report", str(ckpt), "-n", str(n), "--batch-size", str(b), *extra,
                                            "--device", args.device, "--out", str(out)], env, Path(tmp) / f"peak-n{n}-b{b}")
                if rc:
                    print(f"report -n {n} --batch-size {b}: failed (exit {rc}; its message is above)", flush=True)
                    continue
                doc = json.loads((out / "report.json").read_text())
                answers = {k: v["answer"] for k, v in doc["checkpoints"][0]["verdicts"].items()}
                print(f"report -n {n} --batch-size {b} {' '.join(extra)} ({args.device}, {args.threads} threads): "
                      f"{wall:.0f} s, peak {peak:.2f} GiB; answers {answers}", flush=True)


if __name__ == "__main__":
    main()
