"""Optimizers and per-iteration learning-rate schedules."""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import nn

from ..errors import UserError

__all__ = ["OptimConfig", "build_optimizer", "build_scheduler", "lr_factor", "resolve_lr"]


@dataclass
class OptimConfig:
    """Optimizer and schedule; epochs-valued fields may be fractional (schedules are stepped every iteration)."""

    name: Literal["sgd", "adamw"] = field(default="sgd", metadata={"help": "optimizer (never a silent fallback)"})
    lr: float = field(default=0.01, metadata={"help": "peak learning rate", "gt": 0})
    lr_scale_batch: int | None = field(default=None, metadata={
        "help": "the batch size lr is given for: the optimizer uses lr × data.batch_size / lr_scale_batch (linear "
                "scaling, as RoLI's official BASE_LR / 256 * BATCH_SIZE; null: lr as it is)", "ge": 1})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum", "ge": 0, "lt": 1})
    nesterov: bool = field(default=False, metadata={"help": "SGD Nesterov momentum"})
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "AdamW betas", "ge": 0, "lt": 1})
    weight_decay: float = field(default=5e-4, metadata={"help": "decoupled for AdamW, L2 for SGD", "ge": 0})
    no_decay_norm_bias: bool = field(default=False, metadata={"help": "no weight decay on norm layers and biases"})
    schedule: Literal["constant", "multistep", "cosine", "onecycle"] = field(default="multistep", metadata={
        "help": "learning-rate schedule (stepped every iteration, after the warm-up)"})
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75],
                                    metadata={"help": "multistep: epochs, or fractions of training if all <= 1",
                                              "ge": 0})
    gamma: float = field(default=0.1, metadata={"help": "multistep decay factor", "gt": 0, "le": 1})
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear warm-up length in epochs", "ge": 0})
    warmup_start: float = field(default=0.1, metadata={"help": "warm-up starts at lr*warmup_start (never at 0)",
                                                       "gt": 0, "le": 1})
    onecycle_peak: float = field(default=0.3, metadata={"help": "onecycle: fraction of training at the peak",
                                                        "gt": 0, "lt": 1})


def _param_groups(params: Iterable[tuple[str, nn.Parameter]], model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """One group, or two when norm-layer weights and biases are excluded from weight decay."""
    params = [(n, p) for n, p in params if p.requires_grad]
    if not params:
        raise UserError("no trainable parameters: the method froze everything")
    if not cfg.no_decay_norm_bias:
        return [{"params": [p for _, p in params], "weight_decay": cfg.weight_decay}]
    # found by module type, not by name: any parameter of a normalization layer, and every bias
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    no_decay = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters(recurse=False)}
    no_decay |= {id(p) for n, p in params if n.endswith("bias")}
    return [{"params": [p for _, p in params if id(p) not in no_decay], "weight_decay": cfg.weight_decay},
            {"params": [p for _, p in params if id(p) in no_decay], "weight_decay": 0.0}]


def resolve_lr(cfg: OptimConfig, batch_size: int) -> OptimConfig:
    """The config with ``lr`` the effective rate for ``batch_size`` (``lr_scale_batch`` applied, then cleared)."""
    if cfg.lr_scale_batch is None:
        return cfg
    return replace(cfg, lr=cfg.lr * batch_size / cfg.lr_scale_batch, lr_scale_batch=None)


def build_optimizer(model: nn.Module, params: Iterable[tuple[str, nn.Parameter]],
                    cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over the given named parameters (no silent fallback to another optimizer).

    ``cfg.lr`` is used as it is: a config whose lr is still given for another batch size is refused, so the scaling
    rule cannot be skipped silently (``resolve_lr`` first, as the engine's stage config does)."""
    if cfg.lr_scale_batch is not None:
        raise ValueError("optim.lr_scale_batch is set: build the optimizer from resolve_lr(cfg, batch_size)")
    groups = [g for g in _param_groups(params, model, cfg) if g["params"]]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def lr_factor(cfg: OptimConfig, epochs: float) -> Callable[[float], float]:
    """The multiplier of the peak lr as a function of (fractional) epoch."""
    milestones = [m * epochs if all(v <= 1 for v in cfg.milestones) else m for m in cfg.milestones]
    warm = cfg.warmup_epochs

    def factor(t: float) -> float:
        if t < warm:  # linear warm-up from warmup_start (never 0) to 1
            return cfg.warmup_start + (1 - cfg.warmup_start) * t / warm
        if cfg.schedule == "multistep":
            return cfg.gamma ** sum(t >= m for m in milestones)
        progress = min(max((t - warm) / max(epochs - warm, 1e-12), 0.0), 1.0)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.schedule == "onecycle":  # linear up from 1/25 to the peak, then linear down to 0
            p = cfg.onecycle_peak
            return 0.04 + 0.96 * progress / p if progress < p else (1 - progress) / (1 - p)
        return 1.0

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: float,
                    iters_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per iteration."""
    factor = lr_factor(cfg, epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: factor(it / iters_per_epoch))
