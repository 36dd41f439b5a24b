"""What every attack shares: the perturbation interface, ε parsing, and the eval-mode guard."""

import contextlib
import math
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import UserError, shown
from ..schema import parse_number

__all__ = ["Attack", "eval_mode", "parse_eps", "check_budget", "NORMS"]

NORMS = ("linf", "l2")


@runtime_checkable
class Attack(Protocol):
    """An attack maps (model, x in [0,1], y) to adversarial x; it never changes the model's mode for good."""

    name: str

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Return adversarial examples for ``x`` (same shape, in [0,1], inside the threat model)."""
        ...


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Yield the bare model (DDP/compile wrappers removed) in eval mode; restore each module's own mode afterwards.

    Per-module restore (not ``model.train(was_training)``) matters: a frozen backbone kept in eval inside a training
    model, as in linear probing, must come back in eval. Unwrapping DDP matters too: attack passes must not go
    through DDP's gradient-synchronizing forward.
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def parse_eps(value: str | float) -> float:
    """Parse an ε given as a float or a fraction string such as ``8/255``."""
    try:
        eps = float(value) if isinstance(value, (int, float)) else parse_number(value)
    except (ValueError, TypeError) as e:
        raise UserError(f"cannot parse eps {shown(value)}: give a number (0.031) or a fraction (8/255)") from e
    except OverflowError:
        eps = math.inf
    if not math.isfinite(eps) or eps < 0:
        raise UserError(f"eps must be a finite number >= 0, got {shown(value)}")
    return eps


def check_budget(eps: float, norm: str) -> None:
    """Refuse a threat model that cannot be meant: an unknown norm, or an L∞ ε beyond the [0, 1] pixel range."""
    if norm not in NORMS:
        raise UserError(f"unknown norm {norm!r}: use one of {', '.join(NORMS)}")
    if norm == "linf" and eps > 1:
        raise UserError(f"L∞ eps {eps:g} is larger than the whole pixel range [0, 1]: give it in pixel units, e.g. "
                        f"{eps:g}/255")
