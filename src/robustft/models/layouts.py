"""Checkpoint layouts of other projects, mapped to robustft's keys.

Foreign layouts, mapped by ``from_timm_layout`` (which ``load_checkpoint`` applies), each checked against the code that
writes or reads it:

- **plain timm state dict** — e.g. the ARES 2.0 releases (``ARES_{ViT,Swin}_{small,base,large}_*_AT.pth``):
  thu-ml/ares ``ares/model/imagenet_cls.py`` loads them with a strict ``load_state_dict`` into
  ``timm.create_model(name)``, and RoLI's ``vit.py::adv_load_from`` reads the ViT-B file's ``patch_embed.proj``,
  ``cls_token``, ``pos_embed``, ``norm`` and ``blocks.*`` keys. robustft's ViT and Swin use exactly these names, so
  such files load without change.
- **ARES model wrapper** — ``ImageNetCLS(normalize=True)`` holds ``model = nn.Sequential(NormalizeByChannelMeanStd,
  timm_model)``: keys ``model.0.mean`` / ``model.0.std`` (shape [3]) and ``model.1.*`` (``model.`` may already be
  stripped by ``unwrap_state_dict``).
- **RobustBench** ``normalize_model`` (how RobustBench serves ARES's ``Liu2023Comprehensive_Swin-B/L`` and
  ConvNeXts): ``normalize.mean`` / ``normalize.std`` ([1, 3, 1, 1]) and ``model.*``.
- **RobustBench CIFAR model classes** (``model_zoo/cifar10.py``, e.g. ``Wong2020FastNet``) register their input
  normalization as buffers ``mu`` / ``sigma`` ([1, 3, 1, 1]) beside the network's layers: a state dict of such a
  model has top-level ``mu`` and ``sigma`` keys.
- wrappers ``module.`` / ``_orig_mod.`` and the ``state_dict`` / ``model`` / ``state_dict_ema`` nesting of timm
  ``CheckpointSaver`` files, through ``unwrap_state_dict``; the ``{'last': ..., 'best': ...}`` snapshots of
  RobustBench's Andriushchenko2020Understanding and Kireev2021Effectiveness files, of which ``unwrap_state_dict``
  takes ``last``, as RobustBench's ``load_model`` does (``utils.py``: the weights its leaderboard evaluates), and
  says so in a warning line.
- whatever the architecture's own ``ModelCfg.checkpoint_filter`` maps (timm's per-model ``checkpoint_filter_fn``
  habit), e.g. timm >= 0.9 Swin names in ``swin.py``.

The normalizer of a wrapped checkpoint becomes our ``normalize`` buffers, so its statistics travel with the weights.
"""

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from robustft.errors import UserError, warn
from robustft.models.base import ImageClassifier

__all__ = ["unwrap_state_dict", "from_timm_layout"]

# Where training scripts put the network's weights inside a checkpoint dict, in the order they are tried.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "state_dict_ema")
# Prefixes added by wrappers: DataParallel/DDP ("module."), torch.compile ("_orig_mod."), wrapper modules ("model.").
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
# Snapshots of one run saved side by side, in the order preferred: RobustBench loads "last" (see the docstring).
SNAPSHOT_KEYS = ("last", "best")
# (mean key, std key, network prefix) of the input normalizers that other projects' checkpoints put beside or
# around the network; each becomes our ``normalize`` buffers.
FOREIGN_NORMALIZERS = (
    ("0.mean", "0.std", "1."),  # ARES nn.Sequential(normalizer, model), its "model." prefix already stripped
    ("model.0.mean", "model.0.std", "model.1."),  # the same, as ARES saves it
    ("normalize.mean", "normalize.std", "model."),  # RobustBench normalize_model
    ("mu", "sigma", ""),  # RobustBench CIFAR model classes: buffers beside the layers
)


def _find_tensor_dict(obj: Any) -> dict[str, Tensor] | None:
    """The first non-empty ``{str: Tensor}`` dict found at ``obj`` or (recursively) under a ``WRAPPER_KEYS`` entry."""
    if not isinstance(obj, Mapping):
        return None
    if obj and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        return dict(obj)
    return next((found for key in WRAPPER_KEYS if (found := _find_tensor_dict(obj.get(key))) is not None), None)


def _strip_wrapper_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Remove a ``WRAPPER_PREFIXES`` entry while *every* key starts with it (``module.model.x`` -> ``x``).

    A prefix shared by all keys is the attribute name of something wrapping the whole network, so dropping it
    cannot merge keys or break the layout. A genuine submodule called ``model`` never has that property in a
    robustft checkpoint (the ``normalize`` buffers sit beside it), so such keys are left alone.
    """
    while prefix := next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None):
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def _from_robustness_library(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """MadryLab ``robustness`` AttackerModel -> robustft layout.

    Its ``model.*`` is the network, ``attacker.model.*`` the same network again (dropped, with the attacker's
    own normalizer), and ``normalizer.new_mean`` / ``new_std`` are [3, 1, 1] buffers applied before the network.
    """
    network = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    network["normalize.mean"] = state["normalizer.new_mean"].reshape(1, -1, 1, 1)
    network["normalize.std"] = state["normalizer.new_std"].reshape(1, -1, 1, 1)
    return network


def _select_snapshot(obj: Any, source: str) -> Any:
    """The ``SNAPSHOT_KEYS`` entry to load when ``obj`` holds snapshots instead of one network; else ``obj``."""
    if not isinstance(obj, Mapping) or _find_tensor_dict(obj) is not None:
        return obj
    held = [key for key in SNAPSHOT_KEYS if _find_tensor_dict(obj.get(key)) is not None]
    if not held:
        return obj
    if len(held) > 1:
        warn(f"{source} holds the snapshots {' and '.join(repr(k) for k in held)}; loading {held[0]!r}, as "
             f"RobustBench does (its leaderboard evaluates that one)")
    return obj[held[0]]


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """Find the network's state dict inside a loaded checkpoint object and bring its keys to robustft's layout."""
    state = _find_tensor_dict(_select_snapshot(obj, source))
    if state is None:
        keys = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise UserError(
            f"no state dict found in {source}: expected a dict of tensors, possibly under one of "
            f"{', '.join(WRAPPER_KEYS)}; found {keys}"
        )
    state = _strip_wrapper_prefixes(state)
    if "normalizer.new_mean" in state:
        state = _from_robustness_library(state)
    return state


def _normalizer(state: dict[str, Tensor], mean_key: str, std_key: str, net_prefix: str) -> dict[str, Tensor] | None:
    """``mean_key`` / ``std_key`` + ``{net_prefix}*`` (and nothing else) -> ``normalize.*`` + network keys."""
    if not {mean_key, std_key} <= state.keys() or not all(
            k in (mean_key, std_key) or k.startswith(net_prefix) for k in state):
        return None
    out = {k.removeprefix(net_prefix): v for k, v in state.items() if k not in (mean_key, std_key)}
    out["normalize.mean"] = state[mean_key].float().reshape(1, -1, 1, 1)
    out["normalize.std"] = state[std_key].float().reshape(1, -1, 1, 1)
    return out


def from_timm_layout(obj: Any, model: ImageClassifier) -> dict[str, Tensor]:
    """A state dict for ``model`` from a checkpoint object in any layout listed in this module's docstring.

    ``obj`` is what ``torch.load`` returned (or a state dict); the result loads with
    ``load_state_dict_into(model, ...)``. Keys of a robustft checkpoint pass through unchanged.
    """
    state = unwrap_state_dict(obj)
    for mean_key, std_key, net_prefix in FOREIGN_NORMALIZERS:
        if (unwrapped := _normalizer(state, mean_key, std_key, net_prefix)) is not None:
            state = unwrapped
            break
    checkpoint_filter = model.pretrained_cfg.checkpoint_filter
    return state if checkpoint_filter is None else checkpoint_filter(state, model)
