"""Running a benchmark protocol: every cell is an ordinary run (``engine.run``) in its own directory; per task and
seed, each group's variant is then selected on validation and AutoAttack runs on a class-balanced test subset
(``eval.subset_autoattack``, cached per cell). A finished cell — its run and its AutoAttack file — is never
recomputed, and a killed cell resumes from its last epoch."""

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_json, check_writable
from ..card import load_exported_model
from ..data import ArrayDataset, load_dataset
from ..engine import RunConfig, build_source_model, run, to_dict
from ..errors import TrainingDiverged, UserError
from ..eval import subset_autoattack
from ..eval.bnstats import bn_stat_distance
from ..layout import RunLayout
from ..progress import duration
from ..report import load_run, result_row
from ..report.tables import curve_columns, run_artifacts
from ..runtime import provenance, resolve_device
from .protocol import (
    AutoAttackSpec,
    Protocol,
    Task,
    as_overrides,
    cell_config,
    cell_dir,
    cell_refs,
    load_protocol,
    resolve_cells,
    task_config,
)
from .report import check_claims, select_variants, write_protocol_report

__all__ = ["bench_roots", "run_protocol", "run_bench", "grid_positions", "seed_limited",
           "DEFAULT_DATA_ROOT"]

DEFAULT_DATA_ROOT = "../shared/data"  # the shared benchmark data beside a checkout


def bench_roots(data_root: str | Path | None = None, models_root: str | Path | None = None) -> dict[str, str]:
    """Absolute ``{data}``/``{models}`` roots: as given, else ``$ROBUSTFT_BENCH_DATA`` / ``$ROBUSTFT_BENCH_MODELS``,
    else ``../shared/data`` and ``<data root>/../models``."""
    data = Path(data_root or os.environ.get("ROBUSTFT_BENCH_DATA") or DEFAULT_DATA_ROOT)
    models = Path(models_root or os.environ.get("ROBUSTFT_BENCH_MODELS") or data.parent / "models")
    return {"data": str(data.resolve()), "models": str(models.resolve())}


def _autoattack(cfg: RunConfig, run_dir: Path, spec: AutoAttackSpec, source: bool) -> dict[str, Any]:
    """PGD + AutoAttack on the class-balanced test subset, for the exported model (or the source model), cached in
    the cell's directory."""
    def load() -> tuple[torch.nn.Module, ArrayDataset]:
        device = resolve_device(cfg.train.device)
        test = load_dataset(cfg.data, "test", device=device)
        if source:
            model = build_source_model(cfg, test.num_classes)
        else:
            model = load_exported_model(cfg.model.arch, RunLayout(run_dir).model, num_classes=test.num_classes)
        model = model.to(device)
        return (model.to(memory_format=torch.channels_last) if cfg.train.channels_last else model), test

    path = RunLayout(run_dir).artifact(f"autoattack{'_source' if source else ''}_n{spec.n}")
    return subset_autoattack(load, spec.n, eps=cfg.attack.eps, norm=cfg.attack.norm,
                             steps=cfg.eval.test_steps, seed=cfg.train.seed, version=spec.version,
                             attacks=spec.attacks, batch_size=cfg.data.eval_batch_size,
                             channels_last=cfg.train.channels_last, path=path)


def _bn_stats(protocol: Protocol, task_name: str, seed: int, out: Path, roots: dict[str, str],
              log: Callable[[str], None]) -> dict[str, Any]:
    """Per ``bn_stats`` label, the per-layer distance of that data's batch-norm statistics (training split) from the
    task's source model's stored ones (``{cell:...}`` resolved for ``seed``); cached in ``out`` with the data and model
    configs it was measured on, and measured again when they change."""
    task = protocol.tasks[task_name]
    path = out / f"bn_stats_{task_name}.json"
    configs = {label: task_config(protocol, task_name,
                                  {"method": "standard", **resolve_cells(protocol, overrides, out, task_name, seed)},
                                  roots) for label, overrides in task.bn_stats.items()}
    inputs = {label: json.loads(json.dumps({"data": to_dict(cfg.data), "model": to_dict(cfg.model)}, default=str))
              for label, cfg in configs.items()}  # what the stored table was measured on
    if path.is_file():
        record = json.loads(path.read_text())
        labels = record.get("labels")  # a record written before overrides were mappings holds KEY=VALUE lists
        if (isinstance(labels, dict) and {k: as_overrides(v) for k, v in labels.items()} == task.bn_stats
                and record.get("n") == task.bn_stats_n and record.get("inputs") == inputs):
            return record
    log(f"[{protocol.name}] {task_name}: batch-norm statistics of {len(task.bn_stats)} datasets against the source")
    distances = {}
    for label, cfg in configs.items():
        device = resolve_device(cfg.train.device)
        images = load_dataset(cfg.data, "train", n=task.bn_stats_n, device=device)
        model = build_source_model(cfg, images.num_classes, log=lambda s: None).to(device)
        distances[label] = [d.to_dict() for d in bn_stat_distance(model, images)]
    record = {"labels": task.bn_stats, "n": task.bn_stats_n, "inputs": inputs, "distances": distances}
    atomic_write_json(record, path)
    return record


def _chosen_variants(rows: list[dict[str, Any]], task: str, seeds: list[int], labels: list[str]) -> dict[str, str]:
    """Group -> the variant selected most often over ``seeds`` (the first listed of ``labels`` wins a tie)."""
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        if r["task"] == task and r["seed"] in seeds and r["selected"]:
            group = counts.setdefault(r["group"], {})
            group[r["label"]] = group.get(r["label"], 0) + 1
    return {g: max(c, key=lambda label: (c[label], -labels.index(label))) for g, c in counts.items()}


@dataclass
class _Progress:
    """Cells counted so far, and the ones this invocation ran (their mean wall time gives the ETA)."""

    start: float
    total: int
    index: int = 0
    computed: int = 0
    computed_s: float = 0.0
    diverged: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # grid variants whose training diverged


def _run_cell(protocol: Protocol, task_name: str, label: str, seed: int, out: Path, roots: dict[str, str],
              progress: _Progress, batch: list[dict[str, Any]], jobs: list[tuple], log: Callable[[str], None]) -> None:
    """Run (or reuse) one cell and append its row (and its source row) to ``batch``, with the matching entries
    (config, run dir, source?, results) to ``jobs``."""
    spec = protocol.tasks[task_name].cells[label]
    run_dir = cell_dir(out, task_name, label, seed)
    cfg = cell_config(protocol, task_name, label, seed, out, roots)
    layout = RunLayout(run_dir)
    done = layout.results.is_file()
    p = progress
    eta = f", ETA {duration(p.computed_s / p.computed * max(p.total - p.index, 0))}" if p.computed else ""
    p.index += 1
    log(f"[{protocol.name}] cell {p.index}/{p.total} {task_name} / {label} / seed {seed}: "
        + ("finished, reused" if done else ("resuming" if layout.config.is_file() else "running"))
        + f" ({duration(time.perf_counter() - p.start)} so far{eta})")
    t0 = time.perf_counter()
    try:
        run(cfg, run_dir=run_dir, resume=True, log=lambda s: log(f"  {label} s{seed}: {s}"))
    except TrainingDiverged as e:  # a grid method that diverges is a result (at that rate and seed), not a failure
        if spec.group_name(label) not in protocol.tasks[task_name].grids:
            raise
        log(f"  {label} s{seed}: {e}; recorded as diverged: never selected, its seed left out of its claims")
        p.diverged.append({"task": task_name, "seed": seed, "group": spec.group_name(label), "label": label,
                           "error": str(e)})
        return
    if not done:
        p.computed_s, p.computed = p.computed_s + time.perf_counter() - t0, p.computed + 1
    results = load_run(run_dir)
    where = {"task": task_name, "seed": seed, "run_dir": str(run_dir)}
    if spec.source_row:
        batch.append({**where, "group": spec.source_row, **result_row(results, spec.source_row, source=True)})
        jobs.append((cfg, run_dir, True, results))
    stage, last = list(results["stages"].items())[-1]
    batch.append({**where, "group": spec.group_name(label), **result_row(results, label),
                  "metrics": str(RunLayout(last["run_dir"]).metrics), "finished_utc": results["provenance"]["time_utc"],
                  "curve": curve_columns(results["history"].get(stage, [])), **run_artifacts(run_dir)})
    jobs.append((cfg, run_dir, False, results))


def _bracket(task: Task, batch: list[dict[str, Any]]) -> list[str]:
    """For every grid whose selected variant in ``batch`` (one seed's validation choice) is an end that may still
    grow (``task.grid_extend``), add the value beyond it to the task; returns the new cell labels."""
    added = []
    for row in batch:
        grid = task.grids.get(row["group"])
        if not row["selected"] or grid is None or grid.ratios is None:
            continue
        value = grid.values[[grid.label(v) for v in grid.values].index(row["label"])]
        for end in (0, -1):
            if value == grid.values[end] and grid.added[end != 0] < task.grid_extend:
                added.append(task.extend_grid(row["group"], end))
                break
    return added


def grid_positions(protocol: Protocol, rows: list[dict[str, Any]],
                   diverged: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Per grid of every task: its values as run, those whose training ``diverged`` (never selected), the value each
    grid seed chose on validation and where it fell (``Grid.position``: interior, end or bound)."""
    out = []
    for name, task in protocol.tasks.items():
        seeds = task.grid_seeds if task.grid_seeds is not None else (task.seeds or protocol.seeds)
        for group, grid in task.grids.items():
            labels = [grid.label(v) for v in grid.values]
            picked = {r["seed"]: grid.values[labels.index(r["label"])] for r in rows
                      if r["task"] == name and r["group"] == group and r["selected"] and r["seed"] in seeds}
            failed = [grid.values[labels.index(d["label"])] for d in diverged
                      if d["task"] == name and d["group"] == group and d["seed"] in seeds]
            out.append({"task": name, "group": group, "key": grid.key, "values": grid.values, "diverged": failed,
                        "added": {"first": grid.added[0], "last": grid.added[1]}, "bound": task.grid_extend,
                        "chosen": picked, "position": {s: grid.position(v, task.grid_extend)
                                                       for s, v in picked.items()}})
    return out


def _seed_order(task_seeds: list[int] | None, seeds: list[int], name: str) -> list[int]:
    """``seeds`` with a task's grid seeds first (their selections decide the other seeds' variants)."""
    if task_seeds is None:
        return seeds
    if not set(task_seeds) & set(seeds):
        raise UserError(f"protocol {name}: the seeds {seeds} include none of the grid seeds {task_seeds}, whose "
                        f"validation selection decides which variant the other seeds run; add one of them")
    return [s for s in seeds if s in task_seeds] + [s for s in seeds if s not in task_seeds]


def run_protocol(protocol: Protocol, out: Path, roots: dict[str, str], *, seeds: list[int] | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or reuse) every cell, select each group's variant on validation, and attack the cells the task's
    AutoAttack spec asks for; returns the rows (``report.result_row`` + task, seed, group, selected), the
    batch-norm statistics distances and the wall time. With a task's ``grid_seeds``, the other seeds run only each
    group's variant selected on those seeds. The report is ``write_protocol_report``'s job."""
    used = json.dumps(dataclasses.asdict(protocol), ensure_ascii=False)
    for key, root in roots.items():
        if f"{{{key}}}" in used and not Path(root).is_dir():
            raise UserError(f"benchmark {key} root {root} does not exist: pass --{key}-root or set "
                            f"ROBUSTFT_BENCH_{key.upper()}")
    start = time.perf_counter()
    seeds = seeds or protocol.seeds
    orders = {name: _seed_order(task.grid_seeds, task.seeds or seeds, protocol.name)
              for name, task in protocol.tasks.items()}
    total = sum(len(task.cells) if task.grid_seeds is None or seed in task.grid_seeds else len(task.groups())
                for name, task in protocol.tasks.items() for seed in orders[name])
    rows: list[dict[str, Any]] = []
    bn_stats: dict[str, Any] = {}  # measured before a task's first cell (its source may be an earlier task's cell)
    progress = _Progress(start, total)
    for position in range(max(map(len, orders.values()))):
        for task_name, task in protocol.tasks.items():
            if position >= len(orders[task_name]):
                continue
            seed = orders[task_name][position]
            if task.bn_stats and position == 0:
                bn_stats[task_name] = _bn_stats(protocol, task_name, seed, out, roots, log)
            batch, jobs = [], []  # this task's rows for this seed, and per row (config, run dir, source?, results)
            grid_seed = task.grid_seeds is None or seed in task.grid_seeds
            chosen = {} if grid_seed else _chosen_variants(rows, task_name, task.grid_seeds, list(task.cells))

            for label, spec in list(task.cells.items()):
                if chosen.get(spec.group_name(label), label) == label:
                    _run_cell(protocol, task_name, label, seed, out, roots, progress, batch, jobs, log)
            batch = select_variants(batch, task.select)
            while grid_seed and (added := _bracket(task, batch)):  # a grid seed: grids grow past a chosen end
                progress.total += len(added) * (1 + len([s for s in orders[task_name][position + 1:]
                                                         if s in (task.grid_seeds or [])]))
                for label in added:
                    _run_cell(protocol, task_name, label, seed, out, roots, progress, batch, jobs, log)
                batch = select_variants(batch, task.select)  # a tie keeps the variant run first
            rows += _attack(task, seed, batch, jobs, progress)
    more = {}
    for task_name, task in protocol.tasks.items():
        if task.more_seeds:
            more[task_name] = _more_seeds(protocol, task_name, orders[task_name], rows, out, roots, progress, log)
    return {"rows": rows, "bn_stats": bn_stats, "grids": grid_positions(protocol, rows, progress.diverged),
            "more_seeds": more, "diverged": progress.diverged, "wall_s": time.perf_counter() - start}


def _attack(task: Task, seed: int, batch: list[dict[str, Any]], jobs: list[tuple],
            progress: _Progress) -> list[dict[str, Any]]:
    """``batch`` with AutoAttack added to the rows the task's AutoAttack spec asks for at ``seed``."""
    aa = task.autoattack
    if aa.n and (aa.seeds is None or seed in aa.seeds):
        t0 = time.perf_counter()
        for row, (cfg, run_dir, source, results) in zip(batch, jobs, strict=True):
            if row["selected"] or not aa.selected_only:
                row.update(result_row(results, row["label"], source=source,
                                      autoattack=_autoattack(cfg, run_dir, aa, source)))
        progress.computed_s += time.perf_counter() - t0
    return batch


def seed_limited(protocol: Protocol, task_name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The claims on ``task_name`` limited by seed spread: a metric whose paired interval is inconclusive and whose
    seed half-width exceeds its test-image half-width (``report.paired.paired_difference``), so more seeds, not
    more images, would narrow it. Per such claim: its text, those metrics and the names it compares."""
    claims = [c for c in protocol.claims if c.task == task_name]
    out = []
    for claim, checked in zip(claims, check_claims(claims, rows), strict=True):
        metrics = [m for m, e in checked["metrics"].items() if e["verdict"] == "inconclusive" and "paired" in e
                   and e["paired"].get("half_seeds", 0) > e["paired"]["half_images"]]
        if metrics:
            out.append({"claim": claim.claim, "metrics": metrics, "names": [*claim.better, *claim.than]})
    return out


def _cells_for(task: Task, names: list[str], chosen: dict[str, str]) -> list[str]:
    """The cell labels that give rows for ``names`` (a group: its ``chosen`` variant; a source row: its cell), with
    the same task's cells they refer to (``{cell:LABEL}``), in task order."""
    wanted = set()
    for label, spec in task.cells.items():
        group = spec.group_name(label)
        if label in names or spec.source_row in names or (group in names and chosen.get(group, label) == label):
            wanted.add(label)
    for label in reversed(task.cells):  # references point to earlier cells: this order closes them
        if label in wanted:
            wanted |= {ref for ref in cell_refs(task.cells[label].set) if "/" not in ref}
    return [label for label in task.cells if label in wanted]


def _more_seeds(protocol: Protocol, task_name: str, seeds: list[int], rows: list[dict[str, Any]], out: Path,
                roots: dict[str, str], progress: _Progress, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Seeds added to the cells of the claims limited by seed spread (``seed_limited``), one of ``more_seeds`` at a
    time until none is or the list (the cap) is spent; each group runs the variant the seeds so far selected most
    often. Appends the new rows to ``rows``; returns per added seed the claims and cells it ran for."""
    task = protocol.tasks[task_name]
    overlap = sorted(set(task.more_seeds) & set(seeds))
    if overlap:
        raise UserError(f"protocol {protocol.name}: task {task_name}'s more_seeds {overlap} already run as its seeds; "
                        f"list seeds it does not run")
    added = []
    for seed in task.more_seeds:
        limited = seed_limited(protocol, task_name, rows)
        if not limited:
            break
        chosen = _chosen_variants(rows, task_name, task.grid_seeds or seeds, list(task.cells))
        labels = _cells_for(task, sorted({n for c in limited for n in c["names"]}), chosen)
        log(f"[{protocol.name}] {task_name}: seed {seed} added for {len(limited)} claim(s) limited by seed spread "
            f"({len(labels)} cells)")
        progress.total += len(labels)
        batch, jobs = [], []
        for label in labels:
            _run_cell(protocol, task_name, label, seed, out, roots, progress, batch, jobs, log)
        rows += _attack(task, seed, select_variants(batch, task.select), jobs, progress)
        added.append({"seed": seed, "claims": limited, "cells": labels})
    return added


def run_bench(protocol: str | Path, *, data_root: str | Path | None = None, models_root: str | Path | None = None,
              out: str | Path | None = None, report_dir: str | Path | None = None, seeds: list[int] | None = None,
              command: str = "robustft bench", log: Callable[[str], None] = print) -> list[Path]:
    """``robustft bench``: run (or resume) a protocol (shipped name or YAML file) into ``out`` (default
    ``runs/bench/<name>``), write its report to ``report_dir`` (default ``out``); returns the written paths."""
    spec = load_protocol(protocol)
    roots = bench_roots(data_root, models_root)
    out = Path(out or Path("runs") / "bench" / spec.name)
    report_dir = Path(report_dir or out)
    for directory in (out, report_dir):
        check_writable(directory, directory=True)
    seeds = seeds or spec.seeds
    log(f"[{spec.name}] data root {roots['data']}, models root {roots['models']}; cells in {out}")
    record = run_protocol(spec, out, roots, seeds=seeds, log=log)
    record.update(protocol=spec.name, description=spec.description, seeds=seeds, roots=roots, command=command,
                  cells_wall_s=sum((r.get("wall_s") or 0) + r.get("autoattack_s", 0) for r in record["rows"]),
                  provenance=provenance(seeds[0]))
    return write_protocol_report(spec, record, report_dir)
