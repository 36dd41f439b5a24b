"""Build attacks by name from one flat set of options (what the CLI, configs and the Python API provide)."""

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import UserError
from .autoattack import AutoAttack
from .base import Attack, check_budget, parse_eps
from .pgd import PGD, fgsm

__all__ = ["create_attack", "ATTACK_NAMES"]


def _pgd(o: dict[str, Any]) -> Attack:
    return PGD(eps=o["eps"], steps=o["steps"], step_size=o["step_size"], norm=o["norm"], restarts=o["restarts"],
               random_start=o["random_start"], name=f"pgd{o['steps']}")


def _autoattack(o: dict[str, Any]) -> Attack:
    check_budget(o["eps"], o["norm"])
    return AutoAttack(eps=o["eps"], norm=o["norm"], version=o["aa_version"], attacks=o["aa_attacks"], seed=o["seed"])


_BUILDERS: dict[str, Callable[[dict[str, Any]], Attack]] = {
    "pgd": _pgd,
    "fgsm": lambda o: fgsm(eps=o["eps"], norm=o["norm"]),
    "autoattack": _autoattack,
}
ATTACK_NAMES = tuple(_BUILDERS)


def create_attack(name: str, *, eps: float | str = 8 / 255, norm: str = "linf", steps: int = 20,
                  step_size: float | str | None = None, restarts: int = 1, seed: int = 0,
                  aa_version: str = "standard", aa_attacks: Sequence[str] | None = None,
                  random_start: bool = True) -> Attack:
    """Build attack ``name`` (pgd, fgsm, autoattack): ``eps`` and ``step_size`` in [0,1] pixel units (a number or a
    fraction such as ``"8/255"``), PGD ``steps``/``restarts``/``random_start``, AutoAttack's
    ``seed``/``aa_version``/``aa_attacks``."""
    try:
        builder = _BUILDERS[name.lower()]
    except KeyError:
        raise UserError(f"unknown attack {name!r}: choose from {', '.join(ATTACK_NAMES)}") from None
    return builder(dict(eps=parse_eps(eps), norm=norm, steps=steps,
                        step_size=None if step_size is None else parse_eps(step_size), restarts=restarts, seed=seed,
                        aa_version=aa_version, aa_attacks=list(aa_attacks or []), random_start=random_start))
