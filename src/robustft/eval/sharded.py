"""AutoAttack over torch.distributed ranks: each rank attacks an interleaved share of the batches, and the per-sample
flags are summed over ranks, so every rank holds the result one process gives (``torchrun ... evaluate``).

Why it is the same result: AutoAttack seeds itself at every call (``AutoAttack.seed``, reset by pyautoattack for each
attack and batch), and ``evaluate`` calls it once per batch on that batch's clean-correct images. A rank that runs
whole batches of the one-process batching (batch ``b`` on rank ``b mod N``) therefore gives every image the same
random draws and the same adversarial example as one process does. PGD draws its starts from one generator that runs
through the batches in order, so a PGD evaluation is not sharded (it is cheap next to AutoAttack).
"""

import torch
import torch.distributed as dist
from torch import nn

from ..attacks import Attack, AutoAttack
from ..data import ArrayDataset
from .evaluate import EvalResult, evaluate

__all__ = ["evaluate_sharded", "world"]


def world() -> tuple[int, int]:
    """(rank, number of ranks) of the torch.distributed job; (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def evaluate_sharded(model: nn.Module, data: ArrayDataset, attacks: list[Attack], *, batch_size: int = 256,
                     seed: int = 0, channels_last: bool = False, progress: bool = True) -> EvalResult:
    """``evaluate`` with the batches split over the ranks (interleaved) and the per-sample flags gathered: every rank
    returns the whole result, identical to one process's. Outside a distributed job it is ``evaluate``."""
    rank, size = world()
    if size == 1:
        return evaluate(model, data, attacks, batch_size=batch_size, seed=seed, channels_last=channels_last,
                        progress=progress)
    others = [a.name for a in attacks if not isinstance(a, AutoAttack)]
    if others:
        raise ValueError(f"a sharded evaluation runs only attacks that seed every call (AutoAttack), not {others}")
    device = data.y.device
    starts = torch.arange(rank * batch_size, len(data), size * batch_size, device=device)
    mine = (starts[:, None] + torch.arange(batch_size, device=device)).flatten()
    mine = mine[mine < len(data)]  # this rank's batches, each as the one-process batching cuts it
    shard = evaluate(model, data.subset(mine), attacks, batch_size=batch_size, seed=seed,
                     channels_last=channels_last, progress=progress)
    keys = list(shard.correct)
    flags = torch.zeros(len(keys), len(data), dtype=torch.int32, device=device)
    flags[:, mine] = torch.stack([shard.correct[k].to(device, torch.int32) for k in keys]) if len(mine) else 0
    dist.all_reduce(flags)  # each image is on exactly one rank
    seconds = torch.tensor([shard.timing[k] for k in shard.timing], dtype=torch.float64, device=device)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)  # the job's time is its slowest rank's
    correct = {k: flags[i].bool().cpu() for i, k in enumerate(keys)}
    acc = {k: v.float().mean().item() if len(data) else float("nan") for k, v in correct.items()}
    names = [a.name for a in attacks]
    return EvalResult(n=len(data), clean_acc=acc["clean"], robust_acc={k: acc[k] for k in names},
                      worst_case_acc=acc["worst_case"], timing=dict(zip(shard.timing, seconds.tolist(), strict=True)),
                      attacks=shard.attacks, correct=correct)
