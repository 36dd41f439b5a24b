"""Read run directories (results.json, metrics.jsonl) and lay their numbers out as tables."""

import html
import json
from pathlib import Path
from typing import Any

from ..layout import RunLayout

__all__ = ["load_run", "result_row", "markdown_table", "CURVE_KEYS", "curve_columns", "curve_history",
           "run_artifacts"]

CURVE_KEYS = ("epoch", "lr", "train_loss", "val_clean_acc", "val_robust_acc", "conv_weight_norm", "conv_grad_norm",
              "effective_step")
"""The per-epoch numbers (of ``metrics.jsonl``) that the plots and curve tables use."""


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """``results.json`` of a finished run plus its per-epoch history (``history``) from every stage and its
    per-test-image flags (``samples``, empty for a run made before they were written)."""
    layout = RunLayout(Path(run_dir))
    results = layout.read_results()
    results["samples"] = layout.read_json(layout.samples) if layout.samples.is_file() else {}
    results["history"] = {}
    for name, stage in results.get("stages", {}).items():
        metrics = RunLayout(stage["run_dir"]).metrics
        if metrics.is_file():
            results["history"][name] = [json.loads(line) for line in metrics.read_text().splitlines()]
    return results


def curve_columns(history: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """A per-epoch history as one list per ``CURVE_KEYS`` key it has (None for an epoch without it): compact JSON."""
    return {k: [h.get(k) for h in history] for k in CURVE_KEYS if any(k in h for h in history)}


def curve_history(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """``curve_columns`` back as one dict per epoch (a key left out where its value is None)."""
    return [{k: v for k, v in zip(columns, epoch, strict=True) if v is not None} for epoch in zip(*columns.values())]


def run_artifacts(run_dir: str | Path) -> dict[str, Any]:
    """What the plots need of the artifacts a run's method wrote: RiFT's ``alpha_curve`` (curve, α*, tolerance,
    attack, n) and ``mrc`` profile (each module's name and MRC in network order, the chosen one, ε, steps, n)."""
    layout, out = RunLayout(Path(run_dir)), {}
    alpha, mrc = (layout.artifact(name) for name in ("alpha_curve", "mrc"))
    if alpha.is_file():
        record = layout.read_json(alpha)
        out["alpha_curve"] = {k: record[k] for k in ("curve", "alpha", "tolerance", "attack", "n") if k in record}
    if mrc.is_file():
        record = layout.read_json(mrc)
        out["mrc"] = {"modules": [{"name": m["name"], "mrc": m["mrc"]} for m in record["modules"]],
                      **{k: record[k] for k in ("chosen", "lowest", "eps", "steps", "n") if k in record}}
    return out


def result_row(run: dict[str, Any], label: str | None = None, *, source: bool = False,
               autoattack: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one row schema of a finished run (``load_run``), shared by ``robustft report``, the demo and benchmark
    protocols: selection (validation) and cost, then test numbers — ``test_pgd`` named by ``pgd_name`` — of the run's
    model, or with ``source`` of its source model (``eval.test_source``; no selection or cost). AutoAttack comes from
    ``autoattack`` (a subset record computed outside the run, whose seconds are ``autoattack_s``), else from the
    tested model's own ``test_autoattack``. ``samples`` holds the per-image flags (clean, pgd, autoattack: one
    string each; corruption: one string per corruption and severity, on the same images) that exist."""
    tested = run["test_source"] if source else run
    test = tested["test"]
    row: dict[str, Any] = {"label": label or run["method"], "method": run["method"]}
    stage, best = list(run["stages"].items())[-1]  # the last stage's selection is the run's
    if not source:
        row.update(best_epoch=best["best_epoch"], val_clean=best["best_val"]["val_clean_acc"],
                   val_robust=best["best_val"]["val_robust_acc"])
    row.update(test_clean=test["clean_acc"], test_pgd=None, pgd_name=None)
    for name, acc in test["robust_acc"].items():
        row.update({"test_pgd": acc, "pgd_name": name} if name.startswith("pgd") else {f"test_{name}": acc})
    aa = autoattack or tested.get("test_autoattack")
    if aa:
        row.update(test_autoattack=aa["robust_acc"]["autoattack"], aa_subset_clean=aa["clean_acc"])
        if row["pgd_name"] in aa["robust_acc"]:
            row["aa_subset_pgd"] = aa["robust_acc"][row["pgd_name"]]
        row["n_autoattack"] = aa["n"]
        if autoattack:
            row["autoattack_s"] = aa["timing"]["total"]
    if "test_corruptions" in tested:
        row["test_corruption"] = tested["test_corruptions"]["mean"]
    row["n_test"] = test["n"]
    if means := test.get("class_mean_acc"):  # mean per-class accuracy, beside the plain one
        row.update(test_clean_class_mean=means["clean"], test_pgd_class_mean=means.get(row["pgd_name"]))
    flags = run.get("samples", {}).get("test_source" if source else "test", {})
    samples = {"clean": flags.get("clean"), "pgd": flags.get(row["pgd_name"]),
               "autoattack": (aa or {}).get("samples", {}).get("autoattack"),
               "corruption": [v for k, v in sorted(flags.items()) if k.startswith("corruption:")]}
    if present := {k: v for k, v in samples.items() if v}:
        row["samples"] = present  # per-image flags for paired comparisons
    if not source:
        history = run["history"].get(stage, [])
        rate = sum(h["train_images_per_s"] for h in history) / len(history) if history else None
        row.update(wall_s=run.get("wall_s"), train_images_per_s=rate)
    return row


def _cell(text: str) -> str:
    """``text`` safe in one Markdown table cell: on one line, HTML shown as text, ``|`` and ``\\`` escaped."""
    return html.escape(" ".join(text.split()), quote=False).replace("\\", "\\\\").replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A GitHub markdown table; accuracies as percentages with one decimal."""
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k, v in row.items() if not isinstance(v, dict)))

    def fmt(key: str, value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float) and key.startswith(("val_", "test_", "aa_subset_")):
            return f"{100 * value:.1f}"
        if isinstance(value, float):
            return f"{value:.0f}"
        return _cell(str(value))

    lines = ["| " + " | ".join(map(_cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(c, row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
