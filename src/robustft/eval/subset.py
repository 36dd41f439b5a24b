"""AutoAttack (optionally after PGD) on a class-balanced test subset, cached as JSON: the one implementation that runs
and benchmark protocols share (AutoAttack dominates an evaluation's cost, so a finished record is never redone)."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from .._io import atomic_write_json
from ..attacks import create_attack
from ..data import ArrayDataset
from ..errors import UserError
from .evaluate import _describe, balanced_subset
from .sharded import evaluate_sharded

__all__ = ["subset_autoattack"]


def subset_autoattack(load: Callable[[], tuple[nn.Module, ArrayDataset]], n: int, *, eps: float, norm: str = "linf",
                      steps: int = 20, seed: int = 0, version: str = "standard", attacks: list[str] | None = None,
                      with_pgd: bool = True, batch_size: int = 256, channels_last: bool = False,
                      path: str | Path | None = None) -> dict[str, Any]:
    """PGD-``steps`` (with ``with_pgd``) then AutoAttack ``version`` on ``balanced_subset(test, n)``, as an
    ``EvalResult.to_dict()`` record plus its per-image flags (``samples``). ``load()`` gives the model (on the data's
    device) and the test split; it is called only when the record is not cached at ``path`` (written atomically; an
    existing file is returned as is, after checking it was made with the same subset size and attacks). In a
    torchrun job, AutoAttack alone (``with_pgd=False``) is sharded over the ranks, with one process's result."""
    options = dict(eps=eps, norm=norm, steps=steps, seed=seed)
    chain = [create_attack("pgd", **options)] if with_pgd else []
    chain.append(create_attack("autoattack", aa_version=version, aa_attacks=attacks, **options))
    if path is not None and Path(path).is_file():
        record = json.loads(Path(path).read_text())
        wanted = json.loads(json.dumps({a.name: _describe(a) for a in chain}))
        if record.get("n") != n or record.get("attacks") != wanted:
            raise UserError(f"{path} holds an evaluation with other settings (n={record.get('n')}, attacks "
                            f"{sorted(record.get('attacks') or {})}) than asked for (n={n}, {sorted(wanted)}); "
                            f"delete it to recompute")
        return record
    model, test = load()
    result = evaluate_sharded(model, balanced_subset(test, n), chain, batch_size=batch_size, seed=seed,
                              channels_last=channels_last)
    record = {**result.to_dict(), "samples": result.flags()}
    if path is not None:
        atomic_write_json(record, path)
    return record
