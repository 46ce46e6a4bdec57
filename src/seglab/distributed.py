"""torchrun + DistributedDataParallel: process-group set-up, rank, world size, metric all-reduce.

Launch any `seglab train` under `torchrun --nproc_per_node N`; torchrun sets RANK, WORLD_SIZE and LOCAL_RANK,
and seglab uses PyTorch's own engine (NCCL on CUDA, gloo on CPU). Rank 0 alone writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device_kind: str) -> torch.device | None:
    """Join the process group if torchrun started us; returns this rank's CUDA device, if any."""
    if not launched_by_torchrun() or is_distributed():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return None


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (a no-op in one process)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics), so all ranks end with identical state."""
    if is_distributed():
        for b in module.buffers():
            dist.broadcast(b, 0)
