"""Architectures, the model registry, input normalization and checkpoint I/O.

Every model takes RGB in [0, 1], normalizes it with its first submodule (``normalize``), and exposes
``get_classifier()`` / ``reset_classifier(n)`` and a ``pretrained_cfg`` (:class:`ModelCfg`).
"""

# Importing the architecture modules registers their constructors.
from robustft.models import preact_resnet, resnet, swin, vision_transformer, wide_resnet  # noqa: F401
from robustft.models.base import AdapterPoint, FusedQKV, ImageClassifier, ModelCfg
from robustft.models.checkpoint import (
    LoadResult,
    load_classifier,
    load_state_dict_into,
    load_weights,
    read_state_dict,
    read_timm_checkpoint,
    save_state_dict,
    write_state_dict,
)
from robustft.models.hub import KNOWN_WEIGHTS, HubConfig, cache_dir, read_hub_config
from robustft.models.layouts import from_timm_layout, unwrap_state_dict
from robustft.models.normalization import (
    NORMALIZATIONS,
    Normalize,
    NormSpec,
    describe_normalization,
    resolve_normalization,
    set_normalization,
)
from robustft.models.registry import create_model, list_models, load_checkpoint, register_model

__all__ = [
    "AdapterPoint",
    "FusedQKV",
    "ImageClassifier",
    "ModelCfg",
    "LoadResult",
    "load_classifier",
    "load_state_dict_into",
    "load_weights",
    "read_state_dict",
    "save_state_dict",
    "write_state_dict",
    "unwrap_state_dict",
    "KNOWN_WEIGHTS",
    "HubConfig",
    "cache_dir",
    "read_hub_config",
    "NORMALIZATIONS",
    "Normalize",
    "NormSpec",
    "describe_normalization",
    "resolve_normalization",
    "set_normalization",
    "create_model",
    "list_models",
    "load_checkpoint",
    "register_model",
    "from_timm_layout",
    "read_timm_checkpoint",
]
