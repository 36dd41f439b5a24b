"""PNG plots (matplotlib, imported lazily: it is the optional ``plot`` extra)."""

from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["plot_clean_vs_robust", "plot_training_curves", "plot_norm_diagnostics", "plot_alpha_curves", "plot_mrc"]


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
    """Lay out, write and close a figure."""
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


MARKERS = "osD^vP*Xh<>p"


def _styles(n: int) -> list[dict[str, Any]]:
    """``n`` distinguishable (color, marker) pairs."""
    plt = _pyplot()
    colors = plt.get_cmap("tab10" if n <= 10 else "tab20").colors
    return [{"color": colors[i % len(colors)], "marker": MARKERS[i % len(MARKERS)]} for i in range(n)]


def plot_clean_vs_robust(rows: list[dict[str, Any]], path: str | Path,
                         title: str = "clean vs robust accuracy (test)") -> Path:
    """Scatter with one point per row (``report.result_row`` keys; legend beside the axes): test clean against PGD
    accuracy, with error bars where rows carry ``<key>_spread`` (the seed spread of a mean)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.8), dpi=120)
    for row, style in zip(rows, _styles(len(rows)), strict=True):
        ax.errorbar(100 * row["test_clean"], 100 * row["test_pgd"], xerr=100 * row.get("test_clean_spread", 0),
                    yerr=100 * row.get("test_pgd_spread", 0), fmt=style["marker"], color=style["color"],
                    markersize=7, capsize=3, label=row["label"])
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"{rows[0]['pgd_name']} accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    return _save(plt, fig, path)


def plot_training_curves(histories: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """Per-epoch validation robust (left) and clean (right) accuracy of several runs, one legend beside them."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=120, sharex=True)
    for (label, history), style in zip(histories.items(), _styles(len(histories)), strict=True):
        epochs = [h["epoch"] for h in history]
        for ax, key in zip(axes, ("val_robust_acc", "val_clean_acc"), strict=True):
            ax.plot(epochs, [100 * h[key] for h in history], marker=style["marker"], color=style["color"],
                    markersize=4, label=label)
    for ax, title in zip(axes, ("validation robust accuracy (%)", "validation clean accuracy (%)"), strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    return _save(plt, fig, path)


def plot_norm_diagnostics(histories: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """TWINS' argument in three panels per epoch: conv weight norm, gradient norm, effective step lr·|g|/|w|."""
    plt = _pyplot()
    keys = [("conv_weight_norm", "conv weight norm"), ("conv_grad_norm", "conv gradient norm (epoch mean)"),
            ("effective_step", "effective step lr·|g|/|w|")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), dpi=120)
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
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[2].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    return _save(plt, fig, path)


def plot_alpha_curves(curve: list[dict[str, Any]], path: str | Path, chosen: float | None = None,
                      tolerance: float | None = None, title: str = "RiFT interpolation (validation)") -> Path:
    """Validation clean and robust accuracy against the interpolation weight α (0 = source, 1 = fine-tuned), with
    the chosen α* marked and the admissible robust-accuracy floor (robust at α=0 minus the tolerance) drawn."""
    plt = _pyplot()
    alphas = [r["alpha"] for r in curve]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
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
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(names) + 2), 4.2), dpi=120)
    colors = ["tab:red" if n == chosen else "tab:blue" for n in names]
    ax.bar(range(len(names)), [m["mrc"] for m in modules], color=colors)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("MRC (max loss increase)")
    ax.set_title(title or f"module robust criticality (ε={profile['eps']:g}, {profile['steps']} steps, "
                          f"n={profile['n']}); red: {chosen}", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return _save(plt, fig, path)
