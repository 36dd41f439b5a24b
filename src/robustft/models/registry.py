"""Model registry: ``@register_model`` constructors, ``create_model("arch[.tag]")`` and ``load_checkpoint``.

Names follow timm: ``arch`` selects a registered constructor, an optional ``.tag`` selects published weights
from ``hub.KNOWN_WEIGHTS`` (e.g. ``resnet50.madry_linf4_in1k``).
"""

import difflib
import os
import types
import typing
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import torch
from torch import Tensor

from robustft.errors import UserError, shown
from robustft.models.base import ImageClassifier
from robustft.models.checkpoint import load_state_dict_into, load_weights, read_state_dict
from robustft.models.hub import HF_HUB_PREFIX, KNOWN_WEIGHTS, fetch_weights, hf_hub_directory, read_hub_config
from robustft.models.layouts import from_timm_layout
from robustft.models.normalization import NormSpec, resolve_normalization, set_normalization
from robustft.schema import coerce_value, type_name

__all__ = ["register_model", "list_models", "create_model", "load_checkpoint"]

_model_entrypoints: dict[str, Callable[..., ImageClassifier]] = {}

Constructor = TypeVar("Constructor", bound=Callable[..., ImageClassifier])


def register_model(fn: Constructor) -> Constructor:
    """Register a model constructor under its function name."""
    name = fn.__name__
    if name in _model_entrypoints:
        first = _model_entrypoints[name].__module__
        raise ValueError(f"model {name!r} is registered twice ({first} and {fn.__module__})")
    _model_entrypoints[name] = fn
    return fn


def list_models() -> list[str]:
    """Sorted names of all registered architectures."""
    return sorted(_model_entrypoints)


def _entrypoint(arch: str) -> Callable[..., ImageClassifier]:
    """The constructor registered as ``arch``, or a UserError naming the available ones."""
    if arch not in _model_entrypoints:
        close = difflib.get_close_matches(arch, _model_entrypoints, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"unknown model {arch!r}; {hint}available: {', '.join(list_models())}")
    return _model_entrypoints[arch]


def _option_types(entrypoint: Callable[..., ImageClassifier]) -> dict[str, Any]:
    """The annotated options a constructor takes: its own parameters and those of the model class it returns."""
    hints = typing.get_type_hints(entrypoint)
    model_cls = hints.pop("return", None)
    if isinstance(model_cls, type):
        hints = {**typing.get_type_hints(model_cls.__init__), **hints}
    return {k: v for k, v in hints.items() if k != "return"}


def _is_scalar(hint: Any) -> bool:
    """Whether an annotation is a plain value type (bool, int, float, str, a Literal, or an optional of those): the
    options a config or a command line can set, checked before the constructor sees them."""
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return all(k in (bool, int, float, str, type(None)) or typing.get_origin(k) is typing.Literal for k in kinds)


def _construct(arch: str, entrypoint: Callable[..., ImageClassifier], **kwargs) -> ImageClassifier:
    """Call the constructor; an option it does not take, or a value of the wrong type, is one UserError line."""
    where = "(model.options / --model-arg); see its constructor's arguments"
    for key, hint in _option_types(entrypoint).items():
        if key in kwargs and _is_scalar(hint):
            try:
                kwargs[key] = coerce_value(kwargs[key], hint, key)
            except UserError:
                raise UserError(f"architecture {arch}: option {key} must be {type_name(hint)}, got "
                                f"{shown(kwargs[key])} {where}") from None
    options = {k: v for k, v in kwargs.items() if k not in ("num_classes", "normalization")}
    try:
        model = entrypoint(**kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        text, name = str(e), str(e).rsplit(" ", 1)[-1]
        if "unexpected keyword argument" in text:
            raise UserError(f"architecture {arch} does not take the option {name} {where}") from None
        if "multiple values for keyword argument" in text:
            raise UserError(f"architecture {arch} sets the option {name} itself {where}") from None
        if not options:  # the architecture fails without options: a bug, not a user error
            raise
        reason = (text.strip().splitlines() or [""])[0]
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise UserError(f"architecture {arch} cannot be built with {given} ({type(e).__name__}: {reason}) "
                        f"{where}") from None
    model.pretrained_cfg = replace(model.pretrained_cfg, options=tuple(options.items()))
    return model


def _weights_name(arch: str, tag: str, pretrained: bool) -> str | None:
    """The ``KNOWN_WEIGHTS`` entry to use: ``arch.tag`` if tagged, else the arch's first one if ``pretrained``."""
    known = [name for name in KNOWN_WEIGHTS if name.partition(".")[0] == arch]
    if tag:
        if f"{arch}.{tag}" not in KNOWN_WEIGHTS:
            raise UserError(f"unknown weights {arch}.{tag}; known for {arch}: {', '.join(known) or 'none'}")
        return f"{arch}.{tag}"
    if pretrained and not known:
        raise UserError(f"no published weights are known for {arch!r}; load a checkpoint file with robustft.load_model")
    return known[0] if pretrained else None


def _published_state(weights_name: str, model: ImageClassifier) -> dict[str, Tensor]:
    """The tag's downloaded checkpoint in ``model``'s layout; a file that carries no normalizer (timm and
    RobustBench layouts) gets the statistics its publisher normalizes with, so they travel as the weights' own."""
    state = from_timm_layout(read_state_dict(fetch_weights(weights_name), model), model)
    if "normalize.mean" not in state:
        mean, std = resolve_normalization(KNOWN_WEIGHTS[weights_name].normalization)
        state["normalize.mean"] = torch.tensor(mean).reshape(1, -1, 1, 1)
        state["normalize.std"] = torch.tensor(std).reshape(1, -1, 1, 1)
    return state


def create_model(
    name: str,
    num_classes: int | None = None,
    *,
    normalization: NormSpec = None,
    pretrained: bool = False,
    **kwargs,
) -> ImageClassifier:
    """Build the model registered as ``name`` (``arch`` or ``arch.tag``); keyword options go to its constructor.

    ``num_classes`` and ``normalization`` default to the tagged weights' values, else the architecture's. With
    ``pretrained=True`` the weights are downloaded once into ``hub.cache_dir()`` and loaded; a ``num_classes``
    different from theirs then gives a freshly initialized head, as in timm.
    """
    arch, _, tag = name.partition(".")
    entrypoint = _entrypoint(arch)
    weights_name = _weights_name(arch, tag, pretrained)
    if weights_name is None:
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        return _construct(arch, entrypoint, normalization=normalization, **kwargs)
    weights = KNOWN_WEIGHTS[weights_name]
    model = _construct(arch, entrypoint, num_classes=weights.num_classes,
                       normalization=weights.normalization if normalization is None else normalization, **kwargs)
    # The published weights' statistics (their entry, then their normalizer once loaded) unless the caller's.
    model.pretrained_cfg = replace(model.pretrained_cfg, tag=weights_name.partition(".")[2],
                                   normalization_source="checkpoint" if normalization is None else "given")
    if pretrained:
        load_state_dict_into(model, _published_state(weights_name, model), source=weights_name)
        if normalization is not None:  # an explicit choice overrides the statistics stored in the checkpoint
            set_normalization(model, normalization)
    if num_classes is not None and num_classes != weights.num_classes:
        model.reset_classifier(num_classes)
    return model


def load_checkpoint(
    arch: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    num_classes: int | None = None,
    normalization: NormSpec = None,
    **kwargs,
) -> ImageClassifier:
    """Build ``arch`` and load ``checkpoint`` (any format ``read_state_dict`` reads) strictly into it.

    A tagged ``arch`` without a ``checkpoint`` loads the tag's published weights (downloaded once); a ``checkpoint``
    ``hf-hub:OWNER/REPO[@REVISION]`` is downloaded through ``huggingface_hub`` (``hub.hf_hub_directory``). A hub model
    directory's ``config.json`` supplies ``num_classes``, mean/std and the input size (``pretrained_cfg.input_size``)
    where they are not given. ``num_classes=None`` takes the class count from the checkpoint's head.
    ``normalization=None`` keeps the checkpoint's ``normalize`` buffers, or assumes the architecture default when it
    has none (one warning line); an explicit value wins.
    """
    base, _, tag = arch.partition(".")
    published = _weights_name(base, tag, pretrained=True) if checkpoint is None and tag else None
    if published:
        checkpoint = fetch_weights(published)
    elif str(checkpoint).startswith(HF_HUB_PREFIX):
        checkpoint = hf_hub_directory(str(checkpoint))
    hub = read_hub_config(checkpoint) if checkpoint is not None else None
    if hub is not None:
        num_classes = hub.num_classes if num_classes is None else num_classes
        if normalization is None and hub.mean and hub.std:
            normalization = (hub.mean, hub.std)
    model = create_model(arch, num_classes, normalization=normalization, **kwargs)
    if checkpoint is None:
        return model
    # timm/ARES/RobustBench layouts → ours
    state_dict = (_published_state(published, model) if published
                  else from_timm_layout(read_state_dict(checkpoint, model), model))
    head_weight = state_dict.get(f"{model.pretrained_cfg.classifier}.weight")
    if num_classes is None and head_weight is not None and head_weight.ndim == 2:
        model.reset_classifier(head_weight.shape[0])
    model = load_weights(model, state_dict, str(checkpoint), normalization=normalization)
    if hub is not None and hub.input_size is not None:
        model.pretrained_cfg = replace(model.pretrained_cfg, input_size=hub.input_size)
    return model
