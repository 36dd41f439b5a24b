"""PNG plots (matplotlib, imported lazily: it is the optional ``plot`` extra)."""

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..layout import RunLayout
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
KEPT = {"marker": "o", "linestyle": "none", "markersize": 10, "markerfacecolor": "none", "markeredgecolor": "black",
        "markeredgewidth": 1.2}
"""How a training curve marks the epoch a run kept."""
MIN_SPAN = 5.0
"""Smallest span (accuracy points) of a clean-vs-robust axis, so differences of a few tenths do not fill the plot."""


def _styles(n: int) -> list[dict[str, Any]]:
    """``n`` distinguishable (color, marker) pairs."""
    plt = _pyplot()
    colors = plt.get_cmap("tab10" if n <= 10 else "tab20").colors
    return [{"color": colors[i % len(colors)], "marker": MARKERS[i % len(MARKERS)]} for i in range(n)]


def _legend_below(fig, axes, n_cols: int):
    """One figure legend under the axes, in as many columns as fit, holding every entry of the first axes."""
    handles, labels = axes[0].get_legend_handles_labels()
    return fig.legend(handles, labels, loc="outside lower center", ncol=min(n_cols, len(labels)), fontsize=8,
                      frameon=False)


def _legend_rows(n: int, n_cols: int) -> float:
    """Inches of figure height that a legend of ``n`` entries in ``n_cols`` columns needs."""
    return 0.25 * -(-n // n_cols) + 0.2


def _span_at_least(ax, axis: str, low: float, high: float, span: float) -> None:
    """Limits of one axis holding [low, high] with 10 % margins and at least ``span`` wide (same centre)."""
    width = max((high - low) * 1.2, span)
    centre = (low + high) / 2
    (ax.set_xlim if axis == "x" else ax.set_ylim)(centre - width / 2, centre + width / 2)


def plot_clean_vs_robust(rows: list[dict[str, Any]], path: str | Path,
                         title: str = "clean vs robust accuracy (test)") -> Path:
    """Scatter with one point per row (``report.result_row`` keys; legend beside the axes): test clean against PGD
    accuracy, with 95 % intervals as error bars (``<key>_ci95`` where rows carry it, e.g. from
    ``accuracy_intervals``, named by ``ci_kind``; else Wilson's on ``n_test`` images), each axis at least
    ``MIN_SPAN`` points wide."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.8), dpi=120, layout="constrained")
    bounds: dict[str, list[float]] = {"x": [], "y": []}
    for row, style in zip(rows, _styles(len(rows)), strict=True):
        point, errors = [], []
        for axis, key in (("x", "test_clean"), ("y", "test_pgd")):
            lo, hi = row.get(f"{key}_ci95") or wilson_interval(row[key], row["n_test"])
            point.append(100 * row[key])
            errors.append([[100 * (row[key] - lo)], [100 * (hi - row[key])]])
            bounds[axis] += [100 * lo, 100 * hi]
        ax.errorbar(*point, xerr=errors[0], yerr=errors[1], fmt=style["marker"], color=style["color"], markersize=7,
                    capsize=3, label=row["label"])
    for axis in ("x", "y"):
        _span_at_least(ax, axis, min(bounds[axis]), max(bounds[axis]), MIN_SPAN)
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"{rows[0]['pgd_name']} accuracy (%)")
    kinds = ", ".join(sorted({row.get("ci_kind") or "Wilson, test images only" for row in rows}))
    ax.set_title(textwrap.fill(title, 80) + f"\nbars: 95 % intervals ({kinds}); each axis spans at least "
                 f"{MIN_SPAN:g} points", fontsize=10)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8)
    return _save(plt, fig, path)


def plot_training_curves(histories: dict[str, list[dict[str, Any]]], path: str | Path,
                         selected: dict[str, int] | None = None) -> Path:
    """Per-epoch validation robust (left) and clean (right) accuracy of several runs, one legend with every run
    under them, and each run's ``selected`` epoch (the one kept on validation) circled in black."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    n_cols = 4
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2 + _legend_rows(len(histories) + 1, n_cols)), dpi=120,
                             sharex=True, layout="constrained")
    selected = selected or {}
    for (label, history), style in zip(histories.items(), _styles(len(histories)), strict=True):
        rows = [h for h in history if "val_robust_acc" in h]
        for ax, key in zip(axes, ("val_robust_acc", "val_clean_acc"), strict=True):
            ax.plot([h["epoch"] for h in rows], [100 * h[key] for h in rows], marker=style["marker"],
                    color=style["color"], markersize=4, label=label)
            kept = [h for h in rows if h["epoch"] == selected.get(label)]
            ax.plot([h["epoch"] for h in kept], [100 * h[key] for h in kept], **KEPT)
    if any(label in selected for label in histories):
        axes[0].plot([], [], **KEPT, label="epoch kept (best on validation)")
    for ax, title in zip(axes, ("validation robust accuracy (%)", "validation clean accuracy (%)"), strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    _legend_below(fig, axes, n_cols)
    return _save(plt, fig, path)


def plot_norm_diagnostics(histories: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """TWINS' argument in three panels per epoch: conv weight norm, gradient norm, effective step lr·|g|/|w|."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    keys = [("conv_weight_norm", "conv weight norm"), ("conv_grad_norm", "conv gradient norm (epoch mean)"),
            ("effective_step", "effective step lr·|g|/|w|")]
    n_cols = 5
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8 + _legend_rows(len(histories), n_cols)), dpi=120,
                             layout="constrained")
    for (label, history), style in zip(histories.items(), _styles(len(histories)), strict=True):
        rows = [h for h in history if "conv_weight_norm" in h]
        if not rows:
            raise UserError(f"run {label!r} has no norm diagnostics: train it with train.diagnostics=true")
        for ax, (key, _) in zip(axes, keys, strict=True):
            ax.plot([h["epoch"] for h in rows], [h[key] for h in rows], marker=style["marker"], color=style["color"],
                    markersize=4, label=label)
    for ax, (_, title) in zip(axes, keys, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    _legend_below(fig, axes, n_cols)
    return _save(plt, fig, path)


def plot_alpha_curves(curve: list[dict[str, Any]], path: str | Path, chosen: float | None = None,
                      tolerance: float | None = None, title: str = "RiFT interpolation (validation)") -> Path:
    """Validation clean and robust accuracy against the interpolation weight α (0 = source, 1 = fine-tuned), with
    the chosen α* marked and the admissible robust-accuracy floor (robust at α=0 minus the tolerance) drawn."""
    plt = _pyplot()
    alphas = [r["alpha"] for r in curve]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120, layout="constrained")
    ax.plot(alphas, [100 * r["val_clean_acc"] for r in curve], marker="o", label="clean")
    ax.plot(alphas, [100 * r["val_robust_acc"] for r in curve], marker="s", label="robust (PGD)")
    base = next((r for r in curve if r["alpha"] == 0), None)
    if base is not None and tolerance is not None:
        ax.axhline(100 * (base["val_robust_acc"] - tolerance), color="gray", linestyle=":", linewidth=1,
                   label="robust floor (α=0 − tolerance)")
    if chosen is not None:
        ax.axvline(chosen, color="black", linestyle="--", linewidth=1, label=f"α* = {chosen:g}")
    ax.set_xlabel("α  (θ = α·θ_ft + (1−α)·θ_AT)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_mrc(profile: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Bar plot of module robust criticality in network order (an MRC profile's ``to_dict()``); the chosen (or
    lowest) module highlighted."""
    plt = _pyplot()
    modules = profile["modules"]
    chosen = profile.get("chosen") or profile.get("lowest")
    names = [m["name"] for m in modules]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(names) + 2), 4.2), dpi=120, layout="constrained")
    colors = ["tab:red" if n == chosen else "tab:blue" for n in names]
    ax.bar(range(len(names)), [m["mrc"] for m in modules], color=colors)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("MRC (max loss increase)")
    ax.set_title(title or f"module robust criticality (ε={profile['eps']:g}, {profile['steps']} steps, "
                          f"n={profile['n']}); red: {chosen}", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return _save(plt, fig, path)


def plot_runs(out_dir: Path, points: list[dict[str, Any]], histories: dict[str, list[dict[str, Any]]],
              selected: dict[str, int], artifacts: Sequence[tuple[str, Path]] = (), *, prefix: str = "",
              title: str = "clean vs robust accuracy (test)") -> list[Path]:
    """The plots of a set of runs in ``out_dir``, names prefixed by ``prefix``: clean vs robust of ``points``
    (``result_row``-like, when every one has a PGD number), the validation curves of ``histories`` with each run's
    ``selected`` epoch, the norm diagnostics of the runs that recorded them, and per (stem, run directory) of
    ``artifacts`` the α-curve and MRC profile its method wrote (``<stem>_alpha_curve.png``, ``<stem>_mrc.png``)."""
    written = []
    if points and all(p.get("test_pgd") is not None for p in points):
        written.append(plot_clean_vs_robust(points, out_dir / f"{prefix}clean_vs_robust.png", title=title))
    if histories:
        written.append(plot_training_curves(histories, out_dir / f"{prefix}training_curves.png", selected))
    diagnosed = {label: h for label, h in histories.items() if h and "conv_weight_norm" in h[0]}
    if diagnosed:
        written.append(plot_norm_diagnostics(diagnosed, out_dir / f"{prefix}norm_diagnostics.png"))
    for stem, run_dir in artifacts:
        alpha, mrc = (RunLayout(run_dir).artifact(name) for name in ("alpha_curve", "mrc"))
        if alpha.is_file():
            record = json.loads(alpha.read_text())
            written.append(plot_alpha_curves(record["curve"], out_dir / f"{stem}_alpha_curve.png",
                                             chosen=record["alpha"], tolerance=record["tolerance"]))
        if mrc.is_file():
            written.append(plot_mrc(json.loads(mrc.read_text()), out_dir / f"{stem}_mrc.png"))
    return written
