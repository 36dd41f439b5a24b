"""Benchmark protocols: a grid of methods × tasks × seeds under one attack, budget and validation-only selection.

A protocol is a YAML file (the shipped ones live in ``robustft/assets/protocols``): per task a base run config and named
cells (method + overrides, ``set: {dotted.key: value}`` with YAML values), the seeds, the AutoAttack subset, and the
seed papers' claims to check. Cells that share a ``group`` are variants of one method (e.g. a learning-rate grid): per
seed, the report keeps the variant with the best validation number (the task's ``select`` rule), never a test number.
Placeholders: ``{data}`` and ``{models}`` (the data and model roots given on the command line) anywhere in a task config
or override; ``{cell:LABEL}`` in an override is the run directory of the same task's cell LABEL for the same seed (LABEL
must come earlier in the task), ``{cell:TASK/LABEL}`` that of an earlier task's cell (e.g. a source trained by the
protocol). A cell with ``grid: {KEY: [values]}`` stands for one variant per value, grouped; a task's ``grid_seeds`` run
every variant and the other seeds only the variant those seeds selected; with ``grid_extend``, a grid whose validation
choice on a grid seed is one of its ends grows by its own end ratio in that direction (at most ``grid_extend`` values
per end), so the chosen value is interior or the report says it hit the bound. A task's ``bn_stats`` measures how far
the batch-norm statistics of some datasets are from the source's stored ones. A task with its own ``seeds`` runs only
those (e.g. one source trained by the protocol): a reference to it from a seed it does not run resolves to its first.
"""

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from .._yaml import read_yaml
from ..engine.config import RunConfig, from_dict, parse_overrides, set_keys
from ..errors import UserError

__all__ = ["Protocol", "Task", "Grid", "CellSpec", "Claim", "AutoAttackSpec", "METRICS", "load_protocol",
           "list_protocols", "cell_config", "task_config", "resolve_cells", "cell_refs", "as_overrides", "cell_dir",
           "slug"]

METRICS = ("clean", "pgd", "autoattack", "corruption")
_SHIPPED = resources.files("robustft") / "assets" / "protocols"
_CELL_REF = re.compile(r"\{cell:([^}]*)\}")
_PLACEHOLDER = re.compile(r"\{(?:data|models|cell:[^}]*)\}")
_HIDDEN = re.compile(r"robustftplaceholder(\d+)x")


def as_overrides(value: dict[str, Any] | list[str]) -> dict[str, Any]:
    """Config overrides as a mapping ``{dotted.key: value}``. A list of ``KEY=VALUE`` strings (how protocols wrote
    them before, e.g. a committed older version) is parsed as ``--set`` parses it (``null``: None), its placeholders
    kept as written: that form substituted them before parsing, and they stand for paths."""
    if isinstance(value, list):
        hidden: list[str] = []

        def hide(m: re.Match) -> str:
            hidden.append(m.group(0))
            return f"robustftplaceholder{len(hidden) - 1}x"

        parsed = parse_overrides([_PLACEHOLDER.sub(hide, item) if isinstance(item, str) else item for item in value])
        value = _map_strings(parsed, lambda s: _HIDDEN.sub(lambda m: hidden[int(m.group(1))], s))
    bad = [k for k in value if not isinstance(k, str) or not k]
    if bad:
        raise UserError(f"override keys must be dotted config keys such as optim.lr, got {bad[0]!r}")
    return dict(value)


def cell_refs(overrides: dict[str, Any]) -> list[str]:
    """The cells ``overrides`` refer to, in order: ``LABEL`` for ``{cell:LABEL}``, ``TASK/LABEL`` for
    ``{cell:TASK/LABEL}``."""
    refs: list[str] = []

    def collect(text: str) -> str:
        refs.extend(_CELL_REF.findall(text))
        return text

    _map_strings(overrides, collect)
    return refs


@dataclass
class CellSpec:
    """One run of a task: a registered method name plus config overrides."""

    method: str = field(metadata={"help": "registered method name"})
    set: dict[str, Any] | list[str] = field(default_factory=dict, metadata={
        "help": "config keys set over the task config: {dotted.key: value}, values typed as YAML (a list of "
                "KEY=VALUE strings, the older form, is read as --set reads it)"})
    group: str | None = field(default=None, metadata={
        "help": "method this cell is a variant of: per seed only the group's best-validation variant is reported "
                "under the group's name (default: the cell is its own group)"})
    source_row: str | None = field(default=None, metadata={
        "help": "also report the source model (tested by this cell with eval.test_source) as a row with this label"})
    grid: dict[str, list[Any]] | None = field(default=None, metadata={
        "help": "KEY -> values: the cell stands for one variant per value, labelled '<label> <last part of KEY>="
                "<value>', in the group <label> (one KEY)"})

    def __post_init__(self) -> None:
        self.set = as_overrides(self.set)

    def group_name(self, label: str) -> str:
        """The group this cell (labelled ``label``) belongs to."""
        return self.group or label


@dataclass
class AutoAttackSpec:
    """AutoAttack on a fixed class-balanced test subset, cached per cell (it dominates the protocol's cost)."""

    n: int = field(default=0, metadata={"help": "class-balanced test images (0: no AutoAttack)", "ge": 0})
    version: str = field(default="standard", metadata={"help": "AutoAttack version"})
    attacks: list[str] | None = field(default=None, metadata={"help": "attacks of version custom, e.g. [apgd-ce]"})
    seeds: list[int] | None = field(default=None, metadata={"help": "seeds whose cells are attacked (default: all)"})
    selected_only: bool = field(default=False, metadata={
        "help": "attack only each group's variant selected on validation (the others are never reported)"})


@dataclass
class Grid:
    """A grid cell's variants: the values run so far (in order, extensions at the ends) and how many were added
    beyond each end."""

    name: str
    cell: CellSpec
    key: str
    values: list[Any]
    added: list[int] = field(default_factory=lambda: [0, 0])  # values added beyond the first / the last end

    def __post_init__(self) -> None:
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in self.values)
        self.ratios = ((self.values[0] / self.values[1], self.values[-1] / self.values[-2])
                       if numeric and len(self.values) > 1 else None)  # the grid's own step at each end

    def label(self, value: Any) -> str:
        """The cell label of one variant."""
        return f"{self.name} {self.key.rsplit('.', 1)[-1]}={value}"

    def variant(self, value: Any) -> CellSpec:
        """The cell of one variant."""
        return CellSpec(method=self.cell.method, set={**self.cell.set, self.key: value}, group=self.name)

    def beyond(self, end: int) -> float:
        """The next value past end ``end`` (0 or -1): that end times the grid's ratio there, 3 significant digits."""
        if self.ratios is None:
            raise UserError(f"grid {self.name}: only a grid of 2+ positive numbers can be extended")
        return float(f"{self.values[end] * self.ratios[end != 0]:.3g}")

    def position(self, value: Any, bound: int) -> str:
        """Where a chosen value fell: ``interior``, ``end`` (of a grid that may not grow) or ``bound`` (an end after
        ``bound`` values were added beyond it)."""
        if value not in (self.values[0], self.values[-1]) or len(self.values) < 2:
            return "interior"
        added = self.added[value == self.values[-1] and value != self.values[0]]
        return "bound" if bound and added >= bound else "end"


@dataclass
class Task:
    """A base run config and the cells that run on it."""

    title: str = field(metadata={"help": "one line for the report"})
    config: dict[str, Any] = field(metadata={"help": "RunConfig mapping shared by every cell"})
    cells: dict[str, CellSpec] = field(metadata={"help": "label -> cell, run in this order"})
    autoattack: AutoAttackSpec = field(default_factory=AutoAttackSpec, metadata={"help": "AutoAttack subset"})
    select: Literal["robust_acc", "clean_acc", "sum"] = field(default="robust_acc", metadata={
        "help": "validation number that picks a group's variant (as eval.select: robust_acc | clean_acc | sum)"})
    grid_seeds: list[int] | None = field(default=None, metadata={
        "help": "seeds that run every variant of a group; the other seeds run only the variant these seeds selected "
                "most often on validation (the first listed wins a tie) (default: every seed runs every variant)"})
    bn_stats: dict[str, dict[str, Any] | list[str]] = field(default_factory=dict, metadata={
        "help": "label -> overrides of this task's config ({dotted.key: value}, e.g. another data.name): per label, "
                "the distance of that data's batch-norm statistics (training split) from the source model's stored "
                "ones, reported per layer"})
    bn_stats_n: int = field(default=2000, metadata={"help": "training images per bn_stats label", "ge": 1})
    seeds: list[int] | None = field(default=None, metadata={
        "help": "seeds this task runs, whatever the protocol's or --seeds (e.g. [0] for one source that later tasks "
                "fine-tune at every seed: a {cell:TASK/LABEL} from a seed it does not run means its first seed) "
                "(default: the protocol's)"})
    curve: bool = field(default=False, metadata={
        "help": "the report tabulates each cell's validation curve per epoch (e.g. to show a source converged)"})
    grid_extend: int = field(default=0, metadata={
        "help": "bracketing: when a grid seed's validation choice is an end of a (numeric, 2+ value) grid, a value "
                "beyond that end (the end times the grid's own ratio at that end) is run, repeatedly, at most this "
                "many per end; validation only, never test (0: grids stay as listed)", "ge": 0})

    more_seeds: list[int] = field(default_factory=list, metadata={
        "help": "seeds added, one at a time in this order (the list is the cap), after the task's seeds to exactly "
                "the cells of its claims still limited by seed spread (inconclusive, with a seed half-width above the "
                "test-image half-width); the interval rule is unchanged"})

    def __post_init__(self) -> None:
        self.bn_stats = {label: as_overrides(overrides) for label, overrides in self.bn_stats.items()}
        cells: dict[str, CellSpec] = {}
        self.grids: dict[str, Grid] = {}  # group -> its grid, extended by the runner as validation asks
        for label, cell in self.cells.items():
            if not cell.grid:
                cells[label] = cell
                continue
            if len(cell.grid) != 1 or cell.group or cell.source_row:
                raise UserError(f"cell {label}: a grid takes one KEY and no group or source_row of its own "
                                f"(its variants form the group {label!r})")
            (key, values), = cell.grid.items()
            self.grids[label] = Grid(label, cell, key, list(values))
            cells.update({self.grids[label].label(v): self.grids[label].variant(v) for v in values})
        self.cells = cells

    def extend_grid(self, group: str, end: int) -> str:
        """Add the value beyond end ``end`` (0: the first listed, -1: the last) of ``group``'s grid as a cell, placed
        beside that end; returns its label."""
        grid = self.grids[group]
        value = grid.beyond(end)
        label, labels = grid.label(value), list(self.cells)
        at = labels.index(grid.label(grid.values[end])) + (end != 0)
        self.cells = {x: self.cells[x] for x in labels[:at]} | {label: grid.variant(value)} | {
            x: self.cells[x] for x in labels[at:]}
        grid.values.insert(0 if end == 0 else len(grid.values), value)
        grid.added[end != 0] += 1
        return label

    def groups(self) -> dict[str, list[str]]:
        """Group name -> its cell labels, in cell order (an ungrouped cell is a group of one, named by its label)."""
        out: dict[str, list[str]] = {}
        for label, cell in self.cells.items():
            out.setdefault(cell.group_name(label), []).append(label)
        return out


@dataclass
class Claim:
    """A seed paper's claim: ``better`` beats ``than`` (means over the listed groups or cells and the seeds) on every
    metric, or, with ``tolerance``, stays within ``tolerance`` of it. A group stands for its selected variant."""

    claim: str = field(metadata={"help": "the claim in words, with its source"})
    task: str = field(metadata={"help": "task whose cells are compared"})
    better: list[str] = field(metadata={"help": "group or cell labels (averaged)"})
    than: list[str] = field(metadata={"help": "group or cell labels (averaged)"})
    metrics: list[str] = field(metadata={"help": f"among {METRICS}"})
    tolerance: float | None = field(default=None, metadata={"help": "claim of 'unchanged': |difference| <= this",
                                                            "ge": 0})


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
        empty = [name for name, task in self.tasks.items() if task.seeds is not None and not task.seeds]
        if empty:
            raise UserError(f"protocol {self.name}: task(s) {empty} list no seeds; give at least one or drop the key")
        for name, task in self.tasks.items():
            self._check_task(name, task)
        for c in self.claims:
            if c.task not in self.tasks:
                raise UserError(f"protocol {self.name}: claim {c.claim!r} names unknown task {c.task!r}")
            unknown = ([x for x in (*c.better, *c.than) if x not in self.names(c.task)]
                       + [m for m in c.metrics if m not in METRICS])
            if unknown:
                raise UserError(f"protocol {self.name}: claim {c.claim!r} names unknown cells/metrics {unknown}")

    def _check_task(self, name: str, task: Task) -> None:
        """Cell references point backwards; group and source-row names are unambiguous."""
        labels, tasks = list(task.cells), list(self.tasks)
        for label, cell in task.cells.items():
            for ref in cell_refs(cell.set):
                other, _, ref_label = ref.rpartition("/")
                if other:
                    ok = (other in tasks and tasks.index(other) < tasks.index(name)
                          and ref_label in self.tasks[other].cells)
                else:
                    ok = ref in task.cells and labels.index(ref) < labels.index(label)
                if not ok:
                    raise UserError(f"protocol {self.name}: cell {name}/{label} refers to {{cell:{ref}}}, which "
                                    f"is neither an earlier cell of task {name} nor TASK/LABEL of an earlier task")
            if cell.source_row and cell.group:
                raise UserError(f"protocol {self.name}: cell {name}/{label} is a variant of group {cell.group!r}, "
                                f"so it cannot report a source_row (one source row per seed needs one cell)")
        sources = [c.source_row for c in task.cells.values() if c.source_row]
        groups = {c.group for c in task.cells.values() if c.group}
        clashes = (groups & set(labels)) | (set(sources) & (groups | set(labels)))
        clashes |= {s for s in sources if sources.count(s) > 1}
        if clashes:
            raise UserError(f"protocol {self.name}: task {name} gives the name(s) {sorted(clashes)} to more than one "
                            f"cell, group or source row; rename them so that a claim names one thing")

    def names(self, task: str) -> set[str]:
        """What a claim on ``task`` may name: its cells, groups and source rows."""
        t = self.tasks[task]
        return set(t.cells) | set(t.groups()) | {c.source_row for c in t.cells.values() if c.source_row}


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
    data = read_yaml(path, f"protocol {path}")
    if not isinstance(data, dict):
        raise UserError(f"protocol {path} must hold a mapping at the top level")
    return from_dict(Protocol, data)


def slug(label: str) -> str:
    """A directory name for a run label."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in label.replace("λ", "lam"))


def cell_dir(out: Path, task: str, label: str, seed: int) -> Path:
    """Run directory of one cell."""
    return out / "runs" / task / slug(label) / f"seed{seed}"


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """``value`` with ``change`` applied to every string in it (mapping values, list items)."""
    if isinstance(value, dict):
        return {k: _map_strings(v, change) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, change) for v in value]
    return change(value) if isinstance(value, str) else value


def _substitute(value: Any, roots: dict[str, str]) -> Any:
    """``{data}``/``{models}`` replaced in every string of a nested config."""
    return _map_strings(value, lambda s: s.replace("{data}", roots["data"]).replace("{models}", roots["models"]))


def task_config(protocol: Protocol, task: str, overrides: dict[str, Any], roots: dict[str, str]) -> RunConfig:
    """The validated run config of ``task``'s base config with ``overrides`` (``{dotted.key: value}``, placeholders
    substituted) set."""
    data = set_keys(copy.deepcopy(_substitute(protocol.tasks[task].config, roots)), _substitute(overrides, roots),
                    "protocol override")
    return from_dict(RunConfig, data)


def resolve_cells(protocol: Protocol, overrides: dict[str, Any], out: Path, task: str, seed: int) -> dict[str, Any]:
    """``overrides`` with each ``{cell:LABEL}`` / ``{cell:TASK/LABEL}`` replaced by that cell's run directory for
    ``seed`` (for the first seed of a task with its own seeds that does not run ``seed``)."""
    def run_dir(m: re.Match) -> str:
        other, _, label = m.group(1).rpartition("/")
        own = protocol.tasks[other or task].seeds
        return str(cell_dir(out, other or task, label, seed if own is None or seed in own else own[0]))

    return _map_strings(overrides, lambda s: _CELL_REF.sub(run_dir, s))


def cell_config(protocol: Protocol, task: str, label: str, seed: int, out: Path, roots: dict[str, str]) -> RunConfig:
    """The validated run config of one cell."""
    spec = protocol.tasks[task].cells[label]
    return task_config(protocol, task, {"method": spec.method, "train.seed": seed,
                                        **resolve_cells(protocol, spec.set, out, task, seed)}, roots)
