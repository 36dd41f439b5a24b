"""Benchmark protocols: a grid of methods × tasks × seeds under one attack, budget and validation-only selection.

A protocol is a YAML file (the shipped ones live in ``robustft/assets/protocols``): per task a base run config and
named cells (method + overrides), the seeds, the AutoAttack subset, and the seed papers' claims to check. Every cell is
an ordinary run (``engine.run``) in its own directory; a finished cell — its run and its cached AutoAttack file — is
never recomputed, and a killed cell resumes from its last epoch. Placeholders: ``{data}`` and ``{models}`` (the data
and model roots given on the command line) anywhere in a task config or override; ``{cell:LABEL}`` in an override is
the run directory of the same task's cell LABEL for the same seed (LABEL must come earlier in the task).
"""

import copy
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from .._io import atomic_write_json
from ..attacks import create_attack, parse_eps
from ..data import load_dataset
from ..errors import UserError
from ..eval import balanced_subset, evaluate
from ..progress import duration
from ..runtime import resolve_device
from .config import RunConfig, apply_overrides, from_dict
from .run import CONFIG, RESULTS, build_source_model, load_exported_model, run

__all__ = ["Protocol", "Task", "CellSpec", "Claim", "AutoAttackSpec", "load_protocol", "list_protocols",
           "run_protocol", "cell_dir", "slug"]

METRICS = ("clean", "pgd", "autoattack", "corruption")
_SHIPPED = resources.files("robustft") / "assets" / "protocols"


@dataclass
class CellSpec:
    """One method of a task: a registered method name plus config overrides."""

    method: str = field(metadata={"help": "registered method name"})
    set: list[str] = field(default_factory=list, metadata={"help": "overrides KEY=VALUE applied to the task config"})
    source_row: str | None = field(default=None, metadata={
        "help": "also report the source model (tested by this cell with eval.test_source) as a row with this label"})


@dataclass
class AutoAttackSpec:
    """AutoAttack on a fixed class-balanced test subset, cached per cell (it dominates the protocol's cost)."""

    n: int = field(default=0, metadata={"help": "class-balanced test images (0: no AutoAttack)"})
    version: str = field(default="standard", metadata={"help": "AutoAttack version"})
    attacks: list[str] | None = field(default=None, metadata={"help": "attacks of version custom, e.g. [apgd-ce]"})
    seeds: list[int] | None = field(default=None, metadata={"help": "seeds whose cells are attacked (default: all)"})


@dataclass
class Task:
    """A base run config and the cells that run on it."""

    title: str = field(metadata={"help": "one line for the report"})
    config: dict[str, Any] = field(metadata={"help": "RunConfig mapping shared by every cell"})
    cells: dict[str, CellSpec] = field(metadata={"help": "label -> cell, run in this order"})
    autoattack: AutoAttackSpec = field(default_factory=AutoAttackSpec, metadata={"help": "AutoAttack subset"})


@dataclass
class Claim:
    """A seed paper's claim: ``better`` beats ``than`` (means over the listed cells and the seeds) on every metric,
    or, with ``tolerance``, stays within ``tolerance`` of it."""

    claim: str = field(metadata={"help": "the claim in words, with its source"})
    task: str = field(metadata={"help": "task whose cells are compared"})
    better: list[str] = field(metadata={"help": "cell labels (averaged)"})
    than: list[str] = field(metadata={"help": "cell labels (averaged)"})
    metrics: list[str] = field(metadata={"help": f"among {METRICS}"})
    tolerance: float | None = field(default=None, metadata={"help": "claim of 'unchanged': |difference| <= this"})


@dataclass
class Protocol:
    """Tasks × cells × seeds and the claims checked on them."""

    name: str = field(metadata={"help": "protocol name"})
    description: str = field(metadata={"help": "what it measures and its budget"})
    seeds: list[int] = field(metadata={"help": "training seeds of every cell"})
    tasks: dict[str, Task] = field(metadata={"help": "task name -> task"})
    claims: list[Claim] = field(default_factory=list, metadata={"help": "claims the report checks"})

    def __post_init__(self) -> None:
        if not self.seeds:
            raise UserError(f"protocol {self.name}: needs at least one seed")
        for name, task in self.tasks.items():
            for label, cell in task.cells.items():
                for ref in re.findall(r"\{cell:([^}]*)\}", " ".join(cell.set)):
                    if ref not in task.cells or list(task.cells).index(ref) >= list(task.cells).index(label):
                        raise UserError(f"protocol {self.name}: cell {name}/{label} refers to {{cell:{ref}}}, which "
                                        f"is not an earlier cell of task {name}")
        for c in self.claims:
            if c.task not in self.tasks:
                raise UserError(f"protocol {self.name}: claim {c.claim!r} names unknown task {c.task!r}")
            cells = self.tasks[c.task].cells
            labels = set(cells) | {cell.source_row for cell in cells.values()}
            unknown = [x for x in (*c.better, *c.than) if x not in labels] + [m for m in c.metrics if m not in METRICS]
            if unknown:
                raise UserError(f"protocol {self.name}: claim {c.claim!r} names unknown cells/metrics {unknown}")


def list_protocols() -> list[str]:
    """Names of the protocols shipped with the package."""
    return sorted(p.name.removesuffix(".yaml") for p in _SHIPPED.iterdir() if p.name.endswith(".yaml"))


def load_protocol(name_or_path: str | Path) -> Protocol:
    """A shipped protocol by name, or a protocol YAML file."""
    path = Path(name_or_path)
    if not path.is_file():
        if str(name_or_path) not in list_protocols():
            raise UserError(f"unknown protocol {name_or_path!r}: not a file, and the shipped ones are "
                            f"{', '.join(list_protocols())}")
        path = Path(str(_SHIPPED / f"{name_or_path}.yaml"))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"protocol {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"protocol {path} must hold a mapping at the top level")
    return from_dict(Protocol, data)


def slug(label: str) -> str:
    """A directory name for a run label."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in label.replace("λ", "lam"))


def cell_dir(out: Path, task: str, label: str, seed: int) -> Path:
    """Run directory of one cell."""
    return out / "runs" / task / slug(label) / f"seed{seed}"


def _substitute(value: Any, roots: dict[str, str]) -> Any:
    """``{data}``/``{models}`` replaced in every string of a nested config."""
    if isinstance(value, dict):
        return {k: _substitute(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, roots) for v in value]
    if isinstance(value, str):
        return value.replace("{data}", roots["data"]).replace("{models}", roots["models"])
    return value


def cell_config(protocol: Protocol, task: str, label: str, seed: int, out: Path, roots: dict[str, str]) -> RunConfig:
    """The validated run config of one cell."""
    spec = protocol.tasks[task].cells[label]
    overrides = [re.sub(r"\{cell:([^}]*)\}", lambda m: str(cell_dir(out, task, m.group(1), seed)), o)
                 for o in _substitute(spec.set, roots)]
    data = apply_overrides(copy.deepcopy(_substitute(protocol.tasks[task].config, roots)),
                           [f"method={spec.method}", f"train.seed={seed}", *overrides])
    return from_dict(RunConfig, data)


def _autoattack(cfg: RunConfig, run_dir: Path, spec: AutoAttackSpec, source: bool) -> dict[str, Any]:
    """PGD + AutoAttack on the class-balanced test subset, for the exported model (or the source model), cached in
    the cell's directory."""
    path = run_dir / f"autoattack{'_source' if source else ''}_n{spec.n}.json"
    if path.is_file():
        return json.loads(path.read_text())
    device = resolve_device(cfg.train.device)
    test = load_dataset(cfg.data.name, "test", root=cfg.data.root, image_size=cfg.data.image_size, device=device)
    subset = balanced_subset(test, spec.n)
    if source:
        model = build_source_model(cfg, test.num_classes)
    else:
        model = load_exported_model(cfg.model.arch, run_dir / "model.pt", num_classes=test.num_classes)
    model = model.to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    options = dict(eps=parse_eps(cfg.attack.eps), norm=cfg.attack.norm, steps=cfg.eval.test_steps,
                   seed=cfg.train.seed)
    attacks = [create_attack("pgd", **options),
               create_attack("autoattack", aa_version=spec.version, aa_attacks=spec.attacks, **options)]
    result = evaluate(model, subset, attacks, batch_size=cfg.data.eval_batch_size, seed=cfg.train.seed,
                      channels_last=cfg.train.channels_last).to_dict()
    atomic_write_json(result, path)
    return result


def _rows(results: dict[str, Any], label: str, spec: CellSpec, aa: dict[str, Any]) -> list[dict[str, Any]]:
    """The cell's report row (and its source model's row, if the cell tests it)."""
    last = list(results["stages"].values())[-1]
    metrics = Path(last["run_dir"]) / "metrics.jsonl"
    history = [json.loads(line) for line in metrics.read_text().splitlines()]

    def row(name: str, test: dict[str, Any], corruptions: dict[str, Any] | None, aa: dict[str, Any] | None) -> dict:
        pgd = [k for k in test["robust_acc"] if k.startswith("pgd")] or [None]
        out = {"label": name, "method": results["method"], "test_clean": test["clean_acc"],
               "test_pgd": test["robust_acc"].get(pgd[0]), "pgd_name": pgd[0], "n_test": test["n"]}
        if aa:
            subset_pgd, autoattack = aa["robust_acc"].values()  # the PGD and AutoAttack of _autoattack, in order
            out.update(test_autoattack=autoattack, aa_subset_clean=aa["clean_acc"], aa_subset_pgd=subset_pgd,
                       n_autoattack=aa["n"], autoattack_s=aa["timing"]["total"])
        if corruptions:
            out["test_corruption"] = corruptions["mean"]
        return out

    rows = [{**row(label, results["test"], results.get("test_corruptions"), aa.get("model")),
             "best_epoch": last["best_epoch"], "val_clean": last["best_val"]["val_clean_acc"],
             "val_robust": last["best_val"]["val_robust_acc"], "wall_s": results["wall_s"], "metrics": str(metrics),
             "finished_utc": results["provenance"]["time_utc"],
             "train_images_per_s": sum(h["train_images_per_s"] for h in history) / len(history)}]
    if spec.source_row:
        src = results["test_source"]
        rows.insert(0, row(spec.source_row, src["test"], src.get("test_corruptions"), aa.get("source")))
    return rows


def run_protocol(protocol: Protocol, out: Path, roots: dict[str, str], *, seeds: list[int] | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or reuse) every cell and return the per-cell rows; the report is ``report.protocol``'s job."""
    for key, root in roots.items():
        if not Path(root).is_dir():
            raise UserError(f"benchmark {key} root {root} does not exist: pass --{key}-root or set "
                            f"ROBUSTFT_BENCH_{key.upper()}")
    start = time.perf_counter()
    rows = []
    cells = [(seed, task_name, task, label, spec) for seed in seeds or protocol.seeds
             for task_name, task in protocol.tasks.items() for label, spec in task.cells.items()]
    computed_s, computed = 0.0, 0  # cells this invocation ran: their mean wall time gives the ETA
    for i, (seed, task_name, task, label, spec) in enumerate(cells):
        run_dir = cell_dir(out, task_name, label, seed)
        cfg = cell_config(protocol, task_name, label, seed, out, roots)
        done = (run_dir / RESULTS).is_file()
        eta = f", ETA {duration(computed_s / computed * (len(cells) - i))}" if computed else ""
        log(f"[{protocol.name}] cell {i + 1}/{len(cells)} {task_name} / {label} / seed {seed}: "
            + ("finished, reused" if done else ("resuming" if (run_dir / CONFIG).is_file() else "running"))
            + f" ({duration(time.perf_counter() - start)} so far{eta})")
        t0 = time.perf_counter()
        results = run(cfg, run_dir=run_dir, resume=True, log=lambda s, p=f"  {label} s{seed}: ": log(p + s))
        aa: dict[str, Any] = {}
        if task.autoattack.n and (task.autoattack.seeds is None or seed in task.autoattack.seeds):
            aa["model"] = _autoattack(cfg, run_dir, task.autoattack, source=False)
            if spec.source_row:
                aa["source"] = _autoattack(cfg, run_dir, task.autoattack, source=True)
        if not done:
            computed_s, computed = computed_s + time.perf_counter() - t0, computed + 1
        rows += [{"task": task_name, "seed": seed, "run_dir": str(run_dir), **r}
                 for r in _rows(results, label, spec, aa)]
    return {"rows": rows, "wall_s": time.perf_counter() - start}
