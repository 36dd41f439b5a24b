"""The expected compute of a protocol from a committed run of (an earlier version of) it: each cell's
forward-backward passes (training with its attack, validation per epoch, the test attack; a 32-px image counts 4
16-px ones) times the seconds per pass of the same cell (task and label: its fastest committed seed, the least
slowed by other work on the machine), else the median of its method; AutoAttack by its seconds per attacked image
and APGD run (APGD-CE one, APGD-T one per target class).
Grid extensions and added seeds count at their caps (every grid grows ``grid_extend`` values at one end, every
claim's cells get every ``more_seeds`` seed), so it bounds what the cells can take from above."""

import statistics
from pathlib import Path
from typing import Any

from ..engine.config import RunConfig
from .protocol import AutoAttackSpec, Protocol, cell_config, cell_refs

__all__ = ["cell_passes", "estimate_protocol"]

STORED_SIZE = 32  # the side of the benchmark datasets as stored (data.image_size null)
_OUT = Path("/estimate")  # run directories are only named, never touched


def cell_passes(cfg: RunConfig, counts: dict[str, int]) -> float:
    """Forward-backward passes of one cell at 16-px cost; ``counts``: the train/val/test images of its data when
    the config takes no subset."""
    train_n, val_n, test_n = (cfg.data.train_n or counts["train"], cfg.data.val_n or counts["val"],
                              cfg.data.test_n or counts["test"])
    side = (cfg.data.image_size or STORED_SIZE) / 16
    train = cfg.train.epochs * (train_n * (cfg.attack.steps + 1) + val_n * (cfg.eval.val_steps + 2))
    return side ** 2 * (train + test_n * (cfg.eval.test_steps + 2))


def _apgd_runs(spec: AutoAttackSpec) -> int:
    """APGD runs per image of an AutoAttack spec: APGD-CE one, APGD-T one per target (9); FAB-T and Square count as
    APGD-T (standard AutoAttack: 1 + 9 + 9 + 9)."""
    attacks = spec.attacks if spec.version == "custom" and spec.attacks else ["apgd-ce", "apgd-t", "fab-t", "square"]
    return sum(1 if a == "apgd-ce" else 9 for a in attacks)


def _rates(committed: Protocol, record: dict[str, Any], roots: dict[str, str],
           counts: dict[str, dict[str, int]]) -> tuple[dict[Any, float], float]:
    """Seconds per pass of each method (median over its committed cells) and of each (task, label) (its fastest
    seed), and AutoAttack seconds per image and APGD run at 16 px (median). The committed grids are first grown as the
    record says they were (its ``grids``' added values), so the extension cells it ran resolve."""
    for g in record.get("grids", []):
        task = committed.tasks[g["task"]]
        for end, key in ((0, "first"), (-1, "last")):
            for _ in range(g["added"][key] - task.grids[g["group"]].added[end != 0]):
                task.extend_grid(g["group"], end)
    rate: dict[Any, list[float]] = {}
    aa = []
    for r in record["rows"]:
        if r.get("wall_s"):
            cfg = cell_config(committed, r["task"], r["label"], r["seed"], _OUT, roots)
            seconds = r["wall_s"] / cell_passes(cfg, counts[r["task"]])
            rate.setdefault(cfg.method, []).append(seconds)
            rate.setdefault((r["task"], r["label"]), []).append(seconds)
        if r.get("autoattack_s"):
            aa.append(r["autoattack_s"] / r["n_autoattack"] / _apgd_runs(committed.tasks[r["task"]].autoattack))
    return ({m: statistics.median(v) if isinstance(m, str) else min(v) for m, v in rate.items()},
            statistics.median(aa) if aa else 0.0)


def estimate_protocol(protocol: Protocol, committed: Protocol, record: dict[str, Any], roots: dict[str, str],
                      counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Seconds per task (cells, grid extensions, added seeds, AutoAttack) and in all, for ``protocol`` at its own
    seeds; ``committed`` and ``record`` (its ``results.json``) give the rates; ``counts``: per task (of both) the
    train/val/test images of its data."""
    per_pass, aa_per_image = _rates(committed, record, roots, counts)
    fallback = statistics.median(v for k, v in per_pass.items() if isinstance(k, str))
    tasks = {}
    for name, task in protocol.tasks.items():
        seeds = task.seeds or protocol.seeds
        grid_seeds = [s for s in seeds if task.grid_seeds is None or s in task.grid_seeds]
        groups = task.groups()

        configs = {label: cell_config(protocol, name, label, seeds[0], _OUT, roots) for label in task.cells}
        cost_of = {label: cell_passes(cfg, counts[name])
                   * per_pass.get((name, label), per_pass.get(cfg.method, fallback)) for label, cfg in configs.items()}
        per_group = {g: statistics.mean(cost_of[x] for x in labels) for g, labels in groups.items()}
        cells = len(grid_seeds) * sum(cost_of.values()) + (len(seeds) - len(grid_seeds)) * sum(per_group.values())
        extended = task.grid_extend * len(grid_seeds) * sum(per_group[g] for g in task.grids)
        claimed = {n for c in protocol.claims if c.task == name for n in (*c.better, *c.than)}
        refs = {ref for label, spec in task.cells.items() if spec.group_name(label) in claimed
                for ref in cell_refs(spec.set) if "/" not in ref}
        more = len(task.more_seeds) * sum(per_group[g] for g in groups if g in claimed | refs)
        first = cell_config(protocol, name, next(iter(task.cells)), seeds[0], _OUT, roots)
        attacked = [s for s in seeds if task.autoattack.seeds is None or s in task.autoattack.seeds]
        rows_attacked = len(groups) + sum(1 for c in task.cells.values() if c.source_row)
        side = ((first.data.image_size or STORED_SIZE) / 16) ** 2
        autoattack = (task.autoattack.n * aa_per_image * _apgd_runs(task.autoattack) * side * len(attacked)
                      * rows_attacked)
        tasks[name] = {"cells_s": cells, "grid_extension_s": extended, "more_seeds_s": more,
                       "autoattack_s": autoattack}
    return {"tasks": tasks, "total_s": sum(sum(t.values()) for t in tasks.values()),
            "seconds_per_pass": {k: v for k, v in per_pass.items() if isinstance(k, str)}}
