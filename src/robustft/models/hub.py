"""Published checkpoints: known robust weights addressed by timm-style ``arch.tag`` names and their download cache,
and the ``config.json`` of Hugging Face hub model directories."""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustft.errors import UserError

__all__ = ["PretrainedWeights", "KNOWN_WEIGHTS", "cache_dir", "fetch_weights", "HubConfig", "read_hub_config"]


@dataclass(frozen=True)
class PretrainedWeights:
    """Where a published checkpoint lives and what it expects."""

    url: str
    num_classes: int
    normalization: str
    description: str


# The robust ImageNet models of Salman et al. 2020 ("Do Adversarially Robust ImageNet Models Transfer Better?",
# trained with MadryLab's `robustness` library; TWINS starts from the Linf one). File names checked against the
# model card of huggingface.co/madrylab/robust-imagenet-models (README.md at 3f04ac9, the links of its L2 and Linf
# tables) and against code that downloads them (e.g. resnet50_l2_eps3.ckpt, resnet50_linf_eps4.0.ckpt); the
# `imagenet_linf_4.pt` / `imagenet_l2_3_0.pt` names are the robustness library's Dropbox files, not on that hub.
_MADRY = "https://huggingface.co/madrylab/robust-imagenet-models/resolve/main"

# Tags follow timm's <recipe>_<data>; the first tag listed for an architecture is its default pretrained weights.
KNOWN_WEIGHTS: dict[str, PretrainedWeights] = {
    "resnet50.madry_linf4_in1k": PretrainedWeights(
        url=f"{_MADRY}/resnet50_linf_eps4.0.ckpt", num_classes=1000, normalization="imagenet",
        description="Salman et al. 2020 (MadryLab robustness): PGD adversarial training on ImageNet-1k, Linf eps "
                    "4/255 (63.86% clean top-1 per its model card)",
    ),
    "resnet50.madry_l2_3_in1k": PretrainedWeights(
        url=f"{_MADRY}/resnet50_l2_eps3.ckpt", num_classes=1000, normalization="imagenet",
        description="Salman et al. 2020 (MadryLab robustness): PGD adversarial training on ImageNet-1k, L2 eps 3.0 "
                    "(62.83% clean top-1 per its model card)",
    ),
}


def cache_dir() -> Path:
    """``$ROBUSTFT_CACHE`` if set, else the per-user cache directory for robustft."""
    if env := os.environ.get("ROBUSTFT_CACHE"):
        return Path(env)
    import platformdirs  # only needed when no cache directory is given

    return Path(platformdirs.user_cache_dir("robustft"))


def fetch_weights(name: str) -> Path:
    """Local path of the checkpoint for the ``arch.tag`` ``name``, downloading it into the cache the first time."""
    weights = KNOWN_WEIGHTS[name]
    path = cache_dir() / f"{name}{Path(weights.url).suffix}"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Downloads to a temporary file beside `path` and renames it, so an interrupted download leaves nothing.
        torch.hub.download_url_to_file(weights.url, str(path), progress=True)
    except OSError as err:  # includes urllib's URLError / HTTPError
        raise UserError(
            f"could not download the {name} weights from {weights.url} ({err}); "
            f"download that file yourself and place it at {path}"
        ) from err
    return path


MAX_CONFIG_BYTES = 16 << 20  # a timm config.json is a few kB, with 21k label names a few MB


@dataclass(frozen=True)
class HubConfig:
    """What a hub model directory's ``config.json`` says about its weights (timm ``save_config_for_hf``)."""

    num_classes: int | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    input_size: tuple[int, ...] | None


def _triple(cfg: dict[str, Any], key: str, kind: type | tuple[type, ...], file: Path) -> tuple | None:
    """``cfg[key]`` as a tuple of three numbers of ``kind``, None when absent; a UserError naming it if malformed."""
    value = cfg.get(key)
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 3
            and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)):
        raise UserError(f"{file} has a malformed {key!r}: {value!r} (expected 3 numbers); fix or delete that field")
    return tuple(value)


def read_hub_config(path: str | os.PathLike) -> HubConfig | None:
    """The ``config.json`` of the hub model directory ``path``; None when ``path`` is not one or has none.

    timm writes ``num_classes`` at the top and the preprocessing (``mean``, ``std``, ``input_size``) under
    ``pretrained_cfg``; older exports put everything at the top (timm ``_hub.py::_parse_model_cfg`` reads both).
    """
    file = Path(path) / "config.json"
    if not file.is_file():
        return None
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"{file} is larger than {MAX_CONFIG_BYTES >> 20} MB; this is not a model config")
    try:
        raw = json.loads(file.read_text(errors="replace"))
    except json.JSONDecodeError as err:
        raise UserError(f"{file} is not valid JSON ({err})") from None
    pre = raw.get("pretrained_cfg", raw) if isinstance(raw, dict) else None
    if not isinstance(pre, dict):
        raise UserError(f"{file} is not a timm model config (a JSON object with a 'pretrained_cfg' object)")
    num_classes = raw.get("num_classes", pre.get("num_classes"))
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                                    or num_classes < 0):
        raise UserError(f"{file} has a malformed 'num_classes': {num_classes!r}; fix or delete that field")
    return HubConfig(
        num_classes=num_classes or None,  # timm writes 0 for a model without a classifier
        mean=_triple(pre, "mean", (int, float), file),
        std=_triple(pre, "std", (int, float), file),
        input_size=_triple(pre, "input_size", int, file),
    )
