"""Known robust checkpoints, addressed by timm-style ``arch.tag`` names, and their download cache."""

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from robustft.errors import UserError

__all__ = ["PretrainedWeights", "KNOWN_WEIGHTS", "cache_dir", "fetch_weights"]


@dataclass(frozen=True)
class PretrainedWeights:
    """Where a published checkpoint lives and what it expects."""

    url: str
    num_classes: int
    normalization: str
    description: str


_MADRY = "https://huggingface.co/madrylab/robust-imagenet-models/resolve/main"

# Tags follow timm's <recipe>_<data>; the first tag listed for an architecture is its default pretrained weights.
KNOWN_WEIGHTS: dict[str, PretrainedWeights] = {
    "resnet50.madry_linf4_in1k": PretrainedWeights(
        url=f"{_MADRY}/imagenet_linf_4.pt", num_classes=1000, normalization="imagenet",
        description="MadryLab robustness: PGD adversarial training on ImageNet-1k, Linf eps 4/255",
    ),
    "resnet50.madry_l2_3_in1k": PretrainedWeights(
        url=f"{_MADRY}/imagenet_l2_3_0.pt", num_classes=1000, normalization="imagenet",
        description="MadryLab robustness: PGD adversarial training on ImageNet-1k, L2 eps 3.0",
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
