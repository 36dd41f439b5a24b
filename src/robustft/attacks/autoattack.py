"""AutoAttack (Croce & Hein 2020) through the official ``pyautoattack`` package."""

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..progress import track
from .base import NORMS, eval_mode
from .fold import folded_view

__all__ = ["AutoAttack", "AA_VERSIONS", "AA_ATTACKS"]

AA_VERSIONS = ("standard", "plus", "rand", "custom")
AA_ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
_AA_NORM = {"linf": "Linf", "l2": "L2"}


class _ContiguousInput(nn.Module):
    """Feeds the model NCHW-contiguous input: pyautoattack's gradient checks fail on channels_last tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the wrapped model."""
        return self.model(x.contiguous())


@dataclass
class AutoAttack:
    """The AutoAttack ensemble: ``standard`` (APGD-CE, APGD-T, FAB-T, Square), ``plus``, ``rand``, or a custom list."""

    eps: float = 8 / 255
    norm: str = "linf"
    version: str = "standard"
    attacks: list[str] = field(default_factory=list)
    seed: int = 0
    batch_size: int = 500
    name: str = "autoattack"

    def __post_init__(self) -> None:
        self.norm = self.norm.lower()
        if self.norm not in NORMS:
            raise UserError(f"unknown norm {self.norm!r}: use one of {', '.join(NORMS)}")
        if self.version not in AA_VERSIONS:
            raise UserError(f"unknown AutoAttack version {self.version!r}: use one of {', '.join(AA_VERSIONS)}")
        if self.attacks and self.version != "custom":
            raise UserError(f"an AutoAttack attack list needs version 'custom' (got version {self.version!r})")
        if self.version == "custom" and not self.attacks:
            raise UserError(f"AutoAttack version 'custom' needs an attack list from: {', '.join(AA_ATTACKS)}")
        unknown = sorted(set(self.attacks) - set(AA_ATTACKS))
        if unknown:
            raise UserError(f"unknown AutoAttack attack(s) {unknown}: choose from {', '.join(AA_ATTACKS)}")

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Run the ensemble (worst case over its attacks, each only on still-robust points) and return x_adv.

        Randomness comes from ``seed`` (pyautoattack seeds itself), not from ``generator``. The attacks run one
        pyautoattack call each, so progress is reported per attack; every attack reseeds and the still-robust points
        are batched in the same order, so x_adv is the one a single call over the whole ensemble gives.
        """
        from pyautoattack import AutoAttack as _AA
        from pyautoattack.checks import check_square_sr

        logging.getLogger("auto-attack").setLevel(logging.WARNING)  # its per-batch messages are debug-level
        with eval_mode(model) as model:
            predict = _ContiguousInput(folded_view(model))
            adversary = _AA(predict, norm=_AA_NORM[self.norm], eps=self.eps, version=self.version,
                            attacks=self.attacks or None, seed=self.seed, device=x.device)
            x = x.contiguous()
            x_adv = x.clone()
            with torch.no_grad():
                logits = predict(x)
            _fit_targets(adversary, logits.shape[1])
            robust = logits.argmax(1) == y
            accuracy = {"clean": robust.float().mean().item()}
            for attack in track(list(adversary.attacks_to_run), desc=self.name, unit="attack"):
                idx = robust.nonzero().squeeze(1)
                if not len(idx):
                    break
                adversary.attacks_to_run = [attack]
                x_adv[idx], y_adv = adversary.run_standard_evaluation(x[idx], y[idx], batch_size=self.batch_size)
                robust[idx] = y_adv == y[idx]
                accuracy[attack] = robust.float().mean().item()
            check_square_sr(accuracy, logger=adversary.logger)  # pyautoattack's check over the whole ensemble
        return x_adv


_DLR_MIN_CLASSES = {"apgd-dlr": 3, "apgd-t": 4}  # the DLR losses read the 3rd / 4th largest logit


def _fit_targets(adversary: Any, n_classes: int) -> None:
    """Target at most the ``n_classes - 1`` other classes (pyautoattack's 9 targets assume 10 or more) and refuse the
    DLR-loss attacks on fewer classes than their loss reads."""
    for attack, minimum in _DLR_MIN_CLASSES.items():
        if attack in adversary.attacks_to_run and n_classes < minimum:
            raise UserError(f"AutoAttack's {attack} needs at least {minimum} classes, the model has {n_classes}: use "
                            f"version custom with attacks from apgd-ce, fab, square (e.g. --aa-version custom "
                            f"--aa-attacks apgd-ce,square)")
    adversary.apgd_targeted.n_target_classes = min(adversary.apgd_targeted.n_target_classes, n_classes - 1)
    adversary.fab.n_target_classes = min(adversary.fab.n_target_classes, n_classes - 1)
