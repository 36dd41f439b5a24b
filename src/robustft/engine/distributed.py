"""torch.distributed set-up for torchrun: one code path for 1 or N processes (NCCL on GPU, gloo on CPU)."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from ..runtime import resolve_device

__all__ = ["DistInfo", "init_distributed", "all_reduce_sum", "barrier", "cleanup"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def launched(self) -> bool:
        """Whether this process is in a torch.distributed process group (torchrun): its model trains wrapped in DDP."""
        return torch_dist.is_available() and torch_dist.is_initialized()

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints."""
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (any number of processes, one included); otherwise a single
    process without one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if "LOCAL_RANK" not in os.environ:  # torchrun sets it (with RANK, WORLD_SIZE, MASTER_ADDR/PORT)
        return DistInfo(0, 1, resolved)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, resolved)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (identity for one process)."""
    if info.world_size > 1:
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    """Wait for every rank."""
    if info.world_size > 1:
        torch_dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Leave the process group."""
    if info.launched:
        torch_dist.destroy_process_group()
