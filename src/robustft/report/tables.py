"""Read run directories (results.json, metrics.jsonl) and lay their numbers out as tables."""

import json
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["load_run", "summary_row", "markdown_table"]


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """``results.json`` of a finished run plus its per-epoch history (``history``) from every stage."""
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not path.is_file():
        raise UserError(f"{run_dir} has no results.json: it is not a finished robustft run")
    results = json.loads(path.read_text())
    results["history"] = {}
    for name, stage in results.get("stages", {}).items():
        metrics = Path(stage["run_dir"]) / "metrics.jsonl"
        if metrics.is_file():
            results["history"][name] = [json.loads(line) for line in metrics.read_text().splitlines()]
    return results


def summary_row(results: dict[str, Any], label: str | None = None) -> dict[str, Any]:
    """One table row: selection (validation) and final test numbers of a run."""
    test = results["test"]
    last = list(results["stages"].values())[-1]
    row = {"run": label or results["method"], "method": results["method"], "best_epoch": last["best_epoch"],
           "val_clean": last["best_val"]["val_clean_acc"], "val_robust": last["best_val"]["val_robust_acc"],
           "test_clean": test["clean_acc"], **{f"test_{k}": v for k, v in test["robust_acc"].items()},
           "n_test": test["n"], "wall_s": results.get("wall_s")}
    if "test_autoattack" in results:
        row["test_autoattack"] = results["test_autoattack"]["robust_acc"]["autoattack"]
        row["n_autoattack"] = results["test_autoattack"]["n"]
    if "test_corruptions" in results:
        row["test_corruption_mean"] = results["test_corruptions"]["mean"]
    return row


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A GitHub markdown table; accuracies as percentages with one decimal."""
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def fmt(key: str, value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float) and (key.startswith(("val_", "test_"))):
            return f"{100 * value:.1f}"
        if isinstance(value, float):
            return f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(c, row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
