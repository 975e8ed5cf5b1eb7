"""Process-group helpers: torchrun's environment in, rank-aware helpers out.

Launch with `torchrun --nproc_per_node=N script.py ...`; a plain `python script.py`
is a world of one and every helper degrades to a no-op.
"""
from __future__ import annotations

import datetime
import gc
import os

import torch
import torch.distributed as dist


def init_distributed(device: torch.device | None = None) -> bool:
    """Join the process group described by torchrun's environment variables.

    Uses NCCL for CUDA devices and gloo otherwise. Returns True when running
    distributed. Safe to call twice.
    """
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    if device is not None and device.type == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return True


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Global rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    """Rank on this node, from torchrun's LOCAL_RANK (0 when absent)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 is the only process that writes files."""
    return rank() == 0


def print0(*args, **kwargs) -> None:
    """print() on rank 0 only."""
    if is_main_process():
        print(*args, **kwargs, flush=True)


def barrier() -> None:
    """Synchronise all ranks (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` (same shape on every rank) from all ranks along dim 0, in rank order."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(module, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def cleanup() -> None:
    """Leave the process group if one was joined.

    DDP wrappers hold the group through reference cycles; one that is still alive when the
    interpreter exits can abort the process ("terminate called without an active exception",
    exit -6, about one gloo run in five on 2 cores). Collecting the wrappers that nothing
    references any more (train.py drops its own, Nets.release_wrappers) before destroying the
    group avoids that.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
