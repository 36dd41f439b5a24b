"""The protocol report's per-task sections beyond the results table: batch-norm distances, grid positions, diverged
runs, added seeds and the validation curve, each as markdown lines."""

from typing import Any

def bn_lines(record: dict[str, Any]) -> list[str]:
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


def grid_lines(grids: list[dict[str, Any]]) -> list[str]:
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


def diverged_lines(diverged: list[dict[str, Any]]) -> list[str]:
    """The runs whose training diverged (non-finite loss): no row, never selected, their seed out of their claims."""
    if not diverged:
        return []
    lines = ["Runs whose training diverged (non-finite loss). They have no row: a grid value that diverged is never "
             "selected, and a claim compares only the seeds at which every cell it names finished, so a diverged "
             "seed is left out of that method's claims (which flatters the method that diverged).", "",
             "| run | seed | error |", "|---|---|---|"]
    lines += [f"| {d['label']} | {d['seed']} | {d['error'].split(' (')[0]} |" for d in diverged]
    return [*lines, ""]


def more_seed_lines(added: list[dict[str, Any]]) -> list[str]:
    """The seeds added where the seed spread, not the test images, limited a claim's interval."""
    if not added:
        return []
    lines = ["Seeds added where the spread over seeds dominated a claim's interval (inconclusive, seed half-width "
             "above the test-image half-width), to exactly the cells that claim compares:", ""]
    for a in added:
        claims = "; ".join(f"{c['claim']} ({', '.join(c['metrics'])})" for c in a["claims"])
        lines.append(f"- seed {a['seed']}: {', '.join(a['cells'])} — for {claims}")
    return [*lines, ""]


def curve_lines(histories: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per cell, its validation curve per epoch (learning rate, training loss, validation clean and robust)."""
    lines = []
    for label, history in histories.items():
        lines += [f"Validation curve of {label} (the epoch kept is the best validation robust accuracy):", "",
                  "| epoch | lr | train loss | val clean | val robust |", "|---|---|---|---|---|"]
        lines += [f"| {h['epoch']} | {h['lr']:.4g} | {h['train_loss']:.3f} | {100 * h['val_clean_acc']:.1f} | "
                  f"{100 * h['val_robust_acc']:.1f} |" for h in history if "val_robust_acc" in h]
        lines.append("")
    return lines
