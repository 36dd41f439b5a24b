"""MRC's fast path, the downstream subgraph of one module: the model traced once (torch.fx) and split at a module
into a head computed once and a tail run with the perturbed weight, conv→BN pairs of the tail folded (see ``mrc``)."""

from typing import Any

import torch
import torch.fx
from torch import nn
from torch.func import functional_call

from ..attacks.fold import eval_affine

__all__ = ["Split", "NoSplit", "trace"]


class _Tracer(torch.fx.Tracer):
    """Trace through containers; a module owning parameters or buffers stays one call (so it can be targeted)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (super().is_leaf_module(m, qualname) or any(True for _ in m.parameters(recurse=False))
                or any(True for _ in m.buffers(recurse=False)))


class _WithWeight(nn.Module):
    """Calls ``module`` with its weight replaced by a given tensor (and its following eval-mode BN folded in, when
    there is one): the only differentiable step of the tail."""

    def __init__(self, module: nn.Module, norm: nn.Module | None) -> None:
        super().__init__()
        self.module, self.norm = module, norm

    def forward(self, weight: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.norm is None:
            return functional_call(self.module, {"weight": weight}, args, kwargs)
        scale, shift = eval_affine(self.norm)
        conv: nn.Conv2d = self.module
        bias = shift if conv.bias is None else shift + conv.bias * scale
        return conv._conv_forward(args[0], weight * scale.view(-1, 1, 1, 1), bias)


class _ConstFoldedConv(nn.Module):
    """conv → eval-mode BN as one convolution whose folded weight and bias are computed once (they are constants
    while MRC runs)."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module) -> None:
        super().__init__()
        with torch.no_grad():
            scale, shift = eval_affine(norm)
            self.register_buffer("weight", conv.weight * scale.view(-1, 1, 1, 1))
            self.register_buffer("bias", shift if conv.bias is None else shift + conv.bias * scale)
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv._conv_forward(x, self.weight, self.bias)


def _foldable_norm(node: torch.fx.Node, modules: dict[str, nn.Module]) -> torch.fx.Node | None:
    """The BN node that is the only user of conv ``node`` and folds into it, else None."""
    if not isinstance(modules.get(node.target), nn.Conv2d) or len(node.users) != 1 or len(node.args) != 1 \
            or node.kwargs:
        return None
    (user,) = node.users
    if user.op == "call_module" and len(user.args) == 1 and not user.kwargs \
            and eval_affine(modules.get(user.target)) is not None:
        return user
    return None


class Split:
    """A traced model cut at one module: ``head(x)`` → the frontier values, ``tail(weight, *frontier)`` → logits."""

    def __init__(self, gm: torch.fx.GraphModule, target: str) -> None:
        modules = dict(gm.named_modules())
        nodes = list(gm.graph.nodes)
        calls = [n for n in nodes if n.op == "call_module" and n.target == target]
        if len(calls) != 1:
            raise NoSplit(f"called {len(calls)} times in the traced graph")
        start = calls[0]
        downstream = {start}
        for n in nodes:  # topological order: a node is downstream when any input is
            if any(a in downstream for a in n.all_input_nodes):
                downstream.add(n)
        frontier = list(dict.fromkeys(a for n in nodes if n in downstream for a in n.all_input_nodes
                                      if a not in downstream))
        # head: every upstream node, returning the frontier
        head = torch.fx.Graph()
        env: dict[torch.fx.Node, torch.fx.Node] = {}
        for n in nodes:
            if n not in downstream and n.op != "output":
                env[n] = head.node_copy(n, lambda a: env[a])
        head.output(tuple(env[f] for f in frontier))
        self.head = torch.fx.GraphModule(gm, head)
        self.head.graph.eliminate_dead_code()
        self.head.recompile()
        # tail: the module (perturbed weight, own BN folded in) and everything downstream, other conv→BN folded
        tail = torch.fx.Graph()
        root: dict[str, Any] = {}
        weight = tail.placeholder("weight")
        env = {f: tail.placeholder(f"frontier_{i}") for i, f in enumerate(frontier)}
        skip: set[torch.fx.Node] = set()
        for n in nodes:
            if n not in downstream or n in skip:
                continue
            norm = _foldable_norm(n, modules) if n.op == "call_module" else None
            if n is start:
                root["mrc_target"] = _WithWeight(modules[target], modules[norm.target] if norm else None)
                out = tail.call_module("mrc_target", (weight, *torch.fx.map_arg(n.args, lambda a: env[a])),
                                       torch.fx.map_arg(n.kwargs, lambda a: env[a]))
            elif norm is not None:
                name = f"folded_{len(root)}"
                root[name] = _ConstFoldedConv(modules[n.target], modules[norm.target])
                out = tail.call_module(name, (env[n.args[0]],))
            else:
                out = tail.node_copy(n, lambda a: env[a])
                if n.op in ("call_module", "get_attr"):
                    root[n.target] = modules[n.target] if n.op == "call_module" else _fetch(gm, n.target)
            env[n] = out
            if norm is not None:
                env[norm] = out
                skip.add(norm)
        self.tail = torch.fx.GraphModule(root, tail)


class NoSplit(Exception):
    """The traced graph cannot isolate a module (the fast path falls back to the reference one)."""


def _fetch(gm: nn.Module, target: str) -> Any:
    """The attribute a ``get_attr`` node names."""
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def trace(model: nn.Module) -> torch.fx.GraphModule | None:
    """fx trace of ``model`` with parameterized modules as leaves; None when the model does not trace."""
    try:
        return torch.fx.GraphModule(model, _Tracer().trace(model))
    except Exception:  # dynamic control flow: every module uses the reference procedure
        return None


# ---------------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------------
