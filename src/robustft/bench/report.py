"""The report of a benchmark protocol: each group's variant selected on validation, mean ± spread over seeds per cell
and per group, the seed papers' claims checked, plots. Rows are ``report.result_row`` rows plus task, seed, group."""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_write, atomic_write_json
from ..engine.train import select_value
from ..layout import RunLayout
from ..report import plot_alpha_curves, plot_clean_vs_robust, plot_mrc, plot_norm_diagnostics, plot_training_curves
from .protocol import Protocol

__all__ = ["select_variants", "aggregate", "check_claims", "write_protocol_report"]

# protocol metric name -> row key
METRIC_KEYS = {"clean": "test_clean", "pgd": "test_pgd", "autoattack": "test_autoattack",
               "corruption": "test_corruption"}
AVERAGED = (*METRIC_KEYS.values(), "val_robust", "wall_s", "autoattack_s", "train_images_per_s")


def select_variants(rows: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    """The rows with ``selected`` set: per task, seed and group, the variant with the highest validation number
    under ``rule`` (as ``eval.select``: robust_acc, clean_acc or sum; the first listed wins a tie). A test number
    never counts."""
    def validation(row: dict[str, Any]) -> float:
        return select_value({"val_clean_acc": row["val_clean"], "val_robust_acc": row["val_robust"]}, rule)

    best: dict[tuple[str, int, str], int] = {}
    for i, row in enumerate(rows):
        key = (row["task"], row["seed"], row["group"])
        if key not in best or validation(row) > validation(rows[best[key]]):
            best[key] = i
    chosen = set(best.values())
    return [{**row, "selected": i in chosen} for i, row in enumerate(rows)]


def _mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and spread (half the range: the mean ± spread interval covers every seed)."""
    return sum(values) / len(values), (max(values) - min(values)) / 2


def aggregate(rows: list[dict[str, Any]], *, groups: bool = False) -> list[dict[str, Any]]:
    """One entry per (task, cell label) in first-seen order — or, with ``groups``, per (task, group) over each seed's
    selected variant (named per seed in ``variants``): mean, spread and seed count of every averaged key."""
    key = "group" if groups else "label"
    buckets: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["selected"] or not groups:
            buckets.setdefault((row["task"], row[key]), []).append(row)
    table = []
    for (task, label), members in buckets.items():
        entry: dict[str, Any] = {"task": task, "label": label, "method": members[0]["method"],
                                 "seeds": [r["seed"] for r in members]}
        if groups:
            entry["variants"] = [r["label"] for r in members]
        else:
            entry["selected_seeds"] = [r["seed"] for r in members if r["selected"]]
        for k in AVERAGED:
            values = [r[k] for r in members if r.get(k) is not None]
            if values:
                entry[k], entry[f"{k}_spread"] = _mean_spread(values)
                entry[f"{k}_n"] = len(values)
        if "n_autoattack" in members[0]:
            entry["n_autoattack"] = members[0]["n_autoattack"]
        entry.update(n_test=members[0]["n_test"], pgd_name=members[0]["pgd_name"])
        table.append(entry)
    return table


def _value(rows: list[dict[str, Any]], task: str, seed: int, name: str, key: str) -> float | None:
    """One seed's number of what a claim names: a cell or source row by its label, a group by its selected variant."""
    for r in rows:
        if r["task"] == task and r["seed"] == seed and (r["label"] == name or r["group"] == name and r["selected"]):
            return r.get(key)
    return None


def check_claims(claims: Sequence[Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per claim and metric: the difference (mean of ``better`` − mean of ``than``) per seed and over seeds, and
    whether the claim held: on every metric and every seed measured, difference > 0 (or, for an 'unchanged' claim,
    |difference| <= ``tolerance``). A group counts with its variant selected on validation for that seed."""
    out = []
    for claim in claims:
        metrics, held = {}, True
        for metric in claim.metrics:
            key = METRIC_KEYS[metric]
            per_seed = {}
            for seed in sorted({r["seed"] for r in rows}):
                value = {x: _value(rows, claim.task, seed, x, key) for x in (*claim.better, *claim.than)}
                if all(v is not None for v in value.values()):
                    per_seed[seed] = (sum(value[x] for x in claim.better) / len(claim.better)
                                      - sum(value[x] for x in claim.than) / len(claim.than))
            if not per_seed:
                metrics[metric] = {"difference": None, "per_seed": {}}
                held = False
                continue
            diff = sum(per_seed.values()) / len(per_seed)
            n = min(r["n_autoattack" if metric == "autoattack" else "n_test"] for r in rows
                    if r["task"] == claim.task and r.get(key) is not None)
            # two binomial standard errors of one accuracy (at most 2·0.5/√n): a smaller difference is test noise
            metrics[metric] = {"difference": diff, "per_seed": per_seed, "noise": 1 / n ** 0.5}
            if claim.tolerance is not None:
                held &= all(abs(d) <= claim.tolerance for d in per_seed.values())
            else:
                held &= all(d > 0 for d in per_seed.values())
        within_noise = claim.tolerance is None and any(
            m["difference"] is not None and abs(m["difference"]) < m["noise"] for m in metrics.values())
        out.append({"claim": claim.claim, "task": claim.task, "better": claim.better, "than": claim.than,
                    "tolerance": claim.tolerance, "metrics": metrics, "held": held, "within_noise": within_noise})
    return out


def _fmt(entry: dict[str, Any], key: str, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± spread`` (spread only with more than one seed)."""
    if key not in entry:
        return "–"
    text = f"{scale * entry[key]:.{digits}f}"
    return text + (f" ± {scale * entry[f'{key}_spread']:.{digits}f}" if entry[f"{key}_n"] > 1 else "")


def _numbers(e: dict[str, Any]) -> str:
    """The metric cells of one table line: clean, PGD, AutoAttack, corruption mean, val robust."""
    return " | ".join(_fmt(e, k) for k in ("test_clean", "test_pgd", "test_autoattack", "test_corruption",
                                           "val_robust"))


def _verdict(claim: dict[str, Any]) -> str:
    """held / held, within noise / did not hold."""
    if not claim["held"]:
        return "did not hold"
    return "held, within noise" if claim["within_noise"] else "held"


def _task_lines(protocol: Protocol, name: str, cells: list[dict[str, Any]], groups: list[dict[str, Any]]) -> list[str]:
    """One task's section: what was measured, the cell table and, for a task with variant groups, the group table."""
    task = protocol.tasks[name]
    aa = task.autoattack
    grouped = any(c.group for c in task.cells.values())
    n = cells[0]["n_test"]
    measured = f"Test: {n} images (clean, {str(cells[0]['pgd_name']).upper()}, corruption mean)"
    noise = f"Binomial standard error of one accuracy: at most {50 / n ** 0.5:.1f} points on the test images"
    if aa.n:
        measured += (f"; AutoAttack ({aa.version}) on {aa.n} class-balanced test images, seeds "
                     f"{aa.seeds if aa.seeds is not None else protocol.seeds}"
                     + (", selected variants only" if aa.selected_only else ""))
        noise += f", {50 / aa.n ** 0.5:.1f} on the AutoAttack subset"
    lines = [f"## {name}: {task.title}", "", f"{measured}. {noise}; smaller differences are within test-set noise.",
             "",
             "| method | clean | PGD | AutoAttack | corruption mean | val robust | seeds | wall s | train img/s |"
             + (" selected for seeds |" if grouped else ""), "|---|---|---|---|---|---|---|---|---|"
             + ("---|" if grouped else "")]
    for e in cells:
        lines.append(f"| {e['label']} | {_numbers(e)} | {len(e['seeds'])} | {_fmt(e, 'wall_s', 1, 0)} | "
                     f"{_fmt(e, 'train_images_per_s', 1, 0)} |"
                     + (f" {', '.join(map(str, e['selected_seeds'])) or '–'} |" if grouped else ""))
    if grouped:
        lines += ["", f"Per method (group of variants), the variant with the best validation {task.select} of each "
                  "seed — never a test number — and its numbers:", "",
                  "| method | selected variant per seed | clean | PGD | AutoAttack | corruption mean | val robust |",
                  "|---|---|---|---|---|---|---|"]
        for g in groups:
            variants = ", ".join(f"{seed}: {label}" for seed, label in zip(g["seeds"], g["variants"], strict=True))
            lines.append(f"| {g['label']} | {variants} | {_numbers(g)} |")
    return [*lines, ""]


def _markdown(protocol: Protocol, table: list[dict[str, Any]], groups: list[dict[str, Any]],
              claims: list[dict[str, Any]], record: dict[str, Any]) -> str:
    """results.md: the tables per task, the claims, how it was made."""
    prov = record["provenance"]
    finished = [r["finished_utc"] for r in record["rows"] if "finished_utc" in r]
    lines = [f"# Benchmark protocol `{protocol.name}`", "", protocol.description.strip(), "",
             f"Generated by `{record['command']}`; every number below is read from the cells' files. Accuracies in "
             "%, mean ± spread over seeds (spread = half the range, so the interval covers every seed); selection "
             "on validation only (never test).", ""]
    for name in protocol.tasks:
        lines += _task_lines(protocol, name, [e for e in table if e["task"] == name],
                             [g for g in groups if g["task"] == name])
    lines += ["## Claims of the seed papers, checked here", "",
              "A claim held if the difference (mean of the listed cells, in points) has the claimed sign on every "
              "metric and every seed measured — or, for an 'unchanged' claim, stays within the tolerance. "
              "'Within noise': smaller than two binomial standard errors of one accuracy (100/√n points), so that "
              "sign is not established by this test set.", "",
              "| claim | metric: difference (per seed) | held here? |", "|---|---|---|"]
    for c in claims:
        parts = []
        for metric, m in c["metrics"].items():
            if m["difference"] is None:
                parts.append(f"{metric}: not measured")
                continue
            seeds = ", ".join(f"{100 * d:+.1f}" for d in m["per_seed"].values())
            noise = " — within noise" if c["tolerance"] is None and abs(m["difference"]) < m["noise"] else ""
            parts.append(f"{metric}: {100 * m['difference']:+.1f} ({seeds}){noise}")
        rule = f" (within ±{100 * c['tolerance']:.1f})" if c["tolerance"] is not None else ""
        lines.append(f"| {c['claim']}{rule}: {' + '.join(c['better'])} vs {' + '.join(c['than'])} | "
                     f"{'; '.join(parts)} | **{_verdict(c)}** |")
    lines += ["", f"Machine: {prov['platform']}, {prov['cpu_count']} CPUs, Python {prov['python']}, torch "
              f"{prov['torch']}, robustft {prov.get('robustft')} (git {prov.get('git_sha')}). Seeds "
              f"{record['seeds']}; the cells' own wall times (training, test, AutoAttack) sum to "
              f"{record['cells_wall_s']:.0f} s, the cells finished between {min(finished)} and {max(finished)}; this "
              f"report's invocation took {record['wall_s']:.0f} s (finished cells are reused).", ""]
    return "\n".join(lines)


def write_protocol_report(protocol: Protocol, record: dict[str, Any], out_dir: Path) -> list[Path]:
    """results.json, results.md and the plots of a protocol run; returns the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = record["rows"]
    table, groups = aggregate(rows), aggregate(rows, groups=True)
    claims = check_claims(protocol.claims, rows)
    record = {**record, "table": table, "groups": groups, "claims": claims}
    written = [atomic_write_json(record, out_dir / "results.json"),
               atomic_write(out_dir / "results.md",
                            lambda tmp: Path(tmp).write_text(_markdown(protocol, table, groups, claims, record)))]
    first = min(record["seeds"])
    for task_name, task in protocol.tasks.items():
        entries = [g for g in groups if g["task"] == task_name and "test_pgd" in g]
        if entries:
            written.append(plot_clean_vs_robust(entries, out_dir / f"{task_name}_clean_vs_robust.png",
                                                title=f"{task.title} (test, mean ± spread)"))
        cells = [r for r in rows if r["task"] == task_name and r["seed"] == first and "metrics" in r]
        histories = {r["label"]: [json.loads(x) for x in Path(r["metrics"]).read_text().splitlines()] for r in cells}
        if histories:
            written.append(plot_training_curves(histories, out_dir / f"{task_name}_training_curves.png"))
        diagnosed = {k: h for k, h in histories.items() if h and "conv_weight_norm" in h[0]}
        if diagnosed:
            written.append(plot_norm_diagnostics(diagnosed, out_dir / f"{task_name}_norm_diagnostics.png"))
        for r in cells:
            alpha, mrc = (RunLayout(r["run_dir"]).artifact(stem) for stem in ("alpha_curve", "mrc"))
            if alpha.is_file():
                curve = json.loads(alpha.read_text())
                written.append(plot_alpha_curves(curve["curve"], out_dir / f"{task_name}_alpha_curve.png",
                                                 chosen=curve["alpha"], tolerance=curve["tolerance"]))
            if mrc.is_file():
                written.append(plot_mrc(json.loads(mrc.read_text()), out_dir / f"{task_name}_mrc.png"))
    return written
