"""`robustft report` and ``robustft.compare_runs``: one comparison (markdown + CSV table, PNG plots) from any set of
run directories."""

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write
from ..errors import UserError
from .paired import accuracy_intervals
from .plots import plot_runs
from .tables import load_run, markdown_table, result_row, run_artifacts

__all__ = ["Comparison", "compare_runs"]


@dataclass
class Comparison:
    """Finished runs side by side: one row per run (``result_row``) and the files written (none without a directory);
    prints, and shows in a notebook, as the markdown table."""

    rows: list[dict[str, Any]]
    paths: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        """The markdown table."""
        return markdown_table(self.rows)

    def _repr_markdown_(self) -> str:
        """Jupyter's rich display: the table."""
        return str(self)


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    """Short unique labels: the directory names, with their parents where names repeat."""
    names = [d.name for d in run_dirs]
    return names if len(set(names)) == len(names) else [f"{d.parent.name}/{d.name}" for d in run_dirs]


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None) -> Comparison:
    """The table comparing finished runs and, with ``out_dir``, its files there (results.md, results.csv) and plots;
    numbers are read from the runs' files, never recomputed."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise UserError("a report needs at least one run directory")
    runs = {label: load_run(d) for label, d in zip(_labels(run_dirs), run_dirs, strict=True)}
    rows = [result_row(r, label) for label, r in runs.items()]
    if out_dir is None:
        return Comparison(rows)
    out_dir = Path(out_dir)  # created only once every run directory has been read
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [atomic_write(out_dir / "results.md", lambda tmp: Path(tmp).write_text(markdown_table(rows)))]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    written.append(atomic_write(out_dir / "results.csv", lambda tmp: Path(tmp).write_text(buffer.getvalue())))
    histories = {label: list(r["history"].values())[-1] for label, r in runs.items() if r["history"]}
    written += plot_runs(out_dir, [accuracy_intervals(row, [row]) for row in rows], histories,
                         {row["label"]: row["best_epoch"] for row in rows},
                         [(label.replace("/", "_"), run_artifacts(d)) for label, d in zip(runs, run_dirs, strict=True)])
    return Comparison(rows, written)
