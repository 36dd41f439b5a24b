"""Partial fine-tuning: only parameters whose names match glob patterns train."""

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from torch import nn

from ..errors import UserError
from .base import Method, ObjectiveConfig, register_method

__all__ = ["Partial", "PartialConfig", "freeze_idle_norm_stats"]


@dataclass
class PartialConfig(ObjectiveConfig):
    """Which parameters train (glob patterns over ``named_parameters`` names) and whether frozen BN layers adapt."""

    patterns: list[str] = field(default_factory=lambda: ["fc.*"],
                                metadata={"help": "glob patterns, e.g. ['layer4.*', 'fc.*']"})
    frozen_bn_stats: bool = field(default=True, metadata={
        "help": "BN layers without trainable parameters keep their running statistics (eval mode)"})


def freeze_idle_norm_stats(model: nn.Module) -> None:
    """Put every BN layer none of whose own parameters train into eval mode, so its statistics do not drift."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters(False)):
            m.eval()


class Partial(Method):
    """Full-model forward, updates restricted to the matched parameters."""

    config_cls = PartialConfig

    def prepare(self, model: nn.Module) -> nn.Module:
        """Freeze every parameter not matched by a pattern; a pattern that matches nothing is an error."""
        names = [n for n, _ in model.named_parameters()]
        for pattern in self.cfg.patterns:
            if not any(fnmatchcase(n, pattern) for n in names):
                raise UserError(f"partial fine-tuning pattern {pattern!r} matches no parameter "
                                f"(examples of names: {', '.join(names[:4])}, ...)")
        for n, p in model.named_parameters():
            p.requires_grad_(any(fnmatchcase(n, pat) for pat in self.cfg.patterns))
        return model

    def train_mode(self, model: nn.Module) -> None:
        """Train mode, with idle BN layers frozen unless asked otherwise."""
        model.train()
        if self.cfg.frozen_bn_stats:
            freeze_idle_norm_stats(model)


register_method("partial", Partial, objective="pgd")
