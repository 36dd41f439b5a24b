"""Redraw the committed plots of `bench/results/` from the committed results.json files alone: no training, no
number changed. What a results.json holds is redrawn; what lives only in the cells' run directories (per-epoch
curves, norm diagnostics, a protocol cell's α-curve and MRC profile, the MRC profiles' ε/steps) is redrawn only where
those directories exist on this machine, and the script names every PNG it left as it was.

- protocol reports (`robustft bench`): `<task>_clean_vs_robust.png` from the rows (95 % intervals from the per-image
  flags and seeds; Wilson's interval for reports made before per-image flags), and `<task>_training_curves.png` etc.
  through `robustft.bench.report.protocol_plots` when the cells' runs are present;
- the predecessor-script reports `transfer_twins/`, `transfer_baselines/`: `clean_vs_robust.png` of the variants they
  selected on validation (one seed, Wilson's interval);
- `rift/`: `variant<i>_alpha_curve.png` from each run's recorded α-curve.

Usage: python bench/replot.py [bench/results/<dir> ...]   (default: every report directory there)
"""

import json
import sys
from pathlib import Path
from typing import Any

from robustft.bench.protocol import load_protocol
from robustft.bench.report import first_seed_cells, protocol_plots
from robustft.report.paired import accuracy_intervals
from robustft.report.plots import plot_alpha_curves, plot_clean_vs_robust

RESULTS = Path(__file__).resolve().parent / "results"
SUITE_TITLES = {"transfer_twins": "ResNet-20 robust CIFAR-10 → CIFAR-100: twins (test, variant selected on validation)",
                "transfer_baselines": "ResNet-20 robust CIFAR-10 → CIFAR-100: baselines (test)"}


def protocol_report(directory: Path, record: dict[str, Any]) -> list[Path]:
    """A `robustft bench` report: its rows through the report's own plotting, curves where the runs exist."""
    protocol = load_protocol(record["protocol"])
    rows = [{"group": r["label"], "selected": True, **r} for r in record["rows"]]  # reports made before groups
    cells = first_seed_cells(protocol, rows)
    present = all(Path(r["metrics"]).is_file() for task in cells.values() for r in task)
    histories = {task: {r["label"]: [json.loads(x) for x in Path(r["metrics"]).read_text().splitlines()]
                        for r in task_cells} for task, task_cells in cells.items()} if present else {}
    return protocol_plots(protocol, rows, directory, histories)


def suite_report(directory: Path, record: dict[str, Any]) -> list[Path]:
    """A predecessor-script report: the variants selected on validation, clean vs PGD-20."""
    points = [accuracy_intervals({"label": r["run"], "test_clean": r["test_clean"], "test_pgd": r["test_pgd20"],
                                  "pgd_name": "pgd20", "n_test": r["n_test"]}, [])
              for r in record["rows"] if r["selected"]]
    return [plot_clean_vs_robust(points, directory / "clean_vs_robust.png", title=SUITE_TITLES[directory.name])]


def rift_report(directory: Path, record: dict[str, Any]) -> list[Path]:
    """`bench/rift.py`'s report: each variant's α-curve as its run recorded it."""
    return [plot_alpha_curves(run["rift"]["alpha_curve"], directory / f"variant{i}_alpha_curve.png",
                              chosen=run["rift"]["alpha"], tolerance=run["rift"]["tolerance"])
            for i, run in enumerate(record["runs"].values())]


def main() -> None:
    """Redraw each named report directory and list what was redrawn and what was not."""
    directories = [Path(a) for a in sys.argv[1:]] or sorted(d for d in RESULTS.iterdir() if d.is_dir())
    for directory in directories:
        path = directory / "results.json"
        if not any(directory.glob("*.png")):
            continue
        record = json.loads(path.read_text())
        kind = protocol_report if "protocol" in record else suite_report if "suite" in record else rift_report
        written = {p.resolve() for p in kind(directory, record)}
        for png in sorted(directory.glob("*.png")):
            print(f"{'redrawn' if png.resolve() in written else 'kept (its data is not in results.json)'}: {png}")


if __name__ == "__main__":
    main()
