"""The report of a benchmark protocol: mean ± spread over seeds per cell, the seed papers' claims checked, plots."""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_write, atomic_write_json
from .plots import plot_alpha_curves, plot_clean_vs_robust, plot_mrc, plot_norm_diagnostics, plot_training_curves

__all__ = ["aggregate", "check_claims", "write_protocol_report"]

# protocol metric name -> row key
METRIC_KEYS = {"clean": "test_clean", "pgd": "test_pgd", "autoattack": "test_autoattack",
               "corruption": "test_corruption"}
AVERAGED = (*METRIC_KEYS.values(), "val_robust", "wall_s", "autoattack_s", "train_images_per_s")


def _mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and spread (half the range: the mean ± spread interval covers every seed)."""
    return sum(values) / len(values), (max(values) - min(values)) / 2


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (task, label) in first-seen order: mean, spread and seed count of every averaged key."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["label"]), []).append(row)
    table = []
    for (task, label), group in groups.items():
        entry: dict[str, Any] = {"task": task, "label": label, "method": group[0]["method"],
                                 "seeds": [r["seed"] for r in group]}
        for key in AVERAGED:
            values = [r[key] for r in group if r.get(key) is not None]
            if values:
                entry[key], entry[f"{key}_spread"] = _mean_spread(values)
                entry[f"{key}_n"] = len(values)
        if "n_autoattack" in group[0]:
            entry["n_autoattack"] = group[0]["n_autoattack"]
        entry.update(n_test=group[0]["n_test"], pgd_name=group[0]["pgd_name"])
        table.append(entry)
    return table


def check_claims(claims: Sequence[Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per claim and metric: the difference (mean of ``better`` − mean of ``than``) per seed and over seeds, and
    whether the claim held: on every metric and every seed measured, difference > 0 (or, for an 'unchanged' claim,
    |difference| <= ``tolerance``)."""
    out = []
    for claim in claims:
        metrics, held = {}, True
        for metric in claim.metrics:
            key = METRIC_KEYS[metric]
            per_seed = {}
            for seed in sorted({r["seed"] for r in rows}):
                value = {r["label"]: r.get(key) for r in rows if r["task"] == claim.task and r["seed"] == seed}
                if all(value.get(x) is not None for x in (*claim.better, *claim.than)):
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


def _verdict(claim: dict[str, Any]) -> str:
    """held / held, within noise / did not hold."""
    if not claim["held"]:
        return "did not hold"
    return "held, within noise" if claim["within_noise"] else "held"


def _markdown(protocol: Any, table: list[dict[str, Any]], claims: list[dict[str, Any]], record: dict[str, Any]) -> str:
    """results.md: the table per task, the claims, how it was made."""
    prov = record["provenance"]
    finished = [r["finished_utc"] for r in record["rows"] if "finished_utc" in r]
    lines = [f"# Benchmark protocol `{protocol.name}`", "", protocol.description.strip(), "",
             f"Generated by `{record['command']}`; every number below is read from the cells' files. Accuracies in "
             "%, mean ± spread over seeds (spread = half the range, so the interval covers every seed); selection "
             "on validation only (never test).", ""]
    for task_name, task in protocol.tasks.items():
        entries = [e for e in table if e["task"] == task_name]
        aa = task.autoattack
        lines += [f"## {task_name}: {task.title}", "",
                  f"Test: {entries[0]['n_test']} images (clean, {str(entries[0]['pgd_name']).upper()}, corruption "
                  "mean)" + (f"; AutoAttack ({aa.version}) on {aa.n} class-balanced test images, seeds "
                             f"{aa.seeds if aa.seeds is not None else protocol.seeds}" if aa.n else "")
                  + f". Binomial standard error of one accuracy: at most {50 / entries[0]['n_test'] ** 0.5:.1f} "
                  "points on the test images" + (f", {50 / aa.n ** 0.5:.1f} on the AutoAttack subset" if aa.n else "")
                  + "; smaller differences are within test-set noise.", "",
                  "| method | clean | PGD | AutoAttack | corruption mean | val robust | seeds | wall s | train img/s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for e in entries:
            lines.append(f"| {e['label']} | {_fmt(e, 'test_clean')} | {_fmt(e, 'test_pgd')} | "
                         f"{_fmt(e, 'test_autoattack')} | {_fmt(e, 'test_corruption')} | {_fmt(e, 'val_robust')} | "
                         f"{len(e['seeds'])} | {_fmt(e, 'wall_s', 1, 0)} | {_fmt(e, 'train_images_per_s', 1, 0)} |")
        lines.append("")
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


def write_protocol_report(protocol: Any, record: dict[str, Any], out_dir: Path) -> list[Path]:
    """results.json, results.md and the plots of a protocol run; returns the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = record["rows"]
    table = aggregate(rows)
    claims = check_claims(protocol.claims, rows)
    record = {**record, "table": table, "claims": claims}
    written = [atomic_write_json(record, out_dir / "results.json"),
               atomic_write(out_dir / "results.md",
                            lambda tmp: Path(tmp).write_text(_markdown(protocol, table, claims, record)))]
    first = min(record["seeds"])
    for task_name, task in protocol.tasks.items():
        entries = [{**e, "run": e["label"]} for e in table if e["task"] == task_name and "test_pgd" in e]
        if entries:
            written.append(plot_clean_vs_robust(entries, out_dir / f"{task_name}_clean_vs_robust.png", "test_pgd",
                                                title=f"{task.title} (test, mean ± spread)"))
        cells = [r for r in rows if r["task"] == task_name and r["seed"] == first and "metrics" in r]
        histories = {r["label"]: [json.loads(x) for x in Path(r["metrics"]).read_text().splitlines()] for r in cells}
        if histories:
            written.append(plot_training_curves(histories, out_dir / f"{task_name}_training_curves.png"))
        diagnosed = {k: h for k, h in histories.items() if h and "conv_weight_norm" in h[0]}
        if diagnosed:
            written.append(plot_norm_diagnostics(diagnosed, out_dir / f"{task_name}_norm_diagnostics.png"))
        for r in cells:
            run_dir = Path(r["run_dir"])
            if (run_dir / "alpha_curve.json").is_file():
                alpha = json.loads((run_dir / "alpha_curve.json").read_text())
                written.append(plot_alpha_curves(alpha["curve"], out_dir / f"{task_name}_alpha_curve.png",
                                                 chosen=alpha["alpha"], tolerance=alpha["tolerance"]))
            if (run_dir / "mrc.json").is_file():
                written.append(plot_mrc(json.loads((run_dir / "mrc.json").read_text()),
                                        out_dir / f"{task_name}_mrc.png"))
    return written

