"""Attacks in [0,1] pixel space sharing one interface: ``perturb(model, x, y) -> x_adv``."""

from .autoattack import AA_ATTACKS, AA_VERSIONS, AutoAttack
from .base import NORMS, Attack, check_budget, eval_mode, parse_eps
from .factory import ATTACK_NAMES, create_attack
from .pgd import PGD, default_step_size, fgsm

__all__ = ["Attack", "PGD", "fgsm", "AutoAttack", "create_attack", "eval_mode", "parse_eps", "check_budget",
           "default_step_size",
           "ATTACK_NAMES", "NORMS", "AA_VERSIONS", "AA_ATTACKS"]
