"""Checkpoints in, checkpoints out: safe reading, wrapper unwrapping, strict loading with named errors, saving.

Reading never executes code from the file: ``.safetensors`` holds only tensors, and everything else goes through
``torch.load(weights_only=True)``, which admits tensors, containers, numpy scalars and one class more: the
``argparse.Namespace`` of training arguments that timm's ``CheckpointSaver`` pickles as ``args`` (its values are
unpickled under the same restrictions). A file that needs more (a pickled module, optimizer class, any other class)
is refused with a message rather than loaded with ``weights_only=False``, and no message passes on torch's advice
to do so. Weights that load but compute garbage are refused too: NaN/Inf values, integer values for float weights.

A directory is read as a Hugging Face hub model directory, as timm's ``save_for_hf`` writes it: the weights are
``model.safetensors``, else ``pytorch_model.bin`` (timm ``_hub.py`` prefers them in this order); its
``config.json`` is read by ``hub.read_hub_config``.

Foreign layouts (``layouts``: ``unwrap_state_dict``, ``from_timm_layout``, which ``load_checkpoint`` applies) are
mapped to robustft's keys before loading.
"""

import argparse
import math
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import Tensor, nn

from robustft._io import atomic_save, atomic_write
from robustft.errors import UserError, shown, warn
from robustft.models.base import ImageClassifier
from robustft.models.layouts import from_timm_layout, unwrap_state_dict
from robustft.models.normalization import (
    NORMALIZATIONS,
    Normalize,
    NormSpec,
    describe_normalization,
    set_normalization,
)

__all__ = ["LoadResult", "read_state_dict", "read_timm_checkpoint",
           "load_state_dict_into", "load_weights", "save_state_dict", "write_state_dict", "load_classifier",
           "restricted_load", "checkpoint_limit_mb"]

# Weight files of a hub model directory, in the order timm's ``load_state_dict_from_path`` prefers them.
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# A checkpoint read for a model may hold this many times its weights (a training checkpoint: the weights, an EMA copy,
# two Adam moments, a snapshot or two) plus this many MB (metadata, small models); a larger one is refused unread.
MAX_CHECKPOINT_FACTOR, MAX_CHECKPOINT_SLACK_MB = 8, 64
MAX_CHECKPOINT_ENV = "ROBUSTFT_MAX_CHECKPOINT_MB"

# numpy scalars (e.g. an accuracy stored as np.float64) are a dtype plus raw bytes: rebuilding them runs no user code.
_NUMPY_SCALAR = np.float64(0).__reduce__()[0]
_SAFE_NUMPY_GLOBALS = [
    (_NUMPY_SCALAR, "numpy.core.multiarray.scalar"),  # the name numpy 1.x writes
    (_NUMPY_SCALAR, "numpy._core.multiarray.scalar"),  # the name numpy 2.x writes
    np.dtype,
    *(type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
                                  np.float16, np.float32, np.float64)),
]
# timm training checkpoints pickle their argparse arguments as ``args``. A Namespace is rebuilt as an empty object
# whose __dict__ is then filled with values that pass the same restrictions: no code of the file runs.
_SAFE_GLOBALS = [*_SAFE_NUMPY_GLOBALS, argparse.Namespace]


# torch appends this to its load errors; it advises ``weights_only=False``, which would run the file's code.
_TORCH_UNSAFE_ADVICE = getattr(torch.serialization, "UNSAFE_MESSAGE", "")
_RESAVE_ADVICE = ("in a trusted environment, load it and re-save the weights with "
                  "`torch.save(model.state_dict(), path)` or as safetensors")


class LoadResult(NamedTuple):
    """Keys that ``load_state_dict_into(strict=False)`` left untouched."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _torch_reason(err: BaseException) -> str:
    """torch's error text as one line, without its sentences about ``weights_only`` (their advice: turn it off)."""
    text = str(err).split("WeightsUnpickler error:", 1)[-1].replace(_TORCH_UNSAFE_ADVICE, " ")
    sentences = [s for line in text.splitlines() for s in re.split(r"(?<=[.?!])\s+", line.strip()) if s]
    return " ".join(s for s in sentences if "weights_only" not in s and s != "Weights only load failed.")


def restricted_load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` restricted to tensors, containers, numpy scalars and argparse namespaces; else a UserError."""
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS), warnings.catch_warnings():
            # Our error below replaces torch's warning, which would be a second stderr line.
            warnings.filterwarnings("ignore", message="'torch.load' received a zip file that looks like a TorchScript")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # Running code from a pickle takes a global (a function or class); torch names the first one it refused.
        found = re.search(r"GLOBAL ([\w.]+)|but got (<class [^>]+>)", str(err))
        if found is None:
            raise UserError(f"{path} is not a PyTorch checkpoint ({_torch_reason(err)})") from err
        raise UserError(
            f"refusing to load {path}: it needs arbitrary code execution to unpickle "
            f"(it references {found.group(1) or found.group(2)}); re-save it as a plain state_dict or safetensors"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        if "legacy .tar format" in str(err):
            raise UserError(
                f"{path} is in the legacy .tar format of torch < 0.4, which cannot be read without running code "
                f"from the file; {_RESAVE_ADVICE}"
            ) from None
        if "TorchScript archive" in str(err):
            raise UserError(
                f"{path} is a TorchScript archive (torch.jit.save), not a state dict; {_RESAVE_ADVICE}"
            ) from None
        reason = _torch_reason(err)
        raise UserError(
            f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}{': ' + reason if reason else ''})"
        ) from err


def _check_finite(state: Mapping[str, Tensor], source: str) -> None:
    """Refuse NaN or Inf in any floating tensor: such a network computes garbage, however well it loads."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        counts = [f"{k} ({int(state[k].isnan().sum())} NaN, {int(state[k].isinf().sum())} Inf)" for k in bad]
        what = f"checkpoint {source}" if source else "the checkpoint"
        raise UserError(
            f"{what} has non-finite values in {_name_list(counts)}; it is not a usable model "
            "(did training diverge?); use a checkpoint saved before the divergence"
        )


def _weights_file(path: Path) -> Path:
    """``path`` itself, or the weights file inside the hub model directory ``path``."""
    if not path.is_dir():
        if not path.is_file():
            raise UserError(f"checkpoint {path} does not exist")
        return path
    found = next((path / name for name in HUB_WEIGHT_FILES if (path / name).is_file()), None)
    if found is None:
        raise UserError(f"checkpoint directory {path} has none of {', '.join(HUB_WEIGHT_FILES)} (a Hugging Face hub "
                        "model directory); give the checkpoint file itself (of a robustft run: RUN_DIR/model.pt)")
    return found


def _stored_bytes(path: Path) -> int:
    """What reading ``path`` puts in memory: a ``torch.save`` zip's members at their uncompressed sizes (from its
    central directory, before anything is inflated), else the file's size."""
    if path.suffix != ".safetensors" and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                return sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, OSError):
            pass  # torch.load says what is wrong with it
    return path.stat().st_size


def checkpoint_limit_mb(model: nn.Module | None) -> float | None:
    """The largest checkpoint read for ``model``, in MB (see ``MAX_CHECKPOINT_FACTOR``); ``$ROBUSTFT_MAX_CHECKPOINT_MB``
    overrides it; None (no limit) without a model or that variable."""
    given = os.environ.get(MAX_CHECKPOINT_ENV)
    if given:
        try:
            limit = float(given)
        except ValueError:
            limit = -1.0
        if not limit > 0:
            raise UserError(f"{MAX_CHECKPOINT_ENV} must be a positive number of MB, got {shown(given)}")
        return limit
    if model is None:
        return None
    weights = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    return MAX_CHECKPOINT_FACTOR * weights / 2**20 + MAX_CHECKPOINT_SLACK_MB


def _check_size(path: Path, model: nn.Module | None) -> None:
    """Refuse a checkpoint that would put more in memory than ``checkpoint_limit_mb`` allows, before reading it."""
    limit = checkpoint_limit_mb(model)
    if limit is None:
        return
    stored = _stored_bytes(path) / 2**20
    if stored > limit:
        origin = (f"set by {MAX_CHECKPOINT_ENV}" if os.environ.get(MAX_CHECKPOINT_ENV) else
                  f"{MAX_CHECKPOINT_FACTOR}x the model's weights + {MAX_CHECKPOINT_SLACK_MB} MB")
        raise UserError(f"{path} holds {stored:.0f} MB of data (uncompressed), more than the {limit:.0f} MB limit "
                        f"({origin}) for this model; if it is genuine, raise the limit with "
                        f"{MAX_CHECKPOINT_ENV}={math.ceil(stored) + 1}")


def _check_storage(state: Mapping[str, Tensor], source: str) -> None:
    """Refuse tensors with more elements than their storage holds (stride-0 ``expand`` tricks): every per-tensor
    operation on them (the finiteness check, a copy) would allocate their full size from a few stored bytes."""
    bad = [k for k, v in state.items() if v.numel() * v.element_size() > v.untyped_storage().nbytes()]
    if bad:
        shapes = [f"{k} {tuple(state[k].shape)} from {state[k].untyped_storage().nbytes()} bytes" for k in bad]
        raise UserError(f"checkpoint {source} has tensors larger than their stored data (overlapping strides) in "
                        f"{_name_list(shapes)}; a saved state dict never has them: it is damaged or crafted")


def read_state_dict(path: str | os.PathLike, model: nn.Module | None = None) -> dict[str, Tensor]:
    """Read a checkpoint (``.safetensors``, ``torch.save`` output, hub model directory); return the network's state.

    With ``model`` (what the checkpoint will be loaded into) a file larger than ``checkpoint_limit_mb(model)`` is
    refused before it is read, and the values are checked (NaN/Inf) when ``load_state_dict_into`` loads them, after
    their keys and shapes: no per-tensor work on tensors the model does not have."""
    path = _weights_file(Path(path))
    _check_size(path, model)
    if path.suffix == ".safetensors":
        try:
            obj = safetensors.torch.load_file(path, device="cpu")
        except SafetensorError as err:
            raise UserError(f"{path} is not a readable safetensors file ({err})") from err
    else:
        obj = restricted_load(path)
    state = unwrap_state_dict(obj, source=str(path))
    _check_storage(state, source=str(path))
    if model is None:
        _check_finite(state, source=str(path))
    return state


def read_timm_checkpoint(path: str | os.PathLike, model: ImageClassifier) -> dict[str, Tensor]:
    """``from_timm_layout`` of the checkpoint file at ``path`` (read safely, weights only)."""
    return from_timm_layout(read_state_dict(path, model), model)


def _state_keys(model: nn.Module, modules: list[nn.Module]) -> set[str]:
    """Full state-dict keys of the given submodules of ``model``, found by identity rather than by name."""
    wanted = {id(m) for m in modules}
    return {
        f"{name}.{key}" if name else key
        for name, module in model.named_modules()
        if id(module) in wanted
        for key in module.state_dict()
    }


def _name_list(keys: list[str], limit: int = 8) -> str:
    """``a, b, c`` with at most ``limit`` names, then how many more."""
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown}, ... ({len(keys) - limit} more)"


def load_state_dict_into(
    model: ImageClassifier,
    state_dict: Mapping[str, Tensor],
    *,
    strict: bool = True,
    skip_classifier: bool = False,
    source: str = "",
) -> LoadResult:
    """Copy ``state_dict`` into ``model``, raising one UserError naming every missing, unexpected, misshapen, int key.

    A checkpoint without ``normalize.*`` buffers keeps the model's configured normalization. ``skip_classifier``
    loads everything but the head (fine-tuning on new classes). ``strict=False`` tolerates missing and
    unexpected keys (returned), never shape mismatches. Then the loaded values must be finite (``source`` names the
    checkpoint in that error).
    """
    cfg = model.pretrained_cfg
    state = {k: v for k, v in state_dict.items() if not k.startswith(cfg.unused_checkpoint_prefixes)}
    head_keys = _state_keys(model, [model.get_classifier()])
    norm_keys = _state_keys(model, [m for m in model.modules() if isinstance(m, Normalize)])
    ignored = set() if norm_keys & state.keys() else norm_keys
    if skip_classifier:
        ignored |= head_keys
        state = {k: v for k, v in state.items() if k not in head_keys}
    model_state = model.state_dict()
    expected = {k: v.shape for k, v in model_state.items() if k not in ignored}

    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    misshapen = [k for k in expected if k in state and state[k].shape != expected[k]]
    # Integer or bool values copied into float weights are cast silently (a quantized or corrupt export);
    # integer buffers such as BatchNorm's num_batches_tracked are integer in the model too.
    not_float = [k for k in expected if k in state and model_state[k].is_floating_point()
                 and not state[k].is_floating_point()]
    head_weight = f"{cfg.classifier}.weight"
    # Only the head's output size differs: the checkpoint was trained on a different number of classes.
    if (head_weight in misshapen and set(misshapen) <= head_keys and not (strict and (missing or unexpected))
            and state[head_weight].shape[1:] == expected[head_weight][1:]):
        raise UserError(
            f"class-count mismatch: the checkpoint's classifier `{cfg.classifier}` has "
            f"{state[head_weight].shape[0]} outputs but the model/data has {expected[head_weight][0]} classes; "
            f"evaluate it on data with {state[head_weight].shape[0]} classes (--num-classes "
            f"{state[head_weight].shape[0]} on data with fewer), or fine-tune it first "
            "(`robustft finetune` replaces the head)"
        )
    problems = []
    if misshapen:
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k])}" for k in misshapen]
        problems.append(f"shape mismatch (checkpoint vs model): {_name_list(shapes)}")
    if not_float:
        dtypes = [f"{k} {state[k].dtype} vs {model_state[k].dtype}" for k in not_float]
        problems.append(f"non-floating weights (checkpoint vs model dtype): {_name_list(dtypes)}; "
                        "export the floating-point weights")
    if strict and missing:
        problems.append(f"missing keys: {_name_list(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {_name_list(unexpected)}")
    if problems:
        raise UserError(f"checkpoint does not fit {cfg.architecture or type(model).__name__} ({'; '.join(problems)})")
    loaded = {k: v for k, v in state.items() if k in expected}
    _check_finite(loaded, source)
    model.load_state_dict(loaded, strict=False)
    return LoadResult(missing, unexpected)


def load_weights(model: ImageClassifier, state_dict: Mapping[str, Tensor], source: str, *,
                 normalization: NormSpec = None) -> ImageClassifier:
    """``load_state_dict_into`` (strict), then the input normalization: an explicit ``normalization`` wins, else the
    checkpoint's ``normalize`` statistics, else the model's default is assumed and one warning line says so.

    Which one is recorded in ``model.pretrained_cfg.normalization_source`` (exports state it in their card).
    """
    load_state_dict_into(model, state_dict, source=source)
    if normalization is not None:
        set_normalization(model, normalization)
        origin = "given"
    elif "normalize.mean" in state_dict:
        origin = "checkpoint"
    else:
        origin = "assumed"
        stats = describe_normalization(model.normalize.mean.flatten().tolist(), model.normalize.std.flatten().tolist())
        warn(f"{source} carries no input normalization (no normalize/normalizer mean and std) and none was given: "
             f"assuming the {model.pretrained_cfg.architecture or type(model).__name__} default, {stats}; if its "
             f"weights were trained on other statistics, predictions are wrong: pass --normalization "
             f"(model.normalization) {'|'.join(NORMALIZATIONS)} or m1,m2,m3/s1,s2,s3")
    model.pretrained_cfg = replace(model.pretrained_cfg, normalization_source=origin)
    return model


def write_state_dict(state: Mapping[str, Tensor], path: str | os.PathLike) -> Path:
    """Write a state dict to ``path`` atomically; safetensors if it ends in ``.safetensors``, else ``torch.save``."""
    state = {k: v.detach().cpu() for k, v in state.items()}
    if str(path).endswith(".safetensors"):
        state = {k: v.contiguous() for k, v in state.items()}
        return atomic_write(path, lambda tmp: safetensors.torch.save_file(state, tmp))
    return atomic_save(state, path)


def save_state_dict(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model``'s plain state dict to ``path`` atomically; safetensors if it ends in ``.safetensors``."""
    return write_state_dict(model.state_dict(), path)


def load_classifier(model: nn.Module, path: str | os.PathLike) -> None:
    """Copy only the classifier (``<head>.weight``/``.bias``) of the checkpoint at ``path`` into ``model``'s head."""
    state = read_state_dict(path, model)
    name = model.pretrained_cfg.classifier
    head = {k: state[f"{name}.{k}"] for k in ("weight", "bias") if f"{name}.{k}" in state}
    if not head:
        raise UserError(f"{path} has no classifier weights {name}.weight / {name}.bias")
    _check_finite(head, str(path))
    try:
        model.get_classifier().load_state_dict(head)
    except RuntimeError as e:
        raise UserError(f"the classifier in {path} does not fit this model's head: {e}") from None
