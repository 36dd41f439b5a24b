"""The report of a benchmark protocol: each group's variant selected on validation, mean ± spread over seeds per cell
and per group, the claims checked on paired per-image differences, plots. Rows are ``report.result_row`` rows plus
task, seed, group."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_write, atomic_write_json
from ..engine.train import select_value
from ..report import paired_difference, verdict
from ..report.paired import accuracy_intervals
from ..report.plots import plot_runs
from ..report.tables import curve_history
from .protocol import Protocol

__all__ = ["select_variants", "aggregate", "check_claims", "matched_grid", "write_protocol_report", "protocol_plots"]

# protocol metric name -> row key
METRIC_KEYS = {"clean": "test_clean", "pgd": "test_pgd", "autoattack": "test_autoattack",
               "corruption": "test_corruption"}
AVERAGED = (*METRIC_KEYS.values(), "val_robust", "wall_s", "autoattack_s", "train_images_per_s",
            "test_clean_class_mean", "test_pgd_class_mean")


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


def _row(rows: list[dict[str, Any]], task: str, seed: int, name: str) -> dict[str, Any] | None:
    """One seed's row of what a claim names: a cell or source row by its label, a group by its selected variant."""
    for r in rows:
        if r["task"] == task and r["seed"] == seed and (r["label"] == name or r["group"] == name and r["selected"]):
            return r
    return None


def _check_metric(claim: Any, metric: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One metric of a claim: the difference per seed, and the paired difference over every image and seed with its
    95% interval and verdict (``inconclusive`` without per-image flags for every model compared)."""
    key = METRIC_KEYS[metric]
    per_seed: dict[int, float] = {}
    flags: dict[str, list[str]] = {"better": [], "than": []}
    paired_ok = True
    for seed in sorted({r["seed"] for r in rows}):
        found = {x: _row(rows, claim.task, seed, x) for x in (*claim.better, *claim.than)}
        if any(r is None or r.get(key) is None for r in found.values()):
            continue
        per_seed[seed] = (sum(found[x][key] for x in claim.better) / len(claim.better)
                          - sum(found[x][key] for x in claim.than) / len(claim.than))
        for side in ("better", "than"):
            for x in getattr(claim, side):
                f = found[x].get("samples", {}).get(metric)
                paired_ok &= f is not None
                flags[side] += f if isinstance(f, list) else [f]  # corruption: one string per corruption set
    out: dict[str, Any] = {"difference": sum(per_seed.values()) / len(per_seed) if per_seed else None,
                           "per_seed": per_seed, "verdict": "inconclusive"}
    if not per_seed:
        out["why"] = "not measured"
    elif not paired_ok or len({len(f) for f in flags["better"] + flags["than"]}) != 1:
        out["why"] = "no per-image flags for every model compared, so no paired interval"
    else:
        out["paired"] = paired_difference(flags["better"], flags["than"], list(per_seed.values()))
        out["verdict"] = verdict(out["paired"]["ci95"], claim.tolerance)
    return out


def matched_grid(protocol: Protocol, claim: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The claim at matched grid positions: for a claim whose every side is a group of grid variants of one length,
    per position i the i-th variant of each group (the same learning rate, or the same multiple of a method's own
    rate), paired per test image over the seeds that ran every variant; test metrics AutoAttack aside (only the
    selected variants are attacked), positions where a variant diverged left out. Empty when the claim names no such
    groups."""
    task = protocol.tasks[claim.task]
    groups = task.groups()
    names = [*claim.better, *claim.than]
    if any(len(groups.get(x, [])) < 2 for x in names) or len({len(groups[x]) for x in names}) != 1:
        return []
    seeds = task.grid_seeds if task.grid_seeds is not None else protocol.seeds
    picked = [r for r in rows if r["seed"] in seeds]
    out = []
    for i in range(len(groups[names[0]])):
        variants = {x: groups[x][i] for x in names}
        if not all(any(r["label"] == v for r in picked) for v in variants.values()):
            continue  # a variant without rows: its training diverged
        matched = type(claim)(claim=claim.claim, task=claim.task, better=[variants[x] for x in claim.better],
                              than=[variants[x] for x in claim.than],
                              metrics=[m for m in claim.metrics if m != "autoattack"], tolerance=claim.tolerance)
        out.append({"variants": variants, "metrics": {m: _check_metric(matched, m, picked) for m in matched.metrics}})
    return out


def check_claims(claims: Sequence[Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per claim and metric: the difference (mean of ``better`` − mean of ``than``) per seed, the paired difference
    per test image over every seed with its 95% interval, and the verdict (``report.paired.verdict``). A claim is
    held when every metric holds, contradicted when one is contradicted, else inconclusive. A group counts with its
    variant selected on validation for that seed."""
    out = []
    for claim in claims:
        metrics = {m: _check_metric(claim, m, rows) for m in claim.metrics}
        verdicts = {m["verdict"] for m in metrics.values()}
        overall = ("contradicted" if "contradicted" in verdicts else "held" if verdicts == {"held"}
                   else "inconclusive")
        out.append({"claim": claim.claim, "task": claim.task, "better": claim.better, "than": claim.than,
                    "tolerance": claim.tolerance, "metrics": metrics, "verdict": overall})
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


def _metric_parts(metrics: dict[str, dict[str, Any]]) -> str:
    """``metric: difference [95% CI; n, MDD] (per seed) verdict`` for each metric of a checked claim."""
    parts = []
    for metric, m in metrics.items():
        if m["difference"] is None:
            parts.append(f"{metric}: not measured")
            continue
        seeds = ", ".join(f"{100 * d:+.1f}" for d in m["per_seed"].values())
        if "paired" in m:
            pair = m["paired"]
            lo, hi = pair["ci95"]
            interval = f" [{100 * lo:+.1f}, {100 * hi:+.1f}; n {pair['n']}, MDD {100 * pair['mdd80']:.1f}]"
        else:
            interval = " [no per-image flags]"
        parts.append(f"{metric}: {100 * m['difference']:+.1f}{interval} ({seeds}) {m['verdict']}")
    return "; ".join(parts)


def _bn_lines(record: dict[str, Any]) -> list[str]:
    """The batch-norm statistics table of a task: per layer, each dataset's distance from the source's stored
    statistics."""
    labels = list(record["distances"])
    layers = [d["layer"] for d in record["distances"][labels[0]]]
    lines = [f"Batch-norm statistics of the source model on {record['n']} training images of each dataset against "
             "the running statistics it stored (the model in eval mode, so every layer sees the inputs those "
             "statistics normalize): per layer, mean over channels of |Δμ|/σ and of |log σ²_data/σ²_stored|. This "
             "is what TWINS' frozen wing keeps and its adaptive wing re-estimates.", "",
             "| layer | " + " | ".join(f"{x}: Δμ/σ, log var ratio" for x in labels) + " |",
             "|---|" + "---|" * len(labels)]
    for i, layer in enumerate(layers):
        cells = [record["distances"][x][i] for x in labels]
        lines.append(f"| {layer} | " + " | ".join(f"{c['mean_shift']:.2f}, {c['log_var_ratio']:.2f}" for c in cells)
                     + " |")
    means = [[sum(c[k] for c in record["distances"][x]) / len(layers) for k in ("mean_shift", "log_var_ratio")]
             for x in labels]
    lines.append("| **mean over layers** | " + " | ".join(f"**{a:.2f}, {b:.2f}**" for a, b in means) + " |")
    return [*lines, ""]


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
    if any("test_clean_class_mean" in e for e in groups or cells):
        lines += ["", "Mean per-class accuracy beside the plain one (the test set's classes are unbalanced): per "
                  "method, its selected variants", "", "| method | clean | clean, per-class mean | PGD | "
                  "PGD, per-class mean |", "|---|---|---|---|---|"]
        lines += [f"| {e['label']} | " + " | ".join(_fmt(e, k) for k in (
            "test_clean", "test_clean_class_mean", "test_pgd", "test_pgd_class_mean")) + " |" for e in groups or cells]
    if grouped:
        lines += ["", f"Per method (group of variants), the variant with the best validation {task.select} of each "
                  "seed — never a test number — and its numbers:", "",
                  "| method | selected variant per seed | clean | PGD | AutoAttack | corruption mean | val robust |",
                  "|---|---|---|---|---|---|---|"]
        for g in groups:
            variants = ", ".join(f"{seed}: {label}" for seed, label in zip(g["seeds"], g["variants"], strict=True))
            lines.append(f"| {g['label']} | {variants} | {_numbers(g)} |")
    return [*lines, ""]


def _grid_lines(grids: list[dict[str, Any]]) -> list[str]:
    """Per grid of a task: the values run, the value each grid seed chose on validation and where it fell."""
    if not grids:
        return []
    lines = ["Where each method's validated value fell in its grid (grid seeds; values beyond an end are added on "
             "validation until the choice is interior or the bound on added values per end is reached): *interior*, "
             "*end* (a grid that may not grow) or *hit the bound*; a value whose training diverged (non-finite loss) "
             "is run, never selected, and bounds the grid like any other.", "",
             "| method | grid values run | added (low / high end, bound) | chosen per grid seed | position |",
             "|---|---|---|---|---|"]
    names = {"interior": "interior", "end": "end of the grid", "bound": "hit the bound"}
    for g in grids:
        chosen = ", ".join(f"{seed}: {value}" for seed, value in g["chosen"].items())
        where = ", ".join(sorted({names[p] for p in g["position"].values()}))
        values = ", ".join(f"{v} (diverged)" if v in g.get("diverged", []) else str(v) for v in g["values"])
        lines.append(f"| {g['group']} | {values} | {g['added']['first']} / "
                     f"{g['added']['last']} (≤ {g['bound']}) | {chosen} | {where} |")
    return [*lines, ""]


def _diverged_lines(diverged: list[dict[str, Any]]) -> list[str]:
    """The runs whose training diverged (non-finite loss): no row, never selected, their seed out of their claims."""
    if not diverged:
        return []
    lines = ["Runs whose training diverged (non-finite loss). They have no row: a grid value that diverged is never "
             "selected, and a claim compares only the seeds at which every cell it names finished, so a diverged "
             "seed is left out of that method's claims (which flatters the method that diverged).", "",
             "| run | seed | error |", "|---|---|---|"]
    lines += [f"| {d['label']} | {d['seed']} | {d['error'].split(' (')[0]} |" for d in diverged]
    return [*lines, ""]


def _more_seed_lines(added: list[dict[str, Any]]) -> list[str]:
    """The seeds added where the seed spread, not the test images, limited a claim's interval."""
    if not added:
        return []
    lines = ["Seeds added where the spread over seeds dominated a claim's interval (inconclusive, seed half-width "
             "above the test-image half-width), to exactly the cells that claim compares:", ""]
    for a in added:
        claims = "; ".join(f"{c['claim']} ({', '.join(c['metrics'])})" for c in a["claims"])
        lines.append(f"- seed {a['seed']}: {', '.join(a['cells'])} — for {claims}")
    return [*lines, ""]


def _curve_lines(histories: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per cell, its validation curve per epoch (learning rate, training loss, validation clean and robust)."""
    lines = []
    for label, history in histories.items():
        lines += [f"Validation curve of {label} (the epoch kept is the best validation robust accuracy):", "",
                  "| epoch | lr | train loss | val clean | val robust |", "|---|---|---|---|---|"]
        lines += [f"| {h['epoch']} | {h['lr']:.4g} | {h['train_loss']:.3f} | {100 * h['val_clean_acc']:.1f} | "
                  f"{100 * h['val_robust_acc']:.1f} |" for h in history if "val_robust_acc" in h]
        lines.append("")
    return lines


def _markdown(protocol: Protocol, table: list[dict[str, Any]], groups: list[dict[str, Any]],
              claims: list[dict[str, Any]], record: dict[str, Any],
              histories: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
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
        lines += _grid_lines([g for g in record.get("grids", []) if g["task"] == name])
        lines += _more_seed_lines(record.get("more_seeds", {}).get(name, []))
        lines += _diverged_lines([d for d in record.get("diverged", []) if d["task"] == name])
        if name in record.get("bn_stats", {}):
            lines += _bn_lines(record["bn_stats"][name])
        if protocol.tasks[name].curve:
            lines += _curve_lines(histories.get(name, {}))
    lines += ["## Claims, checked here", "",
              "Per metric: the difference in points (mean of the listed cells minus the compared ones) over seeds, "
              "per seed in parentheses, and the 95% confidence interval of the paired difference: over test "
              "images (each image's accuracy averaged over the seeds and listed cells) and, with several seeds, "
              "over seeds too (the seeds' t-interval of their differences joined in quadrature), so a difference "
              "the seeds disagree on is not called decided. A claim that one side beats the other is *held* when "
              "that interval lies above 0, *contradicted* when it lies below 0; a claim of 'unchanged within ±t' "
              "is held when the interval lies inside ±t, contradicted when it lies wholly outside; anything else "
              "is *inconclusive*, as is a metric without per-image flags. n: test images; MDD: the difference "
              "this n, these seeds and their spread detect with 80% power. The claim's verdict: held if every "
              "metric holds, contradicted if one is.",
              "", "| claim | metric: difference [95% CI] (per seed) | verdict |", "|---|---|---|"]
    for c in claims:
        rule = f" (within ±{100 * c['tolerance']:.1f})" if c["tolerance"] is not None else ""
        lines.append(f"| {c['claim']}{rule}: {' + '.join(c['better'])} vs {' + '.join(c['than'])} | "
                     f"{_metric_parts(c['metrics'])} | **{c['verdict']}** |")
    matched = [c for c in claims if c.get("matched_grid")]
    if matched:
        lines += ["", "### The same claims at matched learning rates", "",
                  "Beside each method's validated best: the two sides at the same grid position (the same learning "
                  "rate, or the same multiple of a method's own rate), on the seeds that ran the whole grid; "
                  "AutoAttack only exists for the selected variants. These are not the verdicts (a method is judged "
                  "at its own validated best); they show whether the verdict depends on the rate.", "",
                  "| claim | grid position: difference [95% CI] |", "|---|---|"]
        for c in matched:
            for m in c["matched_grid"]:
                names = " vs ".join(" + ".join(m["variants"][x] for x in c[side]) for side in ("better", "than"))
                lines.append(f"| {c['claim']} | {names}: {_metric_parts(m['metrics'])} |")
    lines += ["", f"Machine: {prov['platform']}, {prov['cpu_count']} CPUs, Python {prov['python']}, torch "
              f"{prov['torch']}, robustft {prov.get('robustft')} (git {prov.get('git_sha')}). Seeds "
              f"{record['seeds']}; the cells' own wall times (training, test, AutoAttack) sum to "
              f"{record['cells_wall_s']:.0f} s, the cells finished between {min(finished)} and {max(finished)}; this "
              f"report's invocation took {record['wall_s']:.0f} s (finished cells are reused).", ""]
    return "\n".join(lines)


def first_seed_cells(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per task of ``rows`` (first-seen order), the rows of its trained cells (sources aside) of its first seed: the
    ones whose curves are shown."""
    cells = {}
    for task_name in dict.fromkeys(r["task"] for r in rows):
        ran = [r for r in rows if r["task"] == task_name and "metrics" in r]
        cells[task_name] = [r for r in ran if r["seed"] == min(x["seed"] for x in ran)]
    return cells


def first_seed_histories(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per task, per cell label: the first seed's per-epoch curve its row carries (rows written before the curves
    were kept have none)."""
    return {task: {r["label"]: curve_history(r["curve"]) for r in cells if r.get("curve")}
            for task, cells in first_seed_cells(rows).items()}


def protocol_plots(titles: dict[str, str], rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Per task of ``rows`` (``report.plots.plot_runs``, files ``<task>_...``, titled by ``titles``): clean vs robust
    of each group (mean over seeds of the selected variants, 95 % intervals from their per-image flags and seeds),
    the first seed's validation curves with the epoch each cell kept (methods' variants in one color), and the
    α-curves / MRC profiles its cells' rows carry. Everything comes from the rows (results.json), no run directory."""
    groups, written = aggregate(rows, groups=True), []
    histories = first_seed_histories(rows)
    for task_name, cells in first_seed_cells(rows).items():
        chosen = [r for r in rows if r["task"] == task_name and r["selected"]]
        points = [accuracy_intervals(g, [r for r in chosen if r["group"] == g["label"]]) for g in groups
                  if g["task"] == task_name and "test_pgd" in g]
        written += plot_runs(out_dir, points, histories[task_name], {r["label"]: r["best_epoch"] for r in cells},
                             [(task_name, r) for r in cells], groups={r["label"]: r["group"] for r in cells},
                             prefix=f"{task_name}_",
                             title=f"{titles.get(task_name, task_name)} (test, mean over seeds)")
    return written


def write_protocol_report(protocol: Protocol, record: dict[str, Any], out_dir: Path) -> list[Path]:
    """results.json (with each trained cell's per-epoch curve and RiFT artifacts, so its plots can be redrawn from
    it alone), results.md and the plots of a protocol run; returns the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = record["rows"]
    table, groups = aggregate(rows), aggregate(rows, groups=True)
    claims = check_claims(protocol.claims, rows)
    for claim, checked in zip(protocol.claims, claims, strict=True):
        if matched := matched_grid(protocol, claim, rows):
            checked["matched_grid"] = matched
    titles = {name: task.title for name, task in protocol.tasks.items()}
    record = {**record, "task_titles": titles, "table": table, "groups": groups, "claims": claims}
    histories = first_seed_histories(rows)
    written = [atomic_write_json(record, out_dir / "results.json"),
               atomic_write(out_dir / "results.md", lambda tmp: Path(tmp).write_text(
                   _markdown(protocol, table, groups, claims, record, histories)))]
    return written + protocol_plots(titles, rows, out_dir)
