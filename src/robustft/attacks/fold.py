"""Attack-time speed-up: an eval-mode view of a model in which every Conv2d→BatchNorm2d pair is one convolution (a
conv-like layer with an ``as_conv()`` hook, such as weight-space LoRA, folds the same way).

In eval mode a BN layer is a per-channel affine map, so it can be folded into the preceding convolution's weight and
bias. That removes the BN forward and backward passes (memory-bound, ~30% of a small ResNet's attack time on CPU)
from every attack iteration. The view shares the live modules: folded weights are recomputed from the current
parameters and running statistics at each call, so it never goes stale while the model trains. It is built once per
model structure (torch.fx trace) and is only valid in eval mode, which is how attacks run.
"""

import weakref

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

__all__ = ["folded_view"]

# value: (module-structure signature, folded GraphModule or None when the model has nothing to fold); the value never
# references the model itself, so the weak key can die
_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], nn.Module | None]]" = weakref.WeakKeyDictionary()


def eval_affine(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) of a normalization layer in eval mode, or None when it is not a foldable affine map."""
    if hasattr(module, "eval_affine"):  # e.g. a custom two-wing BN exposes the affine map its eval mode applies
        return module.eval_affine()
    if isinstance(module, nn.BatchNorm2d) and module.running_var is not None:
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.affine:
            scale = scale * module.weight
            return scale, module.bias - module.running_mean * scale
        return scale, -module.running_mean * scale
    return None


class _FoldedConv(nn.Module):
    """conv followed by an eval-mode affine norm, computed as a single convolution with folded weights."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module) -> None:
        super().__init__()
        self.conv, self.norm = conv, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One convolution; the folded weights are constants for the attack (no gradient to parameters)."""
        with torch.no_grad():
            conv, weight = _as_conv(self.conv)
            scale, shift = eval_affine(self.norm)
            weight = weight * scale.view(-1, 1, 1, 1)
            bias = shift if conv.bias is None else shift + conv.bias * scale
        if conv.padding_mode != "zeros":
            return conv._conv_forward(x, weight, bias)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _as_conv(module: nn.Module) -> tuple[nn.Conv2d, torch.Tensor]:
    """(conv whose hyper-parameters and bias apply, its kernel): a Conv2d itself, or a conv-like layer exposing
    ``as_conv()`` (e.g. LoRA applied in weight space)."""
    return module.as_conv() if hasattr(module, "as_conv") else (module, module.weight)


def _is_conv(module: nn.Module | None) -> bool:
    """A Conv2d, or a conv-like layer that exposes ``as_conv()``."""
    return isinstance(module, nn.Conv2d) or hasattr(module, "as_conv")


class _Tracer(torch.fx.Tracer):
    """Trace through containers only: any module that owns parameters or buffers itself stays a leaf."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (super().is_leaf_module(m, qualname) or _is_conv(m) or any(True for _ in m.parameters(recurse=False))
                or any(True for _ in m.buffers(recurse=False)))


def _build(model: nn.Module) -> nn.Module | None:
    """Trace ``model`` and fold its conv→norm pairs; None when nothing folds or tracing fails."""
    if not any(eval_affine(m) is not None for m in model.modules() if not _is_conv(m)):
        return None
    try:
        graph = _Tracer().trace(model)
    except Exception:  # dynamic control flow: attacks simply use the model as it is
        return None
    gm = torch.fx.GraphModule(model, graph)
    modules = dict(gm.named_modules())
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1:
            continue
        prev = node.args[0]
        if not (isinstance(prev, torch.fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                and _is_conv(modules.get(prev.target))):
            continue
        norm = modules[node.target]
        if eval_affine(norm) is None:
            continue
        name = f"folded_{folded}"
        gm.add_submodule(name, _FoldedConv(modules[prev.target], norm))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, prev.args, prev.kwargs)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        gm.graph.erase_node(prev)
        folded += 1
    if not folded:
        return None
    gm.graph.lint()
    gm.recompile()
    return gm


def folded_view(model: nn.Module) -> nn.Module:
    """The cached folded view of ``model`` (rebuilt when its module structure changes). Use in eval mode only."""
    signature = tuple(id(m) for m in model.modules())
    cached = _CACHE.get(model)
    if cached is None or cached[0] != signature:
        cached = (signature, _build(model))
        _CACHE[model] = cached
    return model if cached[1] is None else cached[1]
