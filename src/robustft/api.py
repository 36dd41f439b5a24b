"""The verbs ``import robustft`` offers a notebook: create or load a model, load data, fine-tune with a method,
evaluate with attacks, compare finished runs. Each is a thin, typed layer over the library the CLI calls; ``finetune``
and ``evaluate`` take any ``nn.Module`` that maps images in [0,1] to logits where the method allows it.
"""

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from .attacks import Attack, create_attack
from .card import load_exported_model as load_model
from .data import ArrayDataset, load_dataset
from .errors import UserError
from .eval import EvalResult, num_outputs
from .eval import evaluate as _evaluate
from .methods import list_methods
from .models import create_model, list_models
from .report import Comparison, compare_runs

if TYPE_CHECKING:  # the training engine is imported by finetune, so loading a model never imports it
    from .engine import RunConfig

__all__ = ["create_model", "load_model", "list_models", "list_methods", "load_dataset", "create_attack", "finetune",
           "FinetuneResult", "evaluate", "compare_runs", "Comparison"]


@dataclass
class FinetuneResult:
    """A finished run: its exported model (rebuilt, on the CPU or the given module's device), its ``results.json``
    and its run directory."""

    model: nn.Module
    results: dict[str, Any]
    run_dir: Path


def finetune(model: nn.Module | None = None, data: str | os.PathLike | None = None, /, *, method: str | None = None,
             config: "RunConfig | str | os.PathLike | None" = None, run_dir: str | os.PathLike | None = None,
             resume: bool = False, log: Callable[[str], None] = print, **overrides: Any) -> FinetuneResult:
    """Fine-tune ``model`` (a copy: yours stays as it is; None: the config's ``model.arch`` / ``model.checkpoint``)
    on dataset ``data`` (a name or path, as ``load_dataset`` takes) with ``method``, into ``run_dir`` (default
    ``<train.out_dir>/<train.name>``), exactly as ``robustft finetune`` does.

    ``config``: a RunConfig or YAML file to start from (default: every key's default). ``overrides``: the CLI's
    shortcuts (``epochs=1``, ``seed=0``, ``name="run"``, ``arch=``, ``checkpoint=``, ...), a section given a mapping of
    its keys (``data={"train_n": 64}``, ``optim={"lr": 0.01}``, ``method_args={...}``) or dotted keys
    (``**{"optim.lr": 0.01}``).
    """
    from .engine import RunConfig, default_run_dir, load_config, load_run_model, run
    from .engine.config import keyword_overrides, with_keys

    if isinstance(data, ArrayDataset):
        raise UserError("finetune reads the train, val and test splits itself: pass the dataset as load_dataset takes "
                        "it (a name or a path), not a loaded split")
    base = config if isinstance(config, RunConfig) else load_config(config)
    given = keyword_overrides({k: v for k, v in (("method", method), ("data", data)) if v is not None})
    cfg = with_keys(base, given | keyword_overrides(overrides))  # data={...} sets keys beside the positional data
    directory = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    results = run(cfg, run_dir=directory, resume=resume, log=log, model=model)
    return FinetuneResult(load_run_model(directory, model), results, directory)


def evaluate(model: nn.Module, data: ArrayDataset, attacks: Sequence[str | Attack] = ("pgd",), *,
             eps: float | str = 8 / 255, norm: str = "linf", steps: int = 20, batch_size: int = 256, seed: int = 0,
             progress: bool = True) -> EvalResult:
    """Clean, per-attack and worst-case accuracy of any ``nn.Module`` mapping images in [0,1] to logits, on its
    device: attacks by name (``create_attack`` with ``eps``, ``norm``, ``steps``, ``seed``) or as attack objects."""
    device = next((p.device for p in model.parameters()), data.x.device)
    data = data.to(device)
    if (outputs := num_outputs(model, data)) < data.num_classes:
        raise UserError(f"the {type(model).__name__} gives {outputs} logits per image but the data has "
                        f"{data.num_classes} classes, whose labels index them")
    built = [create_attack(a, eps=eps, norm=norm, steps=steps, seed=seed) if isinstance(a, str) else a
             for a in attacks]
    return _evaluate(model, data, built, batch_size=batch_size, seed=seed, progress=progress)
