"""An evaluated model as a RobustBench ``model_info`` record (``robustft evaluate --leaderboard-json``).

The first fields are RobustBench's own, named and formatted as its ``model_info/<dataset>/<threat_model>/*.json``
files hold them: accuracies as percent strings with two decimals, ``eps`` as given (``"8/255"``), and the paper
fields robustft cannot know (``link``, ``name``, ``authors``, ``venue``, ``additional_data``, ``footnote``) as null
for the user to fill in. robustft adds what makes the number checkable: the threat model, ``n_ex`` (RobustBench's
name for the number of test points), the AutoAttack version and attacks, the split and the versions.
"""

from importlib import metadata
from typing import Any

from ..errors import UserError
from .evaluate import EvalResult

__all__ = ["leaderboard_record", "THREAT_MODELS"]

THREAT_MODELS = {"linf": "Linf", "l2": "L2"}  # robustft norm -> RobustBench ThreatModel value


def _percent(fraction: float) -> str:
    """RobustBench's accuracy format: percent, rounded to two decimals, as a string (``"67.31"``)."""
    return str(round(fraction * 100, 2))


def _version(package: str) -> str | None:
    """An installed distribution's version (None when it is not installed)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def leaderboard_record(result: EvalResult, *, dataset: str, architecture: str, eps: str, split: str,
                       provenance: dict[str, Any], attack: str = "autoattack") -> dict[str, Any]:
    """RobustBench ``model_info`` fields (then robustft's) of an evaluation that ran AutoAttack as ``attack``."""
    if attack not in result.attacks:
        raise UserError(f"a leaderboard record needs an AutoAttack evaluation (--attack autoattack); this one ran "
                        f"{', '.join(result.attacks) or 'no attack'}")
    settings = result.attacks[attack]
    return {
        "link": None, "name": None, "authors": None, "additional_data": None, "number_forward_passes": 1,
        "dataset": dataset, "venue": None, "architecture": architecture, "eps": eps,
        "clean_acc": _percent(result.clean_acc), "reported": None,
        "autoattack_acc": _percent(result.robust_acc[attack]), "footnote": None,
        # robustft's additions: what the numbers were measured on and with
        "threat_model": THREAT_MODELS[settings["norm"]], "norm": settings["norm"], "eps_value": settings["eps"],
        "n_ex": result.n, "split": split, "autoattack_version": settings["version"],
        "autoattack_attacks": settings["attacks"] or None, "seed": settings["seed"],
        "versions": {"robustft": provenance["robustft"], "torch": provenance["torch"],
                     "autoattack": _version("pyautoattack"), "python": provenance["python"]},
        "provenance": provenance,
    }
