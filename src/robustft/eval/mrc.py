"""Module robust criticality (MRC, Zhu et al., ICCV 2023): how much the loss on fixed adversarial examples can rise
when one module's weight alone moves inside a relative ball, ‖Δw‖₂ ≤ ε‖w‖₂.

For every Conv2d/Linear weight w, projected gradient *ascent* on Δw (everything else fixed, the model in eval mode)
from Δw = 0: ``steps`` iterations of Δw ← Proj(Δw + lr·∇L(w + Δw)), L the mean cross-entropy over all examples
(a full-batch gradient, accumulated over chunks of ``batch_size``) — or, in the official regime (``minibatch``), of
one shuffled pass of SGD steps Δw ← Δw + lr·∇L_B over mini-batches B followed by one projection. Each iterate's loss
is evaluated; MRC(w) = max over the iterates, Δw = 0 included, of L(w + Δw) − L(w) ≥ 0.

Two implementations of exactly that procedure:

- ``reference``: the straightforward one, as the official code runs it — a full-model forward with the perturbed
  weight for every ascent step, and another full forward to evaluate each iterate.
- ``fast`` (default): only the chosen weight changes, so everything upstream of the module is constant. The model is
  traced once (torch.fx) and, per module, split into a *head* (computed once, no grad: the module's input and every
  other upstream value the rest of the network reads, e.g. a residual shortcut) and a *tail* (the module, called with
  the perturbed weight, and everything downstream). Ascent runs the tail only; in the tail every other conv→BN pair
  is folded into one convolution with constant weights (BN is in eval mode), and the forward of ascent step t+1 is
  also the evaluation of iterate t, so no separate evaluation pass is needed. A module the trace cannot isolate
  (untraceable model, a module called more than once) falls back to the reference procedure for that module; the
  profile says so.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..attacks import PGD, eval_mode
from ..data import ArrayDataset, iterate_batches, num_batches, subset_indices
from ..errors import UserError
from ..mrc_config import IMPLEMENTATIONS, MRC_DEFAULTS, MRCConfig
from ..progress import track
from ..schema import format_value
from .mrc_graph import NoSplit, Split, trace

__all__ = ["MRCProfile", "ModuleMRC", "mrc_profile", "mrc_scores", "mrc_examples", "examples_attack",
           "candidate_modules", "project_relative", "IMPLEMENTATIONS", "MRCConfig", "MRC_DEFAULTS"]

WEIGHT_TYPES = (nn.Conv2d, nn.Linear)


@dataclass
class ModuleMRC:
    """One module's result: MRC, the worst iterate's loss/accuracy, and the Δw that reached it."""

    name: str
    mrc: float
    max_loss: float
    acc_at_max: float
    best_step: int  # 0: no iterate raised the loss above the unperturbed one
    weight_norm: float
    delta_norm: float
    numel: int
    impl: str  # "fast", or "reference" (also when the fast path fell back)
    note: str = ""
    wall_s: float = 0.0
    delta: torch.Tensor | None = field(default=None, repr=False)


@dataclass
class MRCProfile:
    """Every module's MRC on one set of adversarial examples, in network (call) order."""

    n: int
    eps: float
    steps: int
    lr: float
    impl: str
    origin_loss: float
    origin_acc: float
    modules: list[ModuleMRC]
    wall_s: float = 0.0
    examples: dict[str, Any] = field(default_factory=dict)
    minibatch: int | None = None  # None: full-batch steps; N: the official regime's mini-batches of N

    @property
    def scores(self) -> dict[str, float]:
        """Module name → MRC."""
        return {m.name: m.mrc for m in self.modules}

    def ranking(self) -> list[str]:
        """Module names from least to most robust-critical (ties keep network order)."""
        return [m.name for m in sorted(self.modules, key=lambda m: m.mrc)]

    def lowest(self) -> str:
        """The non-robust-critical module: the lowest MRC (the earliest in network order on ties)."""
        return self.ranking()[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (Δw tensors left out)."""
        d = {k: v for k, v in asdict(self).items() if k != "modules"}
        d["modules"] = [{k: v for k, v in asdict(m).items() if k != "delta"} for m in self.modules]
        d["ranking"] = self.ranking()
        d["lowest"] = self.lowest() if self.modules else None
        return d

    def table(self) -> str:
        """A plain-text table in network order, the lowest MRC marked."""
        lowest = self.lowest() if self.modules else None
        width = max([len("module"), *(len(m.name) for m in self.modules)])
        lines = [f"{'module':<{width}}  {'MRC':>8}  {'max loss':>8}  {'acc drop':>8}  {'params':>9}  impl",
                 f"{'(unperturbed)':<{width}}  {'':>8}  {self.origin_loss:8.4f}  {'':>8}  {'':>9}"]
        for m in self.modules:
            mark = "  <- lowest" if m.name == lowest else ""
            lines.append(f"{m.name:<{width}}  {m.mrc:8.4f}  {m.max_loss:8.4f}  "
                         f"{100 * (self.origin_acc - m.acc_at_max):7.2f}%  {m.numel:9,d}  {m.impl}{mark}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------------
def project_relative(delta: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Scale ``delta`` back onto the ball ‖Δ‖₂ ≤ eps·‖w‖₂ when it lies outside (the official projection)."""
    radius = eps * weight.norm()
    norm = delta.norm()
    return delta * (radius / norm) if norm > radius else delta


def candidate_modules(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the Conv2d/Linear modules the forward of ``example`` calls, in call order (unused modules, such as
    the unused blocks some WideResNet files define, are left out)."""
    called: list[str] = []
    handles = [m.register_forward_hook(lambda mod, inp, out, n=name: called.append(n))
               for name, m in model.named_modules() if isinstance(m, WEIGHT_TYPES)]
    try:
        with torch.no_grad(), eval_mode(model) as bare:
            bare(example)
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(called))


def examples_attack(eps: float, steps: int, step_size: float) -> str:
    """How MRC examples are made, as a record states it: ``pgd10 linf 8/255 step 2/255``."""
    return f"pgd{steps} linf {format_value(eps)} step {format_value(step_size)}"


def mrc_examples(model: nn.Module, data: ArrayDataset, n: int | None = MRC_DEFAULTS.n, *,
                 eps: float = MRC_DEFAULTS.attack_eps, steps: int = MRC_DEFAULTS.attack_steps,
                 step_size: float = MRC_DEFAULTS.attack_step_size, seed: int = 0,
                 batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed adversarial examples MRC is measured on: PGD (L∞, random start; default PGD-10 ε 8/255 step 2/255)
    against ``model`` on ``n`` evenly spaced samples of ``data`` — pass a *training* split, never test."""
    if n is not None:
        data = data.subset(subset_indices(len(data), min(n, len(data))).to(data.y.device))
    attack = PGD(eps=eps, steps=steps, step_size=step_size, norm="linf", name="mrc_pgd")
    generator = torch.Generator(device=data.y.device).manual_seed(seed)
    xs, ys = [], []
    batches = iterate_batches(data, batch_size)
    for x, y in track(batches, num_batches(len(data), batch_size), f"mrc examples (pgd{steps})"):
        xs.append(attack.perturb(model, x, y, generator=generator).detach())
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def _chunks(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


Index = slice | torch.Tensor  # the examples of one forward: a slice, or the indices of a mini-batch's chunk


@torch.no_grad()
def _loss_and_correct(forward: Callable[[slice], torch.Tensor], y: torch.Tensor,
                      chunks: list[slice]) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``forward(chunk)`` over all chunks."""
    total, correct = 0.0, 0.0
    for s in chunks:
        logits = forward(s).float()
        total += F.cross_entropy(logits, y[s], reduction="sum").item()
        correct += (logits.argmax(1) == y[s]).sum().item()
    return total / len(y), correct / len(y)


def _gradient(forward: Callable[[torch.Tensor, Index], torch.Tensor], delta: torch.Tensor, y: torch.Tensor,
              parts: list[Index]) -> tuple[torch.Tensor, float, float]:
    """Gradient w.r.t. Δw of the mean cross-entropy over the examples of ``parts`` (chunks of one batch), with the
    summed loss and number correct of that forward."""
    d = delta.detach().requires_grad_(True)
    n = sum(len(y[i]) for i in parts)
    grad = torch.zeros_like(delta)
    loss_sum, correct = 0.0, 0.0
    for i in parts:
        logits = forward(d, i).float()
        loss = F.cross_entropy(logits, y[i], reduction="sum")
        (g,) = torch.autograd.grad(loss / n, d)
        grad += g
        loss_sum += loss.item()
        correct += (logits.argmax(1) == y[i]).sum().item()
    return grad, loss_sum, correct


def _minibatches(n: int, size: int, chunk: int, generator: torch.Generator, device: torch.device) -> list[list[Index]]:
    """One shuffled pass over ``range(n)`` in mini-batches of ``size`` (the last may be smaller, as a DataLoader
    without drop_last gives), each split into index chunks of at most ``chunk`` (memory only)."""
    order = torch.randperm(n, generator=generator).to(device)
    batches = []
    for i in range(0, n, size):
        batch = order[i:i + size]
        batches.append([batch[j:j + chunk] for j in range(0, len(batch), chunk)])
    return batches


def _ascend(weight: torch.Tensor, y: torch.Tensor, chunks: list[slice], eps: float, steps: int, lr: float,
            forward: Callable[[torch.Tensor, Index], torch.Tensor], origin: tuple[float, float],
            reuse_forward: bool, minibatch: int | None = None,
            seed: int = 0) -> tuple[float, float, int, torch.Tensor]:
    """Projected gradient ascent on Δw; returns (max loss, accuracy there, its step, its Δw) — Δw = 0 included.

    ``forward(delta, index)`` gives the logits of those examples with weight w + delta. Without ``minibatch``, each
    of the ``steps`` iterations is one full-batch gradient step followed by the projection; with ``reuse_forward``
    the loss of iterate t is taken from the (gradient) forward of step t+1, which evaluates exactly that iterate;
    otherwise each iterate is evaluated by a separate no-grad pass. With ``minibatch`` (the official regime), each
    iteration is one shuffled pass of plain SGD steps over mini-batches of that size, then one projection, then the
    evaluation of the projected iterate (shuffled by a generator seeded with ``seed``: the same order for every
    module).
    """
    n = len(y)
    delta = torch.zeros_like(weight)
    best = (origin[0], origin[1], 0, delta.clone())
    generator = torch.Generator().manual_seed(seed)
    chunk = chunks[0].stop - chunks[0].start
    pending: int | None = None  # iterate whose loss the next gradient forward will give (reuse_forward)
    for step in range(1, steps + 1):
        if minibatch is None:
            grad, loss_sum, correct = _gradient(forward, delta, y, list(chunks))
            if pending is not None and loss_sum / n > best[0]:
                best = (loss_sum / n, correct / n, pending, delta.clone())
            with torch.no_grad():
                delta = project_relative(delta + lr * grad, weight, eps)
        else:
            for parts in _minibatches(n, minibatch, chunk, generator, y.device):
                delta = delta + lr * _gradient(forward, delta, y, parts)[0]  # no projection inside the pass
            delta = project_relative(delta, weight, eps)
        if reuse_forward and minibatch is None:
            pending = step
            continue
        loss_t, acc_t = _loss_and_correct(lambda s, d=delta: forward(d, s), y, chunks)
        if loss_t > best[0]:
            best = (loss_t, acc_t, step, delta.clone())
    if pending is not None:  # the last iterate has no following step: evaluate it
        loss_t, acc_t = _loss_and_correct(lambda s: forward(delta, s), y, chunks)
        if loss_t > best[0]:
            best = (loss_t, acc_t, pending, delta.clone())
    return best


def mrc_profile(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, *, modules: Sequence[str] | None = None,
                eps: float = MRC_DEFAULTS.eps, steps: int = MRC_DEFAULTS.steps, lr: float = MRC_DEFAULTS.lr,
                batch_size: int = MRC_DEFAULTS.batch_size, impl: str = MRC_DEFAULTS.impl,
                minibatch: int | None = MRC_DEFAULTS.minibatch, seed: int = 0, keep_delta: bool = False,
                log: Callable[[str], None] | None = None) -> MRCProfile:
    """MRC of every Conv2d/Linear module (or of ``modules``) of ``model`` on fixed examples ``(x_adv, y)``.

    Defaults follow the official code: ε = 0.1 (relative), 10 ascent iterations of step (learning rate) 1 on the mean
    cross-entropy. Without ``minibatch`` an iteration is one full-batch gradient step and a projection; with
    ``minibatch`` (the official regime: 512) it is a shuffled pass of SGD steps over mini-batches of that size and
    then a projection (shuffled by ``seed``). ``batch_size`` only bounds memory. ``keep_delta`` stores each module's
    worst Δw in the result. The model's weights are never modified.
    """
    if impl not in IMPLEMENTATIONS:
        raise UserError(f"MRC implementation must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if eps <= 0 or steps < 1 or lr <= 0 or batch_size < 1 or (minibatch is not None and minibatch < 1):
        raise UserError(f"MRC needs eps > 0, steps >= 1, lr > 0, batch_size >= 1 and minibatch >= 1 (got {eps}, "
                        f"{steps}, {lr}, {batch_size}, {minibatch})")
    if len(y) == 0:
        raise UserError("MRC needs at least one example")
    start = time.perf_counter()
    with eval_mode(model) as bare, torch.enable_grad():
        names = candidate_modules(bare, x_adv[:1])
        if modules is not None:
            unknown = [m for m in modules if m not in names]
            if unknown:
                raise UserError(f"MRC modules {unknown} are not Conv2d/Linear modules the forward uses "
                                f"(examples: {', '.join(names[:4])}, ...)")
            names = [m for m in names if m in set(modules)]
        chunks = _chunks(len(y), batch_size)
        origin = _loss_and_correct(lambda s: bare(x_adv[s]), y, chunks)
        gm = trace(bare) if impl == "fast" else None
        named = dict(bare.named_modules())
        results = []
        for name in track(names, desc="mrc", unit="module"):
            t0 = time.perf_counter()
            result, note = None, ""
            if gm is not None:
                try:
                    result = _fast_module(gm, name, named[name], x_adv, y, chunks, eps, steps, lr, origin,
                                          minibatch, seed)
                except NoSplit as e:
                    note = f"fast path unavailable ({e}); reference procedure used"
            else:
                note = "" if impl == "reference" else "model does not trace with torch.fx; reference procedure used"
            if result is None:
                result = _reference_module(bare, name, named[name], x_adv, y, chunks, eps, steps, lr, origin,
                                           minibatch, seed)
                result.note = note
            if not keep_delta:
                result.delta = None
            result.wall_s = time.perf_counter() - t0
            results.append(result)
            if log is not None:
                log(f"MRC {name:<28} {result.mrc:8.4f}  ({result.impl}, {time.perf_counter() - t0:.1f} s)")
    return MRCProfile(n=len(y), eps=eps, steps=steps, lr=lr, impl=impl, origin_loss=origin[0], origin_acc=origin[1],
                      modules=results, wall_s=time.perf_counter() - start, minibatch=minibatch)


def mrc_scores(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> dict[str, float]:
    """Module name → MRC (see ``mrc_profile`` for the options)."""
    return mrc_profile(model, x_adv, y, **kwargs).scores


def _record(name: str, weight: torch.Tensor, best: tuple[float, float, int, torch.Tensor], origin: tuple[float, float],
            impl: str) -> ModuleMRC:
    """A ModuleMRC from the ascent's best iterate."""
    max_loss, acc, step, delta = best
    return ModuleMRC(name=name, mrc=max(max_loss - origin[0], 0.0), max_loss=max_loss, acc_at_max=acc,
                     best_step=step, weight_norm=weight.norm().item(), delta_norm=delta.norm().item(),
                     numel=weight.numel(), impl=impl, delta=delta)


def _reference_module(model: nn.Module, name: str, module: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      chunks: list[slice], eps: float, steps: int, lr: float, origin: tuple[float, float],
                      minibatch: int | None, seed: int) -> ModuleMRC:
    """The plain procedure: the whole model with the perturbed weight, for every ascent step and every evaluation."""
    weight = module.weight.detach()
    key = f"{name}.weight"

    def forward(delta: torch.Tensor, i: Index) -> torch.Tensor:
        return functional_call(model, {key: weight + delta}, (x[i],))

    best = _ascend(weight, y, chunks, eps, steps, lr, forward, origin, reuse_forward=False, minibatch=minibatch,
                   seed=seed)
    return _record(name, weight, best, origin, "reference")


def _fast_module(gm: torch.fx.GraphModule, name: str, module: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 chunks: list[slice], eps: float, steps: int, lr: float, origin: tuple[float, float],
                 minibatch: int | None, seed: int) -> ModuleMRC:
    """The tail-only procedure: the frontier computed once, ascent and evaluation through the downstream subgraph."""
    split = Split(gm, name)
    weight = module.weight.detach()
    with torch.no_grad():  # the frontier of every example, computed once (chunk by chunk)
        per_chunk = [split.head(x[s]) for s in chunks]
        frontier = [torch.cat(values) if isinstance(values[0], torch.Tensor) else values[0]
                    for values in zip(*per_chunk, strict=True)]
        del per_chunk

    def forward(delta: torch.Tensor, i: Index) -> torch.Tensor:
        return split.tail(weight + delta, *(v[i] if isinstance(v, torch.Tensor) else v for v in frontier))

    best = _ascend(weight, y, chunks, eps, steps, lr, forward, origin, reuse_forward=True, minibatch=minibatch,
                   seed=seed)
    return _record(name, weight, best, origin, "fast")
