"""`robustft report`: one comparison (markdown + CSV table, PNG plots) from any set of run directories."""

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from .._io import atomic_write
from ..errors import UserError
from .plots import plot_alpha_curves, plot_clean_vs_robust, plot_mrc, plot_norm_diagnostics, plot_training_curves
from .tables import load_run, markdown_table, result_row

__all__ = ["write_report"]


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    """Short unique labels: the directory names, with their parents where names repeat."""
    names = [d.name for d in run_dirs]
    return names if len(set(names)) == len(names) else [f"{d.parent.name}/{d.name}" for d in run_dirs]


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """Tables and plots comparing finished runs; numbers are read from their files, never recomputed."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise UserError("robustft report needs at least one run directory")
    runs = {label: load_run(d) for label, d in zip(_labels(run_dirs), run_dirs, strict=True)}
    out_dir = Path(out_dir)  # created only once every run directory has been read
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [result_row(r, label) for label, r in runs.items()]
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
    return written
