"""`robustft report` and ``robustft.compare_runs``: one comparison (markdown + CSV table, PNG plots) from any set of
run directories."""

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write
from ..errors import UserError
from .plots import plot_alpha_curves, plot_clean_vs_robust, plot_mrc, plot_norm_diagnostics, plot_training_curves
from .tables import load_run, markdown_table, result_row

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
    if all(row["test_pgd"] is not None for row in rows):
        written.append(plot_clean_vs_robust(rows, out_dir / "clean_vs_robust.png"))
    histories = {label: list(r["history"].values())[-1] for label, r in runs.items() if r["history"]}
    if histories:
        written.append(plot_training_curves(histories, out_dir / "training_curves.png"))
    diagnosed = {label: h for label, h in histories.items() if h and "conv_weight_norm" in h[0]}
    if diagnosed:
        written.append(plot_norm_diagnostics(diagnosed, out_dir / "norm_diagnostics.png"))
    for label, run_dir in zip(runs, run_dirs, strict=True):
        stem = label.replace("/", "_")
        if (run_dir / "alpha_curve.json").is_file():
            record = json.loads((run_dir / "alpha_curve.json").read_text())
            written.append(plot_alpha_curves(record["curve"], out_dir / f"{stem}_alpha_curve.png",
                                             chosen=record["alpha"], tolerance=record["tolerance"]))
        if (run_dir / "mrc.json").is_file():
            written.append(plot_mrc(json.loads((run_dir / "mrc.json").read_text()), out_dir / f"{stem}_mrc.png"))
    return Comparison(rows, written)
