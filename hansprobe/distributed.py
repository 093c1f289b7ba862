"""Data-parallel training with PyTorch's own engine: `torchrun --nproc_per_node K -m hansprobe train
...` starts K processes; each draws its own shard of every step's graphs, DistributedDataParallel
averages the gradients, and only rank 0 writes the run directory. NCCL on GPUs, gloo on CPU.
Nothing here runs in an ordinary single process (WORLD_SIZE unset)."""
from __future__ import annotations

import os

import torch


def world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def start(device: torch.device) -> torch.device:
    """Join the process group when torchrun started us (once); on CUDA each rank takes its local GPU."""
    rank, size, local = world()
    if size == 1:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def barrier() -> None:
    if world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def stop() -> None:
    if world()[1] > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            import gc

            gc.collect()  # DistributedDataParallel's reducer uses the group: free it while the group lives
            dist.destroy_process_group()


def wrap(model):
    """The model wrapped in DistributedDataParallel when there are several ranks, else itself."""
    if world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
