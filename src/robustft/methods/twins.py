"""TWINS (Liu et al., CVPR 2023): two networks sharing every weight except batch norm.

Each BN layer becomes a ``TwoWingBatchNorm2d``: a *frozen* wing that always normalizes with the pre-trained running
statistics (never updated) but has its own trainable affine, and an *adaptive* wing, an ordinary BN. A training step
attacks the whole batch against the adaptive wing (eval mode), then sends the first half through the frozen wing and
the second through the adaptive wing in one forward: loss = λ·L(frozen half) + L(adaptive half). Inference and export
use the adaptive wing only.

Beyond the official code: any BN model (not only ResNet-50); odd and short batches (the frozen half is ⌊B/2⌋); DDP
(each rank splits its own batch; the official layer breaks under DataParallel); TWINS-TRADES attacks with the TRADES
KL loss unless ``ce_attack`` reproduces the official CE attack.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import Method, RunContext, TradesConfig, register_method

__all__ = ["TwoWingBatchNorm2d", "Twins", "TwinsConfig", "to_two_wing", "to_plain_bn", "frozen_split"]


class TwoWingBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d (the adaptive wing, same parameter and buffer names) plus a frozen wing.

    ``frozen_rows`` (set by ``frozen_split``) routes the first rows of the batch through the frozen wing; otherwise the
    layer is the adaptive BN. Being a BatchNorm2d subclass, its eval mode is exactly the adaptive wing's.
    """

    frozen_rows: int | None = None

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d) -> "TwoWingBatchNorm2d":
        """Both wings start from the pre-trained layer: affine copied to both, statistics frozen in one."""
        layer = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, device=bn.weight.device,
                    dtype=bn.weight.dtype)
        layer.load_state_dict(bn.state_dict())
        layer.frozen_weight = nn.Parameter(bn.weight.detach().clone())
        layer.frozen_bias = nn.Parameter(bn.bias.detach().clone())
        layer.register_buffer("frozen_mean", bn.running_mean.detach().clone())
        layer.register_buffer("frozen_var", bn.running_var.detach().clone())
        return layer.train(bn.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen wing on rows [:frozen_rows] (pre-trained statistics, always), adaptive wing on the rest."""
        k = self.frozen_rows
        if k is None:
            return super().forward(x)
        frozen = F.batch_norm(x[:k], self.frozen_mean, self.frozen_var, self.frozen_weight, self.frozen_bias,
                              training=False, momentum=0.0, eps=self.eps)
        return torch.cat([frozen, super().forward(x[k:])])


def _replace(model: nn.Module, convert: type, factory) -> nn.Module:
    """Replace every submodule of exactly type ``convert`` by ``factory(module)`` (in place; returns the model)."""
    for name, child in list(model.named_children()):
        if type(child) is convert:
            setattr(model, name, factory(child))
        else:
            _replace(child, convert, factory)
    return model


def to_two_wing(model: nn.Module) -> nn.Module:
    """Convert every BatchNorm2d (stem, blocks, downsample) to a two-wing layer."""
    return _replace(model, nn.BatchNorm2d, TwoWingBatchNorm2d.from_bn)


def _plain(layer: TwoWingBatchNorm2d) -> nn.BatchNorm2d:
    """The adaptive wing as an ordinary BatchNorm2d."""
    bn = nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum, device=layer.weight.device,
                        dtype=layer.weight.dtype)
    bn.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("frozen_")})
    return bn.train(layer.training)


def to_plain_bn(model: nn.Module) -> nn.Module:
    """Drop the frozen wings: a plain network that loads without robustft."""
    return _replace(model, TwoWingBatchNorm2d, _plain)


@contextlib.contextmanager
def frozen_split(model: nn.Module, rows: int) -> Iterator[None]:
    """Within the block, every two-wing layer sends the first ``rows`` samples through its frozen wing."""
    layers = [m for m in model.modules() if isinstance(m, TwoWingBatchNorm2d)]
    for m in layers:
        m.frozen_rows = rows
    try:
        yield
    finally:
        for m in layers:
            m.frozen_rows = None


@dataclass
class TwinsConfig(TradesConfig):
    """TWINS options: the adversarial objective, the frozen wing's loss weight and (inherited) the official
    TWINS-TRADES attack switch ``ce_attack``."""

    objective: Literal["pgd", "trades"] = field(default="pgd", metadata={
        "help": "training loss: pgd (TWINS-AT) or trades (TWINS-TRADES); TWINS is adversarial, so not clean"})

    lam: float = field(default=1.0, metadata={"help": "λ, weight of the frozen wing's loss (paper: 1.0 CIFAR, 0.4 "
                                                      "Caltech-256)", "ge": 0})


class Twins(Method):
    """TWINS-AT (objective pgd) and TWINS-TRADES (objective trades)."""

    config_cls = TwinsConfig

    def prepare(self, model: nn.Module) -> nn.Module:
        """Two wings for every BN layer; everything trains (the frozen wing's statistics are buffers)."""
        return super().prepare(to_two_wing(model))

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Attack against the adaptive wing, then λ·L(frozen half) + L(adaptive half) in one split forward."""
        x_adv = self.attack.perturb(model, x, y, generator=generator)
        k = len(y) // 2
        with frozen_split(model, k):
            logits_adv = model(x_adv)
            if self.cfg.objective == "trades":
                logits = model(x)
        if self.cfg.objective == "trades":
            # per wing: CE(clean) + β·KL(clean ‖ adv), the KL summed over the wing and divided by the whole batch
            # size, as in the official train-TWINS-TRADES.py
            kl = F.kl_div(F.log_softmax(logits_adv.float(), 1), F.softmax(logits.float(), 1), reduction="none").sum(1)
            per_wing = [F.cross_entropy(logits[s], y[s]) + self.cfg.beta * kl[s].sum() / len(y)
                        for s in (slice(0, k), slice(k, None))]
        else:
            per_wing = [F.cross_entropy(logits_adv[s], y[s]) for s in (slice(0, k), slice(k, None))]
        frozen = per_wing[0] if k else torch.zeros((), device=x.device)  # a 1-sample batch has no frozen half
        loss = self.cfg.lam * frozen + per_wing[1]
        correct = (logits_adv.argmax(1) == y).float()
        return loss, {"loss": loss.detach(), "adv_acc": correct.mean()}

    def finalize(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        """The adaptive wing alone, as ordinary BN layers."""
        return to_plain_bn(model)


register_method("twins", Twins, objective="pgd")
register_method("twins_trades", Twins, objective="trades")
