"""Parameter-efficient layers attached by module type: LoRA (Hu et al. 2022) and residual bottleneck adapters.

Where they go:
- **LoRA** on transformers: the fused ``qkv`` projection of every ViT ``Attention`` / Swin ``WindowAttention``, with
  one low-rank update on the query rows and one on the value rows, none on the key rows (RoLI's q/v LoRA without
  splitting timm's fused layer, so checkpoint names stay timm's). On CNNs: every ``nn.Conv2d`` (stem, residual
  convolutions, 1x1 projection shortcuts; peft's conv LoRA: A is a conv with the base kernel/stride/padding, B a 1x1
  conv). The classifier is never wrapped: the methods train it whole.
- **Adapters** after every transformer ``Mlp`` (y = m(x) + up(GELU(down(m(x)))), inside the block's residual branch,
  RoLI's Pfeiffer placement) and after every residual block of a CNN (y = b(x) + up(GELU(down(b(x)))) with 1x1
  convs). Hidden width = width // reduction (at least 1).

Standard initializations, so an attached model computes exactly what it did before: LoRA A Kaiming-uniform and B zero,
adapter down-projection PyTorch's default (Kaiming-uniform) and up-projection zero. (RoLI's official code zeroes
both LoRA matrices and the adapter's down-projection, which leaves their gradients zero forever.)

Every wrapper keeps the original layer as ``base_layer`` (peft's convention). Trainable parameters are found by module
type, never by name, so a base-model module whose name happens to contain "lora" or "adapter" is never trained.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from ..models.preact_resnet import PreActBlock
from ..models.resnet import BasicBlock, Bottleneck
from ..models.swin import WindowAttention
from ..models.vision_transformer import Attention, Mlp
from ..models.wide_resnet import WideBasicBlock

__all__ = ["LoRALinear", "LoRAConv2d", "Adapter", "Adapted", "add_lora", "merge_lora", "add_adapters",
           "lora_layers", "adapter_modules", "bias_parameters", "FUSED_QKV_ATTENTION", "RESIDUAL_BLOCKS"]

# Attention modules whose ``qkv`` is one Linear producing [q | k | v] (timm layout).
FUSED_QKV_ATTENTION: tuple[type[nn.Module], ...] = (Attention, WindowAttention)
# Residual blocks of robustft's CNNs: an adapter follows each.
RESIDUAL_BLOCKS: tuple[type[nn.Module], ...] = (BasicBlock, Bottleneck, PreActBlock, WideBasicBlock)


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
    """``base_layer(x)`` plus, for each output slice [start, stop), ``scaling · B_i A_i dropout(x)`` on those rows.

    ``slices=None`` adapts the whole output (ordinary LoRA); ``((0, d), (2d, 3d))`` on a fused qkv adapts q and v.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float,
                 slices: tuple[tuple[int, int], ...] | None = None) -> None:
        super().__init__()
        self.base_layer = base
        self.slices = slices or ((0, base.out_features),)
        if any(not 0 <= a < b <= base.out_features for a, b in self.slices):
            raise UserError(f"LoRA output slices {self.slices} do not fit a layer with {base.out_features} outputs")
        self.scaling = alpha / rank
        self.lora_dropout = nn.Dropout(dropout)
        self.lora_A = nn.ModuleList(nn.Linear(base.in_features, rank, bias=False) for _ in self.slices)
        self.lora_B = nn.ModuleList(nn.Linear(rank, b - a, bias=False) for a, b in self.slices)
        for a_layer, b_layer in zip(self.lora_A, self.lora_B, strict=True):
            nn.init.kaiming_uniform_(a_layer.weight, a=math.sqrt(5))  # the LoRA paper's / peft's init
            nn.init.zeros_(b_layer.weight)
        _like(self.lora_A, base.weight)
        _like(self.lora_B, base.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Base output plus the zero-padded low-rank updates of the adapted slices."""
        out = self.base_layer(x)
        h = self.lora_dropout(x)
        n = out.shape[-1]
        for (start, stop), a_layer, b_layer in zip(self.slices, self.lora_A, self.lora_B, strict=True):
            out = out + F.pad(b_layer(a_layer(h)) * self.scaling, (start, n - stop))
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
    """``base_layer(x) + scaling · B(A(dropout(x)))``: A a conv with the base kernel, stride, padding and dilation into
    ``rank`` channels, B a 1x1 conv out of them, so B·A is a rank-``rank`` update of the base kernel."""

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        if base.groups != 1:
            raise UserError("LoRA on grouped/depthwise convolutions is not supported")
        self.base_layer = base
        self.scaling = alpha / rank
        self.lora_dropout = nn.Dropout(dropout)
        self.lora_A = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, base.dilation,
                                bias=False, padding_mode=base.padding_mode)
        self.lora_B = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        _like(self.lora_A, base.weight)
        _like(self.lora_B, base.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Base output plus the low-rank update."""
        return self.base_layer(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

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


def _replace(model: nn.Module, targets: list[tuple[str, nn.Module]], wrap) -> None:
    """Set each ``name`` in ``targets`` (dotted path to a submodule) to ``wrap(module)``."""
    for name, module in targets:
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, wrap(module))


def add_lora(model: nn.Module, rank: int, alpha: float, dropout: float) -> list[nn.Module]:
    """Attach LoRA (q/v of fused-qkv attention for transformers, else every Conv2d) in place; returns the wrappers.

    A model that already has LoRA layers is left as it is (preparing twice must not wrap the wrappers).
    """
    if existing := lora_layers(model):
        return existing
    attention = [(n, m) for n, m in model.named_modules() if isinstance(m, FUSED_QKV_ATTENTION)]
    if attention:
        qkv = [(f"{n}.qkv" if n else "qkv", m.qkv) for n, m in attention]

        def wrap(layer: nn.Linear) -> LoRALinear:
            d = layer.out_features // 3
            return LoRALinear(layer, rank, alpha, dropout, slices=((0, d), (2 * d, 3 * d)))  # q and v, not k

        _replace(model, qkv, wrap)
    else:
        convs = [(n, m) for n, m in model.named_modules() if type(m) is nn.Conv2d]
        if not convs:
            raise UserError(f"LoRA found no fused-qkv attention and no Conv2d in {type(model).__name__}")
        _replace(model, convs, lambda conv: LoRAConv2d(conv, rank, alpha, dropout))
    return lora_layers(model)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base layer and remove the wrappers: a plain model of the source architecture."""
    _replace(model, [(n, m) for n, m in model.named_modules() if isinstance(m, LORA_LAYERS)],
             lambda layer: layer.merged())
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


def _out_channels(block: nn.Module) -> int:
    """Output width of a residual block: every conv whose output reaches the block's output (the last conv of the
    residual branch, or the projection shortcut registered after it) has the block's width."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def add_adapters(model: nn.Module, reduction: int) -> list[Adapter]:
    """Attach an adapter after every transformer MLP, else after every CNN residual block; returns the adapters.

    A model that already has adapters is left as it is.
    """
    if existing := adapter_modules(model):
        return existing
    mlps = [(n, m) for n, m in model.named_modules() if isinstance(m, Mlp)]
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, RESIDUAL_BLOCKS)]
    if mlps:
        def wrap(mlp: Mlp) -> Adapted:
            dim = mlp.fc2.out_features
            return Adapted(mlp, _like(Adapter(dim, max(1, dim // reduction), conv=False), mlp.fc2.weight))

        _replace(model, mlps, wrap)
    elif blocks:
        def wrap(block: nn.Module) -> Adapted:
            ref = next(m for m in block.modules() if isinstance(m, nn.Conv2d)).weight
            dim = _out_channels(block)
            return Adapted(block, _like(Adapter(dim, max(1, dim // reduction), conv=True), ref))

        _replace(model, blocks, wrap)
    else:
        known = ", ".join(t.__name__ for t in RESIDUAL_BLOCKS)
        raise UserError(f"adapters need transformer MLPs or residual blocks ({known}); {type(model).__name__} has "
                        "neither")
    return adapter_modules(model)


# ---------------------------------------------------------------------------------------------------------------
# Bias tuning
# ---------------------------------------------------------------------------------------------------------------
def bias_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter a module registers under the name ``bias`` (convolutions, linears, norms), found by module
    structure: a Swin ``relative_position_bias_table`` is a position embedding, not a bias."""
    return [p for m in model.modules() if (p := dict(m.named_parameters(recurse=False)).get("bias")) is not None]
