"""Plots a reader can trust: every run in a legend inside the figure, error bars that are the 95 % intervals, axes
that do not magnify a few tenths of a point, the epoch each run kept marked; redrawing the committed plots."""

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from robustft.report import paired_difference, plots  # noqa: E402
from robustft.report.paired import accuracy_interval, accuracy_intervals, wilson_interval  # noqa: E402
from support import run_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions make, drawn as saved (their layout applied) and kept open."""
    made = []

    def save(plt, fig, path):
        fig.savefig(path)
        made.append(fig)
        return Path(path)

    monkeypatch.setattr(plots, "_save", save)
    return made


def _inside(extent, bbox) -> bool:
    """A window extent lies within a bounding box (display pixels, half a pixel of rounding)."""
    return (extent.x0 >= bbox.x0 - 0.5 and extent.y0 >= bbox.y0 - 0.5 and extent.x1 <= bbox.x1 + 0.5
            and extent.y1 <= bbox.y1 + 0.5)


def test_training_curves_show_every_run_in_the_figure_and_the_kept_epoch(figures, tmp_path):
    histories = {f"method{i} lr={0.001 * (i + 1):g}": [
        {"epoch": e, "val_robust_acc": 0.1 + 0.01 * i + 0.02 * e, "val_clean_acc": 0.3 + 0.01 * i + 0.03 * e}
        for e in range(1, 6)] for i in range(32)}
    selected = {label: 1 + i % 5 for i, label in enumerate(histories)}
    plots.plot_training_curves(histories, tmp_path / "curves.png", selected)
    fig = figures[0]
    legend = (fig.legends or [ax.get_legend() for ax in fig.axes if ax.get_legend()])[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == [*histories, "epoch kept (best on validation)"]
    renderer = fig.canvas.get_renderer()
    assert _inside(legend.get_window_extent(renderer), fig.bbox), "the whole legend is in the saved figure"
    for ax, key in zip(fig.axes[:2], ("val_robust_acc", "val_clean_acc"), strict=True):
        kept = [line for line in ax.get_lines() if line.get_markeredgecolor() == "black" and len(line.get_xdata())]
        assert len(kept) == 32
        for line, (label, history) in zip(kept, histories.items(), strict=True):
            h = history[selected[label] - 1]
            assert list(line.get_xdata()) == [selected[label]]
            assert list(line.get_ydata()) == pytest.approx([100 * h[key]])


def test_clean_vs_robust_bars_are_95_percent_intervals_on_an_honest_scale(figures, tmp_path):
    rows = [{"label": "before", "test_clean": 0.4446, "test_pgd": 0.2732, "pgd_name": "pgd20", "n_test": 10000,
             "test_clean_ci95": [0.4346, 0.4546], "test_pgd_ci95": [0.2642, 0.2822]},
            {"label": "after", "test_clean": 0.4461, "test_pgd": 0.2730, "pgd_name": "pgd20", "n_test": 10000}]
    plots.plot_clean_vs_robust(rows, tmp_path / "cvr.png")
    fig = figures[0]
    ax = fig.axes[0]
    for container, row in zip(ax.containers, rows, strict=True):
        xbars, ybars = container.lines[2]
        for bars, key in ((xbars, "test_clean"), (ybars, "test_pgd")):
            lo, hi = row.get(f"{key}_ci95") or wilson_interval(row[key], row["n_test"])
            (a, b), = [sorted(seg[:, 0 if bars is xbars else 1]) for seg in bars.get_segments()]
            assert (a, b) == (pytest.approx(100 * lo), pytest.approx(100 * hi))
    for low, high in (ax.get_xlim(), ax.get_ylim()):  # the points differ by 0.15 and 0.02 points
        assert high - low >= plots.MIN_SPAN
    assert "95 % intervals" in ax.get_title() and f"at least {plots.MIN_SPAN:g} points" in ax.get_title()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["before", "after"]
    assert _inside(fig.legends[0].get_window_extent(fig.canvas.get_renderer()), fig.bbox)


def test_accuracy_intervals_are_the_reports_own_else_wilson():
    flags = ["1101001110", "1001101010"]
    seeds = [f.count("1") / 10 for f in flags]
    lo, hi = paired_difference(flags, ["0" * 10], seeds)["ci95"]
    assert accuracy_interval(flags, seeds) == [max(lo, 0), min(hi, 1)]
    one = accuracy_interval(flags[:1])
    sd = math.sqrt(sum((int(c) - 0.6) ** 2 for c in flags[0]) / 9)
    assert one == [pytest.approx(0.6 - 1.959964 * sd / math.sqrt(10)), pytest.approx(0.6 + 1.959964 * sd / 10 ** .5)]
    assert wilson_interval(0.5, 100) == [pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4)]
    members = [{"test_clean": s, "test_pgd": 0.2, "samples": {"clean": f}} for s, f in zip(seeds, flags, strict=True)]
    entry = accuracy_intervals({"test_clean": 0.55, "test_pgd": 0.2, "n_test": 10}, members)
    assert entry["test_clean_ci95"] == accuracy_interval(flags, seeds)  # per image and seed where flags exist
    assert entry["test_pgd_ci95"] == wilson_interval(0.2, 10)  # else per image, binomial
    assert entry["ci_kind"] == "Wilson, test images only, test images + seeds"


def test_replot_redraws_committed_plots_without_touching_numbers(tmp_path):
    for name in ("transfer_twins", "rift"):
        shutil.copytree(ROOT / "bench" / "results" / name, tmp_path / name)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.suffix != ".png" and p.is_file()}
    pngs = list(tmp_path.rglob("*.png"))
    for png in pngs:
        png.write_bytes(b"stale")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "replot.py"), str(tmp_path / "transfer_twins"),
                           str(tmp_path / "rift")], env=run_env(), capture_output=True, text=True, check=True)
    assert {p: p.read_bytes() for p in before} == before, "results files are never rewritten"
    redrawn = {p for p in pngs if p.read_bytes()[:4] == b"\x89PNG"}
    assert redrawn == {tmp_path / "transfer_twins" / "clean_vs_robust.png",
                       tmp_path / "rift" / "variant0_alpha_curve.png", tmp_path / "rift" / "variant1_alpha_curve.png"}
    assert f"redrawn: {tmp_path / 'rift' / 'variant0_alpha_curve.png'}" in proc.stdout
    assert f"kept (its data is not in results.json): {tmp_path / 'rift' / 'variant0_mrc.png'}" in proc.stdout
