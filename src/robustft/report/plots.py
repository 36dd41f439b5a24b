"""PNG plots (matplotlib, imported lazily: it is the optional ``plot`` extra)."""

from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["plot_clean_vs_robust", "plot_training_curves", "plot_norm_diagnostics"]


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or a clear error if the extra is missing."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("plots need matplotlib: pip install 'robustft[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_clean_vs_robust(rows: list[dict[str, Any]], path: str | Path, robust_key: str,
                         title: str = "clean vs robust accuracy (test)") -> Path:
    """Scatter with one labelled point per run: test clean accuracy against ``robust_key``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    for row in rows:
        x, y = 100 * row["test_clean"], 100 * row[robust_key]
        ax.scatter(x, y, s=40)
        ax.annotate(row["run"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=9)
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"{robust_key.removeprefix('test_')} accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.margins(0.2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_training_curves(histories: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """Per-epoch validation clean (dashed) and robust (solid) accuracy of several runs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, history in histories.items():
        epochs = [h["epoch"] for h in history]
        line = ax.plot(epochs, [100 * h["val_robust_acc"] for h in history], marker="o", label=f"{label} robust")
        ax.plot(epochs, [100 * h["val_clean_acc"] for h in history], linestyle="--", color=line[0].get_color(),
                label=f"{label} clean")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_norm_diagnostics(histories: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """TWINS' argument in three panels per epoch: conv weight norm, gradient norm, effective step lr·|g|/|w|."""
    plt = _pyplot()
    keys = [("conv_weight_norm", "conv weight norm"), ("conv_grad_norm", "conv gradient norm (epoch mean)"),
            ("effective_step", "effective step lr·|g|/|w|")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=120)
    for label, history in histories.items():
        rows = [h for h in history if "conv_weight_norm" in h]
        if not rows:
            raise UserError(f"run {label!r} has no norm diagnostics: train it with train.diagnostics=true")
        for ax, (key, _) in zip(axes, keys, strict=True):
            ax.plot([h["epoch"] for h in rows], [h[key] for h in rows], marker="o", label=label)
    for ax, (_, title) in zip(axes, keys, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
