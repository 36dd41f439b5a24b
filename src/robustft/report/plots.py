"""PNG plots (matplotlib, imported lazily: it is the optional ``plot`` extra)."""

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from .paired import wilson_interval

__all__ = ["plot_clean_vs_robust", "plot_training_curves", "plot_norm_diagnostics", "plot_alpha_curves", "plot_mrc",
           "plot_runs"]


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or a clear error if the extra is missing."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("plots need matplotlib: pip install 'robustft[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path: str | Path) -> Path:
    """Write and close a figure (laid out by its constrained layout engine)."""
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


MARKERS = "osD^vP*Xh<>p"
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
KEPT = {"marker": "o", "linestyle": "none", "markersize": 10, "markerfacecolor": "none", "markeredgecolor": "black",
        "markeredgewidth": 1.2}
"""How a training curve marks the epoch a run kept."""
KEPT_LABEL = "epoch kept (best on validation)"
MIN_SPAN = 5.0
"""Smallest span (accuracy points) of an accuracy axis, so differences of a few tenths do not fill the plot."""


def _group_rows(labels: Sequence[str], groups: dict[str, str] | None = None) -> list[list[str]]:
    """The labels per group (a label is its own group unless ``groups`` names one), groups in first-seen order."""
    rows: dict[str, list[str]] = {}
    for label in labels:
        rows.setdefault((groups or {}).get(label, label), []).append(label)
    return list(rows.values())


def _styles(labels: Sequence[str], groups: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Per label a (color, marker) per group, and a line style per variant within its group."""
    plt = _pyplot()
    rows = _group_rows(labels, groups)
    colors = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20").colors
    return {label: {"color": colors[g % len(colors)], "marker": MARKERS[g % len(MARKERS)],
                    "linestyle": LINESTYLES[v % len(LINESTYLES)]}
            for g, row in enumerate(rows) for v, label in enumerate(row)}


def _legend_below(fig, axes, rows: list[list[str]], n_cols: int = 4):
    """One figure legend under the axes with every entry of the first axes: one line per group of ``rows`` (its
    variants side by side) where a group has several, else ``n_cols`` entries a line."""
    from matplotlib.lines import Line2D

    labels_handles = axes[0].get_legend_handles_labels()
    handles = dict(zip(labels_handles[1], labels_handles[0], strict=True))
    if max(map(len, rows)) == 1:
        labels = [row[0] for row in rows]
        return fig.legend([handles[x] for x in labels], labels, loc="outside lower center",
                          ncol=min(n_cols, len(labels)), fontsize=8, frameon=False)
    n_cols = max(map(len, rows))
    cells = [row[c] if c < len(row) else None for c in range(n_cols) for row in rows]  # a legend fills by column
    blank = Line2D([], [], linestyle="none")
    return fig.legend([blank if x is None else handles[x] for x in cells], ["" if x is None else x for x in cells],
                      loc="outside lower center", ncol=n_cols, fontsize=8, frameon=False)


def _legend_height(rows: list[list[str]], n_cols: int = 4) -> float:
    """Inches of figure height that ``_legend_below``'s legend of ``rows`` needs."""
    lines = len(rows) if max(map(len, rows)) > 1 else -(-len(rows) // n_cols)
    return 0.25 * lines + 0.2


def _span_at_least(ax, axis: str, low: float, high: float, span: float = MIN_SPAN) -> None:
    """Limits of one accuracy axis (%) holding [low, high] with 10 % margins, at least ``span`` wide: centred on the
    data, shifted to end at most a 3 % margin beyond 0 and 100 (a point at 0 % still shows)."""
    width = max((high - low) * 1.2, span)
    start, margin = (low + high - width) / 2, 0.03 * width
    if width <= 100:
        start = min(max(start, -margin), 100.0 + margin - width)
    (ax.set_xlim if axis == "x" else ax.set_ylim)(start, start + width)


def plot_clean_vs_robust(rows: list[dict[str, Any]], path: str | Path,
                         title: str = "clean vs robust accuracy (test)") -> Path:
    """Scatter with one point per row (``report.result_row`` keys; legend beside the axes): test clean against PGD
    accuracy, with 95 % intervals as error bars (``<key>_ci95`` where rows carry it, e.g. from
    ``accuracy_intervals``, named by ``ci_kind``; else Wilson's on ``n_test`` images), each axis at least
    ``MIN_SPAN`` points wide."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.8), dpi=120, layout="constrained")
    bounds: dict[str, list[float]] = {"x": [], "y": []}
    styles = _styles([row["label"] for row in rows])
    for row in rows:
        point, errors = [], []
        for axis, key in (("x", "test_clean"), ("y", "test_pgd")):
            lo, hi = row.get(f"{key}_ci95") or wilson_interval(row[key], row["n_test"])
            point.append(100 * row[key])
            errors.append([[100 * (row[key] - lo)], [100 * (hi - row[key])]])
            bounds[axis] += [100 * lo, 100 * hi]
        style = styles[row["label"]]
        ax.errorbar(*point, xerr=errors[0], yerr=errors[1], fmt=style["marker"], color=style["color"], markersize=7,
                    capsize=3, label=row["label"])
    for axis in ("x", "y"):
        _span_at_least(ax, axis, min(bounds[axis]), max(bounds[axis]))
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"{rows[0]['pgd_name']} accuracy (%)")
    kinds = ", ".join(sorted({row.get("ci_kind") or "Wilson, test images only" for row in rows}))
    ax.set_title(textwrap.fill(title, 80) + f"\nbars: 95 % intervals ({kinds}); each axis spans at least "
                 f"{MIN_SPAN:g} points", fontsize=10)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8)
    return _save(plt, fig, path)


def _epoch_axes(axes, titles: Sequence[str]) -> None:
    """Titles, integer epoch ticks and a grid on per-epoch panels."""
    from matplotlib.ticker import MaxNLocator

    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)


def plot_training_curves(histories: dict[str, list[dict[str, Any]]], path: str | Path,
                         selected: dict[str, int] | None = None, groups: dict[str, str] | None = None) -> Path:
    """Per-epoch validation robust (left) and clean (right) accuracy of several runs (each axis at least
    ``MIN_SPAN`` points), each run's ``selected`` epoch (the one kept on validation) circled in black, and one
    legend under them with every run: a line per method of ``groups`` (label -> method) with its variants."""
    plt = _pyplot()
    selected = selected or {}
    rows = _group_rows(list(histories), groups)
    marked = any(label in selected for label in histories)
    legend_rows = rows + [[KEPT_LABEL]] if marked else rows
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2 + _legend_height(legend_rows)), dpi=120, sharex=True,
                             layout="constrained")
    styles = _styles(list(histories), groups)
    values: list[list[float]] = [[], []]
    for label, history in histories.items():
        epochs = [h for h in history if "val_robust_acc" in h]
        for ax, key, seen in zip(axes, ("val_robust_acc", "val_clean_acc"), values, strict=True):
            ax.plot([h["epoch"] for h in epochs], [100 * h[key] for h in epochs], markersize=4, label=label,
                    **styles[label])
            kept = [h for h in epochs if h["epoch"] == selected.get(label)]
            ax.plot([h["epoch"] for h in kept], [100 * h[key] for h in kept], **KEPT)
            seen += [100 * h[key] for h in epochs]
    if marked:
        axes[0].plot([], [], **KEPT, label=KEPT_LABEL)
    for ax, seen in zip(axes, values, strict=True):
        if seen:
            _span_at_least(ax, "y", min(seen), max(seen))
    _epoch_axes(axes, ("validation robust accuracy (%)", "validation clean accuracy (%)"))
    fig.suptitle(f"each accuracy axis spans at least {MIN_SPAN:g} points", fontsize=9)
    _legend_below(fig, axes, legend_rows)
    return _save(plt, fig, path)


def plot_norm_diagnostics(histories: dict[str, list[dict[str, Any]]], path: str | Path,
                          groups: dict[str, str] | None = None) -> Path:
    """TWINS' argument in three panels per epoch: conv weight norm, gradient norm, effective step lr·|g|/|w|."""
    plt = _pyplot()
    keys = [("conv_weight_norm", "conv weight norm"), ("conv_grad_norm", "conv gradient norm (epoch mean)"),
            ("effective_step", "effective step lr·|g|/|w| (log scale)")]
    rows = _group_rows(list(histories), groups)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8 + _legend_height(rows, 5)), dpi=120, layout="constrained")
    styles = _styles(list(histories), groups)
    for label, history in histories.items():
        epochs = [h for h in history if "conv_weight_norm" in h]
        if not epochs:
            raise UserError(f"run {label!r} has no norm diagnostics: train it with train.diagnostics=true")
        for ax, (key, _) in zip(axes, keys, strict=True):
            ax.plot([h["epoch"] for h in epochs], [h[key] for h in epochs], markersize=4, label=label,
                    **styles[label])
    _epoch_axes(axes, [title for _, title in keys])
    axes[2].set_yscale("log")
    _legend_below(fig, axes, rows, 5)
    return _save(plt, fig, path)


def plot_alpha_curves(curve: list[dict[str, Any]], path: str | Path, chosen: float | None = None,
                      tolerance: float | None = None, title: str = "RiFT interpolation (validation)") -> Path:
    """Validation clean and robust accuracy against the interpolation weight α (0 = source, 1 = fine-tuned), the
    accuracy axis at least ``MIN_SPAN`` points, with the chosen α* marked and the admissible robust-accuracy floor
    (robust at α=0 minus the tolerance) drawn."""
    plt = _pyplot()
    alphas = [r["alpha"] for r in curve]
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120, layout="constrained")
    values = [100 * r[k] for r in curve for k in ("val_clean_acc", "val_robust_acc")]
    ax.plot(alphas, [100 * r["val_clean_acc"] for r in curve], marker="o", label="clean")
    ax.plot(alphas, [100 * r["val_robust_acc"] for r in curve], marker="s", label="robust (PGD)")
    base = next((r for r in curve if r["alpha"] == 0), None)
    if base is not None and tolerance is not None:
        floor = 100 * (base["val_robust_acc"] - tolerance)
        values.append(floor)
        ax.axhline(floor, color="gray", linestyle=":", linewidth=1, label="robust floor (α=0 − tolerance)")
    if chosen is not None:
        ax.axvline(chosen, color="black", linestyle="--", linewidth=1, label=f"α* = {chosen:g}")
    _span_at_least(ax, "y", min(values), max(values))
    ax.set_xlabel("α  (θ = α·θ_ft + (1−α)·θ_AT)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{title}\naccuracy axis spans at least {MIN_SPAN:g} points", fontsize=10)
    fig.legend(loc="outside right upper", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_mrc(profile: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Bar plot of module robust criticality in network order (an MRC profile's ``to_dict()``, or any record with
    its ``modules`` names and MRCs); the chosen (or lowest) module highlighted."""
    plt = _pyplot()
    modules = profile["modules"]
    chosen = profile.get("chosen") or profile.get("lowest")
    names = [m["name"] for m in modules]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(names) + 2), 4.2), dpi=120, layout="constrained")
    colors = ["tab:red" if n == chosen else "tab:blue" for n in names]
    ax.bar(range(len(names)), [m["mrc"] for m in modules], color=colors)
    if chosen in names:  # its bar may be too short to see: its value above it
        i = names.index(chosen)
        ax.annotate(f"{modules[i]['mrc']:.3g}", (i, modules[i]["mrc"]), xytext=(0, 3), textcoords="offset points",
                    ha="center", fontsize=7, color="tab:red")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("MRC (max loss increase)")
    known = ", ".join(text.format(profile[k]) for k, text in (("eps", "ε={:g}"), ("steps", "{} steps"), ("n", "n={}"))
                      if k in profile)
    ax.set_title(title or f"module robust criticality ({known}); red: {chosen}", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return _save(plt, fig, path)


def plot_runs(out_dir: Path, points: list[dict[str, Any]], histories: dict[str, list[dict[str, Any]]],
              selected: dict[str, int], artifacts: Sequence[tuple[str, dict[str, Any]]] = (), *,
              groups: dict[str, str] | None = None, prefix: str = "",
              title: str = "clean vs robust accuracy (test)") -> list[Path]:
    """The plots of a set of runs in ``out_dir``, names prefixed by ``prefix``: clean vs robust of ``points``
    (``result_row``-like, when every one has a PGD number), the validation curves of ``histories`` with each run's
    ``selected`` epoch (runs of one method of ``groups`` in one color), the norm diagnostics of the runs that
    recorded them, and per (stem, record) of ``artifacts`` the α-curve and MRC profile the record holds
    (``tables.run_artifacts``: ``<stem>_alpha_curve.png``, ``<stem>_mrc.png``)."""
    written = []
    if points and all(p.get("test_pgd") is not None for p in points):
        written.append(plot_clean_vs_robust(points, out_dir / f"{prefix}clean_vs_robust.png", title=title))
    if histories:
        written.append(plot_training_curves(histories, out_dir / f"{prefix}training_curves.png", selected, groups))
    diagnosed = {label: h for label, h in histories.items() if any("conv_weight_norm" in e for e in h)}
    if diagnosed:
        written.append(plot_norm_diagnostics(diagnosed, out_dir / f"{prefix}norm_diagnostics.png", groups))
    for stem, record in artifacts:
        if alpha := record.get("alpha_curve"):
            how = "".join(text.format(alpha[k]) for k, text in (("attack", ", {}"), ("n", ", n={}")) if k in alpha)
            written.append(plot_alpha_curves(alpha["curve"], out_dir / f"{stem}_alpha_curve.png",
                                             chosen=alpha["alpha"], tolerance=alpha["tolerance"],
                                             title=f"RiFT interpolation (validation{how})"))
        if mrc := record.get("mrc"):
            written.append(plot_mrc(mrc, out_dir / f"{stem}_mrc.png"))
    return written
