"""Redraw the committed plots of `bench/results/` from the committed results.json files alone: no training, no run
directory, no number changed. A PNG in a report directory that its results.json cannot draw (a report written before
the per-epoch curves were kept in it) is removed, so no plot is left that nothing here can check.

- protocol reports (`robustft bench`): through `robustft.bench.report.protocol_plots`, as `robustft bench` draws
  them: `<task>_clean_vs_robust.png` (95 % intervals from the per-image flags and seeds; Wilson's interval for reports
  made before per-image flags) and, from the curves and RiFT records the rows carry, `<task>_training_curves.png`
  (the epoch each cell kept marked), `<task>_norm_diagnostics.png`, `<task>_alpha_curve.png`, `<task>_mrc.png`;
- the predecessor-script reports `transfer_twins/`, `transfer_baselines/`: `clean_vs_robust.png` of the variants they
  selected on validation (one seed, Wilson's interval);
- `rift/`: `variant<i>_alpha_curve.png` and `variant<i>_mrc.png` from each run's recorded α-curve and MRC scores.

Usage: python bench/replot.py [bench/results/<dir> ...]   (default: every report directory there)
"""

import json
import sys
from pathlib import Path
from typing import Any

from robustft.bench.protocol import load_protocol
from robustft.bench.report import protocol_plots
from robustft.errors import UserError
from robustft.report.paired import accuracy_intervals
from robustft.report.plots import plot_alpha_curves, plot_clean_vs_robust, plot_mrc

RESULTS = Path(__file__).resolve().parent / "results"
SUITE_TITLES = {"transfer_twins": "ResNet-20 robust CIFAR-10 → CIFAR-100: twins (test, variant selected on validation)",
                "transfer_baselines": "ResNet-20 robust CIFAR-10 → CIFAR-100: baselines (test)"}


def _titles(record: dict[str, Any]) -> dict[str, str]:
    """The task titles the report recorded; for an older report, its shipped protocol's (else the task names)."""
    if "task_titles" in record:
        return record["task_titles"]
    try:
        return {name: task.title for name, task in load_protocol(record["protocol"]).tasks.items()}
    except UserError:
        return {}


def protocol_report(directory: Path, record: dict[str, Any]) -> list[Path]:
    """A `robustft bench` report, drawn by the report's own plotting from its rows."""
    rows = [{"group": r["label"], "selected": True, **r} for r in record["rows"]]  # reports made before groups
    return protocol_plots(_titles(record), rows, directory)


def suite_report(directory: Path, record: dict[str, Any]) -> list[Path]:
    """A predecessor-script report: the variants selected on validation, clean vs PGD-20."""
    points = [accuracy_intervals({"label": r["run"], "test_clean": r["test_clean"], "test_pgd": r["test_pgd20"],
                                  "pgd_name": "pgd20", "n_test": r["n_test"]}, [])
              for r in record["rows"] if r["selected"]]
    return [plot_clean_vs_robust(points, directory / "clean_vs_robust.png", title=SUITE_TITLES[directory.name])]


def rift_report(directory: Path, record: dict[str, Any]) -> list[Path]:
    """`bench/rift.py`'s report: each variant's α-curve and MRC scores (network order) as its run recorded them."""
    written = []
    for i, (name, run) in enumerate(record["runs"].items()):
        rift = run["rift"]
        written.append(plot_alpha_curves(rift["alpha_curve"], directory / f"variant{i}_alpha_curve.png",
                                         chosen=rift["alpha"], tolerance=rift["tolerance"],
                                         title=f"RiFT α-curve, {name}"))
        profile = {"modules": [{"name": m, "mrc": v} for m, v in rift["mrc"]["scores"].items()],
                   "chosen": rift["module"], "n": rift["mrc"]["n"]}
        written.append(plot_mrc(profile, directory / f"variant{i}_mrc.png"))
    return written


def main() -> None:
    """Redraw each named report directory; remove the PNGs its results.json cannot draw; list both."""
    directories = [Path(a) for a in sys.argv[1:]] or sorted(d for d in RESULTS.iterdir() if d.is_dir())
    for directory in directories:
        path = directory / "results.json"
        if not any(directory.glob("*.png")):
            continue
        record = json.loads(path.read_text())
        kind = protocol_report if "protocol" in record else suite_report if "suite" in record else rift_report
        written = {p.resolve() for p in kind(directory, record)}
        for png in sorted(directory.glob("*.png")):
            if png.resolve() in written:
                print(f"redrawn: {png}")
            else:
                png.unlink()
                print(f"removed (its data is not in results.json): {png}")


if __name__ == "__main__":
    main()
