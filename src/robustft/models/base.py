"""What every registered model shares: input normalization first, a named linear head, and a config record."""

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

from torch import Tensor, nn

from robustft.errors import UserError
from robustft.models.normalization import Normalize, NormSpec, resolve_normalization

__all__ = ["FusedQKV", "AdapterPoint", "CheckpointFilter", "NormSource", "ModelCfg", "ImageClassifier", "build_model"]


@dataclass(frozen=True)
class FusedQKV:
    """Attention modules of type ``module`` whose Linear ``attr`` computes [q | k | v] in equal thirds (timm's
    layout): LoRA adapts the q and v rows of that Linear."""

    module: type[nn.Module]
    attr: str = "qkv"


@dataclass(frozen=True)
class AdapterPoint:
    """Modules of type ``module`` get a residual adapter on their output: 1x1 convs over the channels of a
    [B, C, H, W] output (``channels=True``, CNN blocks) or Linears over the last dimension (tokens)."""

    module: type[nn.Module]
    channels: bool


# Where the statistics in a model's ``normalize`` buffers come from: the architecture's default, the caller's
# ``normalization``, the weights' own (their normalizer, their card, the published weights' entry), or the
# architecture's default assumed for weights that carry none (``load_weights`` says so in a warning line).
NormSource = Literal["default", "given", "checkpoint", "assumed"]

# timm's ``checkpoint_filter_fn(state_dict, model)``: a foreign checkpoint's keys -> this architecture's.
CheckpointFilter = Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]]


@dataclass(frozen=True)
class ModelCfg:
    """Facts about a model that callers need without inspecting it (timm's ``pretrained_cfg``)."""

    classifier: str  # attribute name of the linear head, e.g. "fc" or "linear"
    input_size: tuple[int, int, int]  # (C, H, W) the architecture was designed for
    normalization: str  # the architecture's default; the statistics in use live in the normalize buffers
    architecture: str = ""  # registered name, set by build_model
    # the constructor options it was built with (create_model), as (key, value) pairs: what a run records to rebuild it
    options: tuple[tuple[str, Any], ...] = ()
    tag: str | None = None  # pretrained-weight tag of "arch.tag" names, set by create_model
    normalization_source: NormSource = "default"  # set by ImageClassifier, create_model and load_weights
    # Checkpoint keys the reference implementation saves but never uses in forward (dropped when loading).
    unused_checkpoint_prefixes: tuple[str, ...] = ()
    # Maps timm/reference-code layouts of this architecture onto its keys (``load_checkpoint`` applies it), or refuses a
    # checkpoint whose keys fit variants of it that compute different outputs, naming the option that decides.
    checkpoint_filter: CheckpointFilter | None = None
    # Where parameter-efficient methods attach (methods/peft.py reads these and names no architecture). LoRA goes on
    # the fused qkv of these attention modules or, in a model that has none of them, on every plain ``nn.Conv2d``.
    fused_qkv: tuple[FusedQKV, ...] = ()
    adapter_points: tuple[AdapterPoint, ...] = ()  # an adapter after every module of these types


class ImageClassifier(nn.Module):
    """Base of every registered model: ``normalize`` first, ``forward_features`` to pooled features, a linear head."""

    def __init__(self, cfg: ModelCfg, normalization: NormSpec = None) -> None:
        super().__init__()
        self.pretrained_cfg = cfg if normalization is None else replace(cfg, normalization_source="given")
        # Registered before any layer, so it is the first submodule: inputs are normalized before anything else.
        spec = cfg.normalization if normalization is None else normalization
        self.normalize = Normalize(*resolve_normalization(spec))

    def forward_features(self, x: Tensor) -> Tensor:
        """Map images in [0, 1] of shape [B, 3, H, W] to pooled features [B, D] (the head's input)."""
        raise NotImplementedError

    def get_classifier(self) -> nn.Linear:
        """The linear head."""
        return getattr(self, self.pretrained_cfg.classifier)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a freshly initialized ``nn.Linear`` with ``num_classes`` outputs (same device/dtype)."""
        if num_classes < 1:
            raise UserError(f"num_classes must be at least 1, got {num_classes}")
        old = self.get_classifier()
        head = nn.Linear(old.in_features, num_classes, bias=old.bias is not None,
                         device=old.weight.device, dtype=old.weight.dtype)
        setattr(self, self.pretrained_cfg.classifier, head)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for images in [0, 1]."""
        return self.get_classifier()(self.forward_features(x))


Model = TypeVar("Model", bound=ImageClassifier)


def build_model(model_cls: type[Model], variant: str, **kwargs) -> Model:
    """Instantiate ``model_cls(**kwargs)`` and record the registered ``variant`` name in its config."""
    model = model_cls(**kwargs)
    model.pretrained_cfg = replace(model.pretrained_cfg, architecture=variant)
    return model
