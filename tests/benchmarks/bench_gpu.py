"""Training throughput on a GPU: tokens/s and model FLOP utilisation (MFU) of the trainer's own step
(bf16 autocast) against the device's peak. Skipped, with a message, where CUDA is not available.

    python tests/benchmarks/bench_gpu.py [--steps 50] [--batch-size 1024] [--d-model 256 --n-layers 6]

MFU counts 6 x parameters FLOPs per token for the matrices plus 12 x layers x context x d_model for
attention (forward and backward, as in the PaLM appendix), over the dense bf16 peak of the device
(PEAKS below; an unknown device prints tokens/s only).
"""
import argparse
import sys
import time

import torch

PEAKS = {  # dense bf16 TFLOP/s from the vendors' data sheets (no sparsity)
    "H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0, "RTX 4090": 165.0,
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-layers", type=int, default=6)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: skipped, CUDA is not available on this machine")
        return 0
    from hansprobe.fused import training_view
    from hansprobe.model import ModelConfig, build_model
    from hansprobe.objectives import get_objective
    from hansprobe.tasks import PathStar
    from hansprobe.train import TrainConfig, make_optimizer, train_step

    device = torch.device("cuda")
    task, objective = PathStar(2, 5, 50), get_objective("teacher-forcing")
    cfg = ModelConfig(n_layers=args.n_layers, d_model=args.d_model, n_heads=max(1, args.d_model // 64))
    model = build_model(cfg, task.d_vocab, task.n_ctx, 0, device)
    net = training_view(model)  # what the trainer steps (hansprobe/fused.py)
    opt = make_optimizer(model, TrainConfig())
    batches = [task.generate(args.batch_size, i).to(device) for i in range(args.steps + 5)]
    net.train()
    for b in batches[:5]:
        train_step(net, opt, objective, b, 1e-3, 1.0)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for b in batches[5:]:
        train_step(net, opt, objective, b, 1e-3, 1.0)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    tokens = args.steps * args.batch_size * task.n_ctx
    params = sum(p.numel() for p in model.parameters())
    flops_per_token = 6 * params + 12 * cfg.n_layers * task.n_ctx * cfg.d_model
    achieved = tokens * flops_per_token / seconds / 1e12
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAKS.items() if k in name), None)
    print(f"{name}: {cfg.n_layers} layers, d_model {cfg.d_model}, batch {args.batch_size} x {task.n_ctx} tokens, bf16 autocast")
    print(f"  {args.steps / seconds:.1f} steps/s, {tokens / seconds:,.0f} tokens/s, {achieved:.2f} TFLOP/s achieved"
          + (f", MFU {achieved / peak:.1%} of {peak:.0f} TFLOP/s" if peak else " (peak of this device unknown)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
