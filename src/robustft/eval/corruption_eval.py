"""Which corruptions and severities to test (``parse_corruptions``, ``parse_severities``) and a model's accuracy under
them (``evaluate_corruptions``): generated on the fly (``corruptions``) or read from published CIFAR-10-C files."""

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..data import ArrayDataset, subset_indices
from ..errors import UserError, shown
from ..progress import track
from .corruptions import APPROXIMATE, CIFAR_C_BENCHMARK, CORRUPTIONS, SEVERITIES, corrupt_dataset, unknown_corruption
from .evaluate import evaluate

__all__ = ["parse_corruptions", "parse_severities", "CorruptionResult", "evaluate_corruptions"]


def parse_corruptions(spec: str | Sequence[str], available: Sequence[str] | None = None) -> list[str]:
    """``all``, ``benchmark`` (CIFAR-10-C's 15, whose mean is the benchmark's) or comma-separated names (a string or
    a list) → list of names, checked against ``available`` (default: every generated one)."""
    available = list(CORRUPTIONS) if available is None else list(available)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (s.strip() for s in items):
        if not item:
            continue
        if item == "all":
            names.extend(available)
        elif item == "benchmark":
            names.extend(x for x in CIFAR_C_BENCHMARK if x in available)
        elif item in available:
            names.append(item)
        else:
            raise UserError(unknown_corruption(item) if available == list(CORRUPTIONS) else
                            f"corruption {item!r} is not available here (available: {', '.join(available)})")
    if not names:
        raise UserError("no corruption named: pass all or a comma-separated list")
    return list(dict.fromkeys(names))


def parse_severities(spec: str | int | Sequence[int]) -> list[int]:
    """``all``, ``3``, ``1-5``, ``1,3,5`` (or ints) → sorted severities in 1..5."""
    if isinstance(spec, int):
        items: list[int] = [spec]
    elif isinstance(spec, str):
        items = []
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            if part == "all":
                items.extend(SEVERITIES)
            elif "-" in part:
                lo, _, hi = part.partition("-")
                try:
                    items.extend(range(int(lo), int(hi) + 1))
                except ValueError:
                    raise UserError(f"bad severity range {part!r}: use e.g. 1-5") from None
            else:
                try:
                    items.append(int(part))
                except ValueError:
                    raise UserError(f"bad severity {part!r}: use all, a number 1-5, a range 1-5 or a list") from None
    else:
        items = [int(s) for s in spec]
    if not items or any(s not in SEVERITIES for s in items):
        raise UserError(f"corruption severities must be in 1..5, got {shown(spec)}")
    return sorted(set(items))


@dataclass
class CorruptionResult:
    """Accuracy per corruption and severity (fractions), the per-corruption mean over severities, and the mean over
    corruptions (the CIFAR-C convention: the plain mean of every (corruption, severity) accuracy)."""

    n: int
    severities: list[int]
    accuracy: dict[str, dict[int, float]]
    mean_per_corruption: dict[str, float]
    mean: float
    source: str
    seed: int
    timing_s: float
    approximate: list[str] = field(default_factory=list)
    flags: dict[str, str] = field(default_factory=dict)  # "name/severity" -> per-image '0'/'1' (not in to_dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (severity keys as strings; the per-image flags are left to the samples file)."""
        d = asdict(self)
        del d["flags"]
        d["accuracy"] = {k: {str(s): a for s, a in v.items()} for k, v in self.accuracy.items()}
        return d

    def table(self) -> str:
        """Plain-text table: one row per corruption, one column per severity, then the mean."""
        width = max(len("corruption"), *(len(k) for k in self.accuracy))
        head = f"{'corruption':<{width}}  " + "  ".join(f"s{s:<5}" for s in self.severities) + "  mean"
        rows = [f"{k:<{width}}  " + "  ".join(f"{100 * v[s]:5.1f}%" for s in self.severities)
                + f"  {100 * self.mean_per_corruption[k]:5.1f}%" for k, v in self.accuracy.items()]
        return "\n".join([head, *rows, f"{'mean':<{width}}  " + "  ".join(" " * 6 for _ in self.severities)
                          + f"  {100 * self.mean:5.1f}%"])


def evaluate_corruptions(model: nn.Module, data: ArrayDataset | None, names: Sequence[str] | str = "all",
                         severities: Sequence[int] | str | int = "all", *, seed: int = 0, batch_size: int = 256,
                         channels_last: bool = False, corruption_dir: str | Path | None = None,
                         n: int | None = None, progress: bool = True) -> CorruptionResult:
    """Clean accuracy of ``model`` on corrupted copies of ``data`` (generated, seed per corruption and severity),
    or on the published files in ``corruption_dir`` (CIFAR-10-C layout; ``data`` is then only used for its class
    names and may be None). ``n`` keeps ``n`` evenly spaced images (per severity for the published files).
    ``progress`` reports per corruption and severity."""
    from ..data.cifar_c import available_corruptions, load_corrupted

    start = time.perf_counter()
    sevs = parse_severities(severities)
    if corruption_dir is not None:
        chosen = parse_corruptions(names, available_corruptions(corruption_dir))
    else:
        if data is None:
            raise UserError("evaluate_corruptions needs data to corrupt (or corruption_dir)")
        chosen = parse_corruptions(names)
        if n is not None:
            data = data.subset(subset_indices(len(data), min(n, len(data))).to(data.y.device))
    device = next(model.parameters()).device
    accuracy: dict[str, dict[int, float]] = {name: {} for name in chosen}
    flags: dict[str, str] = {}
    count = 0
    sets = [(i, name, s) for i, name in enumerate(chosen) for s in sevs]
    for i, name, s in track(sets, desc="corruptions", unit="set", enabled=progress):
        if corruption_dir is not None:
            corrupted = load_corrupted(corruption_dir, name, s, n=n,
                                       classes=data.classes if data is not None else None).to(device)
        else:
            corrupted = corrupt_dataset(data, name, s, seed=seed * 1000 + 10 * i + s)
        res = evaluate(model, corrupted, [], batch_size=batch_size, seed=seed, channels_last=channels_last,
                       progress=False)
        accuracy[name][s] = res.clean_acc
        flags[f"{name}/{s}"] = res.flags()["clean"]
        count = res.n
    per = {k: sum(v.values()) / len(v) for k, v in accuracy.items()}
    mean = sum(per.values()) / len(per)
    source = (str(corruption_dir) if corruption_dir is not None
              else "generated: robustft.eval.corruptions (make_cifar_c.py parameters)")
    return CorruptionResult(n=count, severities=sevs, accuracy=accuracy, mean_per_corruption=per, mean=mean,
                            source=source, seed=seed, timing_s=time.perf_counter() - start,
                            approximate=[k for k in chosen if k in APPROXIMATE and corruption_dir is None],
                            flags=flags)
