"""Reading a run's own training files back (``last.pt`` on ``--resume``, ``best.pt`` when a stage ends or a method
reloads it): through the restricted loader, checked for the keys, types and epoch range robustft writes, every
failure one line saying how to carry on."""

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError, shown
from ..models.checkpoint import restricted_load

__all__ = ["restore_training_state", "load_best_weights"]

STAGE_DIR = re.compile(r"stage\d+_.+")  # RunLayout.stage: the directory of one stage of a multi-stage method
# what ``train._training_state`` writes: key -> (accepted types, what it must be)
_STATE_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((dict,), "a state dict"), "optimizer": ((dict,), "an optimizer state"),
    "scheduler": ((dict,), "a scheduler state"), "scaler": ((dict, type(None)), "a scaler state or None"),
    "generators": ((dict,), "generator states"), "torch_rng": ((Tensor,), "an RNG state"),
    "cuda_rng": ((list, tuple), "a list of RNG states"), "epoch": ((int,), "an int"),
    "history": ((list,), "a list of epoch records"), "best": ((dict,), "an epoch record"),
}


def _damaged(path: Path, reason: str) -> UserError:
    """The one line for a damaged run file: what is wrong and how to go on."""
    stage = path.parent
    where = f"stage {stage.name.partition('_')[2]}" if STAGE_DIR.fullmatch(stage.name) else "the run"
    if path.name == "last.pt":
        fix = f"delete it to restart {where} from epoch 1"
    else:
        fix = f"delete it and {stage / 'last.pt'} to retrain {where} from epoch 1"
    return UserError(f"{path.name} is damaged: {reason}; {fix}, or restore it from a backup")


def _load(path: Path, device: torch.device) -> Any:
    """The file's object, read by the restricted loader; a damaged file is ``_damaged``."""
    try:
        return restricted_load(path, map_location=device)
    except UserError as e:
        raise _damaged(path, str(e)) from None


def _check_state(state: Any, epochs: int) -> str | None:
    """What is wrong with a training state (None: nothing)."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a training state"
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        return f"it has no {', '.join(missing)} entry"
    for key, (types, what) in _STATE_KEYS.items():
        if not isinstance(state[key], types) or isinstance(state[key], bool):
            return f"{key} is {shown(state[key])}, not {what}"
    epoch = state["epoch"]
    if not 1 <= epoch <= epochs:
        return f"epoch {epoch} is outside 1..{epochs} (this stage's epochs)"
    history = state["history"]
    if len(history) != epoch or not all(isinstance(h, dict) and h.get("epoch") == i + 1
                                        for i, h in enumerate(history)):
        return f"its history does not list epochs 1..{epoch}"
    if "epoch" not in state["best"]:
        return "its best epoch record has no epoch"
    return None


def restore_training_state(path: Path, epochs: int, device: torch.device, restore: Callable[[dict], None]) -> dict:
    """Read the training state ``last.pt`` at ``path`` (a stage of ``epochs`` epochs), check it, and hand it to
    ``restore`` (which loads it into the model, optimizer, ...); returns it. Any failure is one line."""
    state = _load(path, device)
    problem = _check_state(state, epochs)
    if problem is None:
        try:
            restore(state)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            problem = f"it does not fit this run ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    if problem is not None:
        raise _damaged(path, f"{path} holds {problem}" if problem.startswith("a ") else f"{path}: {problem}")
    return state


def saved_method_state(path: Path, device: torch.device) -> dict[str, Any]:
    """The method state (``Method.state_dict``) in the training state ``last.pt`` at ``path``; empty when the state
    predates method state. A damaged file is one line."""
    state = _load(path, device)
    method_state = state.get("method", {}) if isinstance(state, dict) else None
    if not isinstance(method_state, dict):
        raise _damaged(path, f"{path} holds no training state with a method state")
    return method_state


def load_best_weights(model: nn.Module, path: Path, device: torch.device) -> None:
    """Load the selected weights ``best.pt`` at ``path`` into ``model`` (strictly); any failure is one line."""
    state = _load(path, device)
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, Tensor)
                                                      for k, v in state.items())):
        raise _damaged(path, f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise _damaged(path, f"{path} does not fit the model ({str(e).splitlines()[0]})") from None
