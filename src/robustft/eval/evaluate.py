"""Clean, per-attack and per-sample worst-case accuracy of a model on a dataset."""

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import torch
from torch import nn

from ..attacks import Attack, eval_mode
from ..data import ArrayDataset, iterate_batches, num_batches
from ..errors import UserError
from ..progress import track
from ..runtime import full_fp32

__all__ = ["EvalResult", "evaluate", "num_outputs", "balanced_subset"]


@dataclass
class EvalResult:
    """Accuracies as fractions, seconds per stage in ``timing``; ``correct`` holds per-sample flags;
    ``class_mean_acc`` per key (clean, each attack, worst_case) the mean over the classes present of each class's
    accuracy (equal to the plain accuracy on a balanced test set; an unbalanced one, e.g. GTSRB's, needs both)."""

    n: int
    clean_acc: float
    robust_acc: dict[str, float]
    worst_case_acc: float
    timing: dict[str, float]
    attacks: dict[str, dict[str, Any]]
    correct: dict[str, torch.Tensor] = field(repr=False)
    class_mean_acc: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (per-sample flags left out)."""
        d = {k: v for k, v in asdict(self).items() if k != "correct"}
        for key in ("eps", "norm"):  # one value when every attack shares it (the usual case), else per attack
            values = {k: a.get(key) for k, a in self.attacks.items()}
            d[key] = next(iter(values.values())) if len(set(values.values())) == 1 else values
        d["images_per_s"] = self.n / self.timing["total"] if self.timing["total"] > 0 else None
        return d

    def flags(self) -> dict[str, str]:
        """Per-sample correctness as one '0'/'1' string per key (clean, each attack, worst_case), in data order:
        what paired comparisons of two models on the same images need."""
        return {k: "".join("1" if b else "0" for b in v.tolist()) for k, v in self.correct.items()}


def _describe(attack: Attack) -> dict[str, Any]:
    """An attack's settings as a plain dict."""
    return {k: v for k, v in asdict(attack).items() if k != "name"} if is_dataclass(attack) else {}


def evaluate(model: nn.Module, data: ArrayDataset, attacks: Sequence[Attack] = (), *, batch_size: int = 256,
             seed: int = 0, channels_last: bool = False, progress: bool = True) -> EvalResult:
    """Evaluate ``model`` (in eval mode, fp32: ``full_fp32`` whatever the caller's context) on ``data``, which must
    already sit on the model's device.

    Attacks run only on clean-correct samples (a misclassified sample is already non-robust), so every per-attack
    accuracy counts clean mistakes too; ``worst_case_acc`` is correct under clean input and every attack at once.
    ``progress`` reports per batch (a bar on a terminal, a line every ``ROBUSTFT_PROGRESS_S`` seconds elsewhere).
    """
    names = [a.name for a in attacks]
    if len(set(names)) != len(names):
        raise ValueError(f"attack names must be unique, got {names}")
    generator = torch.Generator(device=data.y.device).manual_seed(seed)
    correct: dict[str, list[torch.Tensor]] = {k: [] for k in ["clean", *names]}
    timing = {k: 0.0 for k in ["clean", *names]}
    start = time.perf_counter()
    batches = iterate_batches(data, batch_size, channels_last=channels_last)
    # reduced-precision logits and gradients can weaken an attack: every reported number is fp32
    with eval_mode(model), full_fp32():
        for x, y in track(batches, num_batches(len(data), batch_size), "evaluate " + "+".join(["clean", *names]),
                          enabled=progress):
            t = time.perf_counter()
            with torch.no_grad():
                ok = model(x).argmax(1) == y
            timing["clean"] += time.perf_counter() - t
            correct["clean"].append(ok)
            idx = ok.nonzero().squeeze(1)
            for attack in attacks:
                t = time.perf_counter()
                robust = torch.zeros_like(ok)
                if len(idx):
                    x_adv = attack.perturb(model, x[idx], y[idx], generator=generator)
                    with torch.no_grad():
                        robust[idx] = model(x_adv).argmax(1) == y[idx]
                correct[attack.name].append(robust)
                timing[attack.name] += time.perf_counter() - t
    flags = {k: torch.cat(v).cpu() if v else torch.zeros(0, dtype=torch.bool) for k, v in correct.items()}
    worst = flags["clean"].clone()
    for name in names:
        worst &= flags[name]
    flags["worst_case"] = worst
    n = len(data)
    acc = {k: v.float().mean().item() if n else float("nan") for k, v in flags.items()}
    labels = data.y.cpu()
    present = torch.bincount(labels, minlength=data.num_classes) > 0
    counts = torch.bincount(labels, minlength=data.num_classes)[present]
    class_mean = {k: (torch.bincount(labels, weights=v.double(), minlength=data.num_classes)[present] / counts)
                  .mean().item() if n else float("nan") for k, v in flags.items()}
    timing["total"] = time.perf_counter() - start
    return EvalResult(n=n, clean_acc=acc["clean"], robust_acc={k: acc[k] for k in names},
                      worst_case_acc=acc["worst_case"], timing=timing,
                      attacks={a.name: _describe(a) for a in attacks}, correct=flags, class_mean_acc=class_mean)


def num_outputs(model: nn.Module, data: ArrayDataset) -> int:
    """How many logits ``model`` gives for an image of ``data`` (one eval-mode forward of its first image)."""
    with eval_mode(model) as bare, torch.no_grad():
        return bare(next(iterate_batches(data, 1))[0]).shape[-1]


def balanced_subset(data: ArrayDataset, n: int) -> ArrayDataset:
    """A deterministic class-balanced subset: the first ⌊n/C⌋ images of every class in canonical order (one more
    for the first n mod C classes), kept in canonical order — for AutoAttack on a budget."""
    counts = torch.bincount(data.y.cpu(), minlength=data.num_classes)
    present = (counts > 0).nonzero().squeeze(1)
    per_class = torch.full((data.num_classes,), 0, dtype=torch.int64)
    per_class[present] = n // len(present)
    per_class[present[: n % len(present)]] += 1
    if (per_class > counts).any():
        raise UserError(f"cannot take {n} class-balanced images: some class has fewer than {per_class.max()} images")
    y = data.y.cpu()
    rank_in_class = torch.zeros_like(y)
    for c in present.tolist():  # per class, not per sample
        idx = (y == c).nonzero().squeeze(1)
        rank_in_class[idx] = torch.arange(len(idx))
    keep = (rank_in_class < per_class[y]).nonzero().squeeze(1)
    return data.subset(keep.to(data.y.device))
