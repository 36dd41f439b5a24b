"""Build attacks by name from one flat set of options (what the CLI and configs provide)."""

from collections.abc import Callable
from typing import Any

from ..errors import UserError
from .autoattack import AutoAttack
from .base import Attack, check_budget
from .pgd import PGD, fgsm

__all__ = ["create_attack", "ATTACK_NAMES"]


def _pgd(o: dict[str, Any]) -> Attack:
    return PGD(eps=o["eps"], steps=o["steps"], step_size=o.get("step_size"), norm=o["norm"],
               restarts=o.get("restarts", 1), name=f"pgd{o['steps']}")


def _autoattack(o: dict[str, Any]) -> Attack:
    check_budget(o["eps"], o["norm"])
    return AutoAttack(eps=o["eps"], norm=o["norm"], version=o.get("aa_version", "standard"),
                      attacks=list(o.get("aa_attacks") or []), seed=o.get("seed", 0))


_BUILDERS: dict[str, Callable[[dict[str, Any]], Attack]] = {
    "pgd": _pgd,
    "fgsm": lambda o: fgsm(eps=o["eps"], norm=o["norm"]),
    "autoattack": _autoattack,
}
ATTACK_NAMES = tuple(_BUILDERS)


def create_attack(name: str, **options: Any) -> Attack:
    """Build attack ``name`` (pgd, fgsm, autoattack) from options eps, norm, steps, step_size, restarts, seed, aa_*."""
    try:
        builder = _BUILDERS[name.lower()]
    except KeyError:
        raise UserError(f"unknown attack {name!r}: choose from {', '.join(ATTACK_NAMES)}") from None
    return builder(options)
