"""Projected gradient descent (Madry et al. 2018) for L∞ and L2, with CE or TRADES-KL loss, and FGSM as PGD-1.

Everything happens in [0,1] pixel space; the model normalizes internally.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .base import check_budget, eval_mode
from .fold import folded_view

__all__ = ["PGD", "fgsm", "default_step_size"]

LOSSES = ("ce", "kl")


def default_step_size(eps: float, steps: int) -> float:
    """Madry's 2.5·ε/K, floored at ε/4 — gives the field's usual 2/255 for PGD-10 and PGD-20 at ε = 8/255."""
    return max(2.5 * eps / steps, eps / 4)


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample, shaped to broadcast over (N, C, H, W)."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


@dataclass
class PGD:
    """PGD with random start and restarts that keep each sample's worst case.

    ``loss="kl"`` is the TRADES inner maximization: it maximizes KL(p(x) ‖ p(x')) and starts, as TRADES does,
    from x + 0.001·N(0, I) instead of a uniform point of the ball.
    """

    eps: float = 8 / 255
    steps: int = 10
    step_size: float | None = None
    norm: str = "linf"
    restarts: int = 1
    loss: str = "ce"
    random_start: bool = True
    name: str = "pgd"

    def __post_init__(self) -> None:
        self.norm = self.norm.lower()
        check_budget(self.eps, self.norm)
        if self.loss not in LOSSES:
            raise UserError(f"unknown attack loss {self.loss!r}: use one of {', '.join(LOSSES)}")
        if self.steps < 1 or self.restarts < 1:
            raise UserError(f"attack steps and restarts must be >= 1 (got {self.steps}, {self.restarts})")
        if self.step_size is None:
            self.step_size = default_step_size(self.eps, self.steps)

    def _init_delta(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Starting perturbation: zero, TRADES' small Gaussian, or uniform in the ε-ball."""
        if not self.random_start:
            return torch.zeros_like(x)
        # empty_like(...).uniform_/normal_ keep x's memory format (channels_last stays channels_last)
        if self.loss == "kl":
            delta = 0.001 * torch.empty_like(x).normal_(generator=generator)
        elif self.norm == "linf":
            delta = torch.empty_like(x).uniform_(-self.eps, self.eps, generator=generator)
        else:  # uniform in the L2 ball: Gaussian direction, radius eps·U^(1/d)
            direction = torch.empty_like(x).normal_(generator=generator)
            u = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).uniform_(generator=generator)
            delta = direction / _per_sample_norm(direction) * self.eps * u ** (1.0 / x[0].numel())
        return self._project(x, delta)

    def _project(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Project onto the ε-ball, then onto [0,1] (clamping only shrinks |δ|, so the ball still holds)."""
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            delta = delta * (self.eps / _per_sample_norm(delta)).clamp(max=1.0)
        return (x + delta).clamp(0, 1) - x

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per-sample attack objective (to be maximized)."""
        if self.loss == "ce":
            return F.cross_entropy(logits.float(), y, reduction="none")
        return F.kl_div(F.log_softmax(logits.float(), 1), target, reduction="none").sum(1)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        """One PGD run from one starting point; returns the last iterate's perturbation."""
        delta = self._init_delta(x, generator)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            loss = self._loss(model(x + delta), y, target).sum()
            (grad,) = torch.autograd.grad(loss, delta)  # grads for δ only: no parameter .grad is touched
            with torch.no_grad():
                step = grad.sign() if self.norm == "linf" else grad / _per_sample_norm(grad)
                delta = self._project(x, delta + self.step_size * step)
        return delta.detach()

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Adversarial examples for ``x``; with restarts, each sample keeps its most damaging run."""
        with eval_mode(model) as model:
            model = folded_view(model)  # same function in eval mode, BN folded into convs: faster passes
            target = None
            if self.loss == "kl":
                with torch.no_grad():
                    target = F.softmax(model(x).float(), 1)
            delta = self._run(model, x, y, target, generator)
            if self.restarts == 1:
                return x + delta
            with torch.no_grad():
                best_loss, best_fooled = self._score(model, x + delta, y, target)
            for _ in range(self.restarts - 1):
                cand = self._run(model, x, y, target, generator)
                with torch.no_grad():
                    loss, fooled = self._score(model, x + cand, y, target)
                    # a fooled sample stays fooled; an unfooled one takes a run that fools it or has higher loss
                    better = ~best_fooled & (fooled | (loss > best_loss))
                    delta = torch.where(better.view(-1, *([1] * (x.dim() - 1))), cand, delta)
                    best_loss = torch.where(better, loss, best_loss)
                    best_fooled |= fooled
            return x + delta

    def _score(self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor,
               target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (loss, misclassified) of a candidate."""
        logits = model(x_adv)
        return self._loss(logits, y, target), logits.argmax(1) != y


def fgsm(eps: float = 8 / 255, norm: str = "linf") -> PGD:
    """FGSM (Goodfellow et al. 2015): one full-ε gradient-sign step from the clean point."""
    return PGD(eps=eps, steps=1, step_size=eps, norm=norm, random_start=False, name="fgsm")
