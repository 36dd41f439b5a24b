"""Parameter-efficient layers attached by module type: LoRA (Hu et al. 2022) and residual bottleneck adapters.

Where they go is what the model declares in its ``pretrained_cfg`` (``ModelCfg.fused_qkv`` / ``adapter_points``, set
in each model file); this module names no architecture:
- **LoRA** on transformers: the fused qkv projection of every declared attention module (ViT ``Attention``, Swin
  ``WindowAttention``), with one low-rank update on the query rows and one on the value rows, none on the key rows
  (RoLI's q/v LoRA without splitting timm's fused layer, so checkpoint names stay timm's). On a model without such
  attention (CNNs): every ``nn.Conv2d`` (stem, residual convolutions, 1x1 projection shortcuts; peft's conv LoRA: A is
  a conv with the base kernel/stride/padding, B a 1x1 conv), applied as one conv with kernel W + s·BA. The classifier
  is never wrapped: the methods train it whole.
- **Adapters** after every declared adapter point: over tokens after a transformer ``Mlp`` (y = m(x) +
  up(GELU(down(m(x)))), inside the block's residual branch, RoLI's Pfeiffer placement), over channels with 1x1 convs
  after a CNN's residual block (y = b(x) + up(GELU(down(b(x))))). Hidden width = width // reduction (at least 1).

Standard initializations, so an attached model computes exactly what it did before: LoRA A Kaiming-uniform and B zero,
adapter down-projection PyTorch's default (Kaiming-uniform) and up-projection zero. (RoLI's official code zeroes
both LoRA matrices and the adapter's down-projection, which leaves their gradients zero forever.)

Every wrapper keeps the original layer as ``base_layer`` (peft's convention). Trainable parameters are found by module
type, never by name, so a base-model module whose name happens to contain "lora" or "adapter" is never trained.

A LoRA layer can be switched off (``active = False``, or ``lora_enabled(model, False)`` for a block): it then computes
its base layer alone, attacks included (AutoLoRa's plain-backbone path). ``remove_lora`` drops the wrappers unmerged.
"""

import contextlib
import math
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from ..models.base import AdapterPoint, FusedQKV, ImageClassifier

__all__ = ["LoRALinear", "LoRAConv2d", "Adapter", "Adapted", "add_lora", "merge_lora", "remove_lora", "lora_enabled",
           "lora_parameters", "add_adapters", "lora_layers", "adapter_modules", "bias_parameters"]

Point = FusedQKV | AdapterPoint


def _like(module: nn.Module, ref: Tensor) -> nn.Module:
    """``module`` on ``ref``'s device and dtype, 4-D weights in ``ref``'s memory format (channels_last stays)."""
    module = module.to(device=ref.device, dtype=ref.dtype)
    if ref.dim() == 4 and ref.is_contiguous(memory_format=torch.channels_last):
        module = module.to(memory_format=torch.channels_last)
    return module


# ---------------------------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------------------------
class LoRALinear(nn.Module):
    """``base_layer(x)`` plus, for each output slice [start, stop), ``scaling · B_i A_i x`` on those rows.

    ``slices=None`` adapts the whole output (ordinary LoRA); ``((0, d), (2d, 3d))`` on a fused qkv adapts q and v.
    """

    active: bool = True  # False: the base layer alone

    def __init__(self, base: nn.Linear, rank: int, alpha: float,
                 slices: tuple[tuple[int, int], ...] | None = None) -> None:
        super().__init__()
        self.base_layer = base
        self.slices = slices or ((0, base.out_features),)
        if any(not 0 <= a < b <= base.out_features for a, b in self.slices):
            raise UserError(f"LoRA output slices {self.slices} do not fit a layer with {base.out_features} outputs")
        self.scaling = alpha / rank
        self.lora_A = nn.ModuleList(nn.Linear(base.in_features, rank, bias=False) for _ in self.slices)
        self.lora_B = nn.ModuleList(nn.Linear(rank, b - a, bias=False) for a, b in self.slices)
        for a_layer, b_layer in zip(self.lora_A, self.lora_B, strict=True):
            nn.init.kaiming_uniform_(a_layer.weight, a=math.sqrt(5))  # the LoRA paper's / peft's init
            nn.init.zeros_(b_layer.weight)
        _like(self.lora_A, base.weight)
        _like(self.lora_B, base.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Base output plus the zero-padded low-rank updates of the adapted slices (none when inactive)."""
        out = self.base_layer(x)
        if not self.active:
            return out
        n = out.shape[-1]
        for (start, stop), a_layer, b_layer in zip(self.slices, self.lora_A, self.lora_B, strict=True):
            out = out + F.pad(b_layer(a_layer(x)) * self.scaling, (start, n - stop))
        return out

    def delta_weight(self) -> Tensor:
        """The [out, in] weight update the adapters add (zero outside the adapted slices)."""
        delta = torch.zeros_like(self.base_layer.weight)
        for (start, stop), a_layer, b_layer in zip(self.slices, self.lora_A, self.lora_B, strict=True):
            delta[start:stop] = (b_layer.weight @ a_layer.weight) * self.scaling
        return delta

    def merged(self) -> nn.Linear:
        """The base layer with the update added to its weight (same function in eval mode)."""
        with torch.no_grad():
            self.base_layer.weight += self.delta_weight()
        return self.base_layer


class LoRAConv2d(nn.Module):
    """The base convolution with kernel ``W + scaling · B·A``, applied in weight space: one convolution per pass
    (attacks and training pay for one conv, not three). A ``[rank, in, kh, kw]`` and B ``[out, rank, 1, 1]`` are
    stored as peft's conv LoRA stores them (A a conv with the base kernel into ``rank`` channels, B a 1x1 conv out of
    them), so B·A is a rank-``rank`` update of the base kernel and the two forms compute the same function."""

    active: bool = True  # False: the base convolution alone

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float) -> None:
        super().__init__()
        if base.groups != 1:
            raise UserError("LoRA on grouped/depthwise convolutions is not supported")
        self.base_layer = base
        self.scaling = alpha / rank
        self.lora_A = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, base.dilation,
                                bias=False, padding_mode=base.padding_mode)
        self.lora_B = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        _like(self.lora_A, base.weight)
        _like(self.lora_B, base.weight)

    def forward(self, x: Tensor) -> Tensor:
        """One convolution with the updated kernel."""
        conv, weight = self.as_conv()
        return conv._conv_forward(x, weight, conv.bias)

    def as_conv(self) -> tuple[nn.Conv2d, Tensor]:
        """(the base conv, whose stride, padding and bias apply; the updated kernel, or the base kernel when inactive):
        the hook through which attacks fold a following BN into this layer (``attacks.fold``)."""
        if not self.active:
            return self.base_layer, self.base_layer.weight
        return self.base_layer, self.base_layer.weight + self.delta_weight()

    def delta_weight(self) -> Tensor:
        """The kernel update: (B [out, r] @ A [r, in·kh·kw]) reshaped to the base kernel."""
        w = self.base_layer.weight
        return (self.lora_B.weight.flatten(1) @ self.lora_A.weight.flatten(1)).view(w.shape) * self.scaling

    def merged(self) -> nn.Conv2d:
        """The base conv with the update added to its kernel (same function in eval mode)."""
        with torch.no_grad():
            self.base_layer.weight += self.delta_weight()
        return self.base_layer


LORA_LAYERS = (LoRALinear, LoRAConv2d)


def lora_layers(model: nn.Module) -> list[nn.Module]:
    """The LoRA wrappers in ``model``."""
    return [m for m in model.modules() if isinstance(m, LORA_LAYERS)]


def _replace(model: nn.Module, replacements: list[tuple[str, nn.Module]]) -> None:
    """Set each submodule ``name`` (dotted path) of ``model`` to the module paired with it."""
    for name, module in replacements:
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, module)


def _declared(model: nn.Module, points: tuple[Point, ...]) -> list[tuple[str, nn.Module, Point]]:
    """``(name, module, point)`` for every submodule that is an instance of a declared point's type, in module order."""
    found = []
    for name, module in model.named_modules():
        if point := next((p for p in points if isinstance(module, p.module)), None):
            found.append((name, module, point))
    return found


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The A and B parameters of every LoRA layer in ``model`` (found by module type)."""
    return [p for m in lora_layers(model) for p in (*m.lora_A.parameters(), *m.lora_B.parameters())]


@contextlib.contextmanager
def lora_enabled(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, every LoRA layer of ``model`` is on (``enabled``) or off; afterwards as it was."""
    layers = lora_layers(model)
    before = [m.active for m in layers]
    for m in layers:
        m.active = enabled
    try:
        yield
    finally:
        for m, active in zip(layers, before, strict=True):
            m.active = active


def _block_convs(model: ImageClassifier) -> list[tuple[str, nn.Conv2d]]:
    """Every plain Conv2d inside a residual block the model declares (its channel ``adapter_points``): the block
    convolutions and projection shortcuts, not the stem."""
    blocks = [(n, m) for n, m, p in _declared(model, model.pretrained_cfg.adapter_points) if p.channels]
    if not blocks:
        raise UserError(f"LoRA on residual blocks: {type(model).__name__} declares no residual block (a channel "
                        f"adapter point in its ModelCfg); use every conv instead")
    return [(f"{name}.{n}", m) for name, block in blocks for n, m in block.named_modules() if type(m) is nn.Conv2d]


def add_lora(model: ImageClassifier, rank: int, alpha: float,
             convs: Literal["all", "blocks"] = "all") -> list[nn.Module]:
    """Attach LoRA (q/v of the model's declared fused-qkv attention, else Conv2d layers: every one, or with
    ``convs="blocks"`` those inside its declared residual blocks) in place; returns the wrappers.

    A model that already has LoRA layers is left as it is (preparing twice must not wrap the wrappers).
    """
    if existing := lora_layers(model):
        return existing
    if attention := _declared(model, model.pretrained_cfg.fused_qkv):
        def wrap(layer: nn.Linear) -> LoRALinear:
            d = layer.out_features // 3
            return LoRALinear(layer, rank, alpha, slices=((0, d), (2 * d, 3 * d)))  # q and v, not k

        _replace(model, [(f"{n}.{p.attr}" if n else p.attr, wrap(getattr(m, p.attr))) for n, m, p in attention])
    else:
        targets = (_block_convs(model) if convs == "blocks"
                   else [(n, m) for n, m in model.named_modules() if type(m) is nn.Conv2d])
        if not targets:
            raise UserError(f"LoRA found no fused-qkv attention and no Conv2d in {type(model).__name__}")
        _replace(model, [(n, LoRAConv2d(conv, rank, alpha)) for n, conv in targets])
    return lora_layers(model)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base layer and remove the wrappers: a plain model of the source architecture."""
    _replace(model, [(n, m.merged()) for n, m in model.named_modules() if isinstance(m, LORA_LAYERS)])
    return model


def remove_lora(model: nn.Module) -> nn.Module:
    """Drop every LoRA wrapper and its update, keeping the base layer as it is: a plain model of the source
    architecture that computes what the model computes with LoRA off."""
    _replace(model, [(n, m.base_layer) for n, m in model.named_modules() if isinstance(m, LORA_LAYERS)])
    return model


# ---------------------------------------------------------------------------------------------------------------
# Adapters
# ---------------------------------------------------------------------------------------------------------------
class Adapter(nn.Module):
    """Bottleneck ``up(act(down(h)))`` over the last dimension (tokens, Linear) or over channels (1x1 convs)."""

    def __init__(self, dim: int, hidden: int, conv: bool) -> None:
        super().__init__()
        layer = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
        self.down = layer(dim, hidden)
        self.act = nn.GELU()  # the official adapters' activation; smooth, so a 1-unit bottleneck cannot die
        self.up = layer(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        """The residual the adapter adds."""
        return self.up(self.act(self.down(h)))


class Adapted(nn.Module):
    """``base_layer`` followed by a residual adapter on its output: y = f(x) + adapter(f(x))."""

    def __init__(self, base: nn.Module, adapter: Adapter) -> None:
        super().__init__()
        self.base_layer = base
        self.adapter = adapter

    def forward(self, x: Tensor) -> Tensor:
        """f(x) + adapter(f(x))."""
        h = self.base_layer(x)
        return h + self.adapter(h)


def adapter_modules(model: nn.Module) -> list[Adapter]:
    """The adapters in ``model``."""
    return [m for m in model.modules() if isinstance(m, Adapter)]


def _adapted(module: nn.Module, channels: bool, reduction: int) -> Adapted:
    """``module`` followed by a fresh adapter over its output width: that of its last conv (``channels``) or Linear.

    Every layer whose output reaches the module's output (the last layer of a residual branch or MLP, or a projection
    shortcut registered after it) has that width. The adapter takes the first layer's device, dtype, memory format.
    """
    layers = [m for m in module.modules() if isinstance(m, nn.Conv2d if channels else nn.Linear)]
    dim = layers[-1].out_channels if channels else layers[-1].out_features
    return Adapted(module, _like(Adapter(dim, max(1, dim // reduction), conv=channels), layers[0].weight))


def add_adapters(model: ImageClassifier, reduction: int) -> list[Adapter]:
    """Attach an adapter after every module of the model's declared ``adapter_points``; returns the adapters.

    A model that already has adapters is left as it is.
    """
    if existing := adapter_modules(model):
        return existing
    points = model.pretrained_cfg.adapter_points
    if not (targets := _declared(model, points)):
        declared = ", ".join(p.module.__name__ for p in points) or "none declared"
        raise UserError(f"adapters: {type(model).__name__} has no module of its ModelCfg.adapter_points ({declared}) "
                        "to attach them after; declare them in its model file")
    _replace(model, [(n, _adapted(m, p.channels, reduction)) for n, m, p in targets])
    return adapter_modules(model)


# ---------------------------------------------------------------------------------------------------------------
# Bias tuning
# ---------------------------------------------------------------------------------------------------------------
def bias_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter a module registers under the name ``bias`` (convolutions, linears, norms), found by module
    structure: a Swin ``relative_position_bias_table`` is a position embedding, not a bias."""
    return [p for m in model.modules() if (p := dict(m.named_parameters(recurse=False)).get("bias")) is not None]
