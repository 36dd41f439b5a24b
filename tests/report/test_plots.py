"""Plots a reader can trust: every run in a legend inside the figure, error bars that are the 95 % intervals, axes
that do not magnify a few tenths of a point, the epoch each run kept marked; a protocol report's plots redrawn from
its results.json alone, and the committed plots redrawn (or removed where nothing committed can draw them)."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from robustft.bench.report import protocol_plots  # noqa: E402
from robustft.report import paired_difference, plots  # noqa: E402
from robustft.report.paired import accuracy_interval, accuracy_intervals, wilson_interval  # noqa: E402
from robustft.report.tables import curve_columns, curve_history  # noqa: E402
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


def _kept_marks(ax) -> list:
    """The black circles of a training-curve panel that mark a kept epoch."""
    return [line for line in ax.get_lines() if line.get_markeredgecolor() == "black" and len(line.get_xdata())]


def test_grouped_training_curves_put_a_method_on_one_legend_line_in_one_color(figures, tmp_path):
    methods = ["pgd_at", "trades", "twins", "ranli full", "autolora"]
    groups = {f"{m} lr={lr}": m for m in methods for lr in ((0.01,) if m == "autolora" else (0.003, 0.01, 0.03))}
    histories = {label: [{"epoch": e, "val_robust_acc": 0.2 + 0.0001 * e, "val_clean_acc": 0.4 + 0.0001 * e}
                         for e in (1, 2, 3)] for label in groups}
    plots.plot_training_curves(histories, tmp_path / "curves.png", {label: 2 for label in groups}, groups)
    fig = figures[0]
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert sorted(t for t in texts if t) == sorted([*groups, plots.KEPT_LABEL])
    assert legend._ncols == 3, "a method's three variants side by side"
    assert _inside(legend.get_window_extent(fig.canvas.get_renderer()), fig.bbox)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    for method in methods:
        mine = [lines[label] for label, m in groups.items() if m == method]
        assert len({line.get_color() for line in mine}) == 1
        assert len({str(line.get_linestyle()) for line in mine}) == len(mine)
    for ax in fig.axes[:2]:  # the runs differ by 0.02 points
        low, high = ax.get_ylim()
        assert high - low >= plots.MIN_SPAN
        assert len(_kept_marks(ax)) == len(groups)


def test_curve_columns_round_trip_what_the_plots_use():
    history = [{"epoch": 1, "lr": 0.1, "train_loss": 2.0, "train_acc": 0.3, "val_clean_acc": 0.4,
                "val_robust_acc": 0.2, "train_s": 9.0},
               {"epoch": 2, "lr": 0.01, "train_loss": 1.5, "train_acc": 0.35, "train_s": 9.0}]  # no validation
    columns = curve_columns(history)
    assert columns == {"epoch": [1, 2], "lr": [0.1, 0.01], "train_loss": [2.0, 1.5], "val_clean_acc": [0.4, None],
                       "val_robust_acc": [0.2, None]}
    assert curve_history(columns) == [{k: v for k, v in h.items() if k in columns} for h in history]


def _row(seed: int, label: str, group: str, clean: float, **extra) -> dict:
    """A protocol report's row as results.json holds it (run directories that do not exist)."""
    return {"task": "t", "seed": seed, "label": label, "group": group, "method": group, "selected": True,
            "test_clean": clean, "test_pgd": clean / 2, "pgd_name": "pgd20", "n_test": 1000, **extra}


def _trained(seed: int, label: str, group: str, clean: float, best: int, **extra) -> dict:
    """A trained cell's row: best epoch, its per-epoch curve, its run directory's paths (gone)."""
    history = [{"epoch": e, "lr": 0.1, "train_loss": 2 - e / 10, "val_clean_acc": clean - 0.01 * (e != best),
                "val_robust_acc": clean / 2 - 0.01 * (e != best)} for e in (1, 2, 3)]
    return _row(seed, label, group, clean, best_epoch=best, metrics=f"/gone/{label}/metrics.jsonl",
                run_dir=f"/gone/{label}", curve=curve_columns(history), **extra)


def _protocol_record() -> dict:
    """A tiny protocol report's results.json: a grid of two variants, a RiFT cell with its records, two seeds."""
    alpha = {"curve": [{"alpha": a, "val_clean_acc": 0.6 + 0.001 * a, "val_robust_acc": 0.3} for a in (0, 0.5, 1)],
             "alpha": 0.5, "tolerance": 0.01, "attack": "pgd10", "n": 1000}
    mrc = {"modules": [{"name": "conv1", "mrc": 1.0}, {"name": "layer1", "mrc": 0.01}], "chosen": "layer1",
           "eps": 8 / 255, "steps": 10, "n": 256}
    rows = []
    for seed in (0, 1):
        rows += [_trained(seed, "pgd_at lr=0.01", "pgd_at", 0.5, 2 + seed),
                 {**_trained(seed, "pgd_at lr=0.1", "pgd_at", 0.4, 3), "selected": False},
                 _row(seed, "source", "source", 0.6),
                 _trained(seed, "rift", "rift", 0.61, 1, alpha_curve=alpha, mrc=mrc)]
    return {"protocol": "tiny", "task_titles": {"t": "tiny task"}, "rows": rows}


def test_protocol_plots_come_from_results_json_alone(figures, tmp_path):
    rows = _protocol_record()["rows"]
    written = protocol_plots({"t": "tiny task"}, rows, tmp_path)
    assert [p.name for p in written] == ["t_clean_vs_robust.png", "t_training_curves.png", "t_alpha_curve.png",
                                         "t_mrc.png"]
    curves = figures[1]
    for ax, key in zip(curves.axes[:2], ("val_robust_acc", "val_clean_acc"), strict=True):
        marks = [(line.get_xdata()[0], line.get_ydata()[0]) for line in _kept_marks(ax)]
        first_seed = [r for r in rows if r["seed"] == 0 and "curve" in r]
        assert marks == [(r["best_epoch"], pytest.approx(100 * r["curve"][key][r["best_epoch"] - 1]))
                         for r in first_seed], "the first seed's kept epochs, from the rows' curves"
    assert figures[2].axes[0].get_lines()[-1].get_xdata()[0] == 0.5, "α* marked"
    assert "ε=0.0313725, 10 steps, n=256" in figures[3].axes[0].get_title()


def test_replot_redraws_a_report_from_results_json_and_removes_what_it_cannot(tmp_path):
    report, old, rift = tmp_path / "report", tmp_path / "transfer_twins", tmp_path / "rift"
    report.mkdir()
    (report / "results.json").write_text(json.dumps(_protocol_record()))
    for name in ("transfer_twins", "rift"):
        shutil.copytree(ROOT / "bench" / "results" / name, tmp_path / name)
    stale = [report / "t_training_curves.png", report / "t_mrc.png", report / "t_norm_diagnostics.png",
             old / "training_curves.png", *rift.glob("*.png")]  # old: drawn by its script from its run directories
    for png in stale:
        png.write_bytes(b"stale")
    before = {p: p.read_bytes() for d in (report, old, rift) for p in d.iterdir() if p.suffix != ".png"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "replot.py"), str(report), str(old), str(rift)],
                          env=run_env(), capture_output=True, text=True, check=True)
    assert {p: p.read_bytes() for p in before} == before, "results files are never rewritten"
    assert sorted(p.name for p in report.glob("*.png")) == ["t_alpha_curve.png", "t_clean_vs_robust.png",
                                                          "t_mrc.png", "t_training_curves.png"]
    assert sorted(p.name for p in old.glob("*.png")) == ["clean_vs_robust.png"], "no per-epoch data: removed"
    assert sorted(p.name for p in rift.glob("*.png")) == [f"variant{i}_{k}.png" for i in (0, 1)
                                                        for k in ("alpha_curve", "mrc")]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for d in (report, old, rift) for p in d.glob("*.png"))
    assert f"removed (its data is not in results.json): {report / 't_norm_diagnostics.png'}" in proc.stdout
    assert f"removed (its data is not in results.json): {old / 'training_curves.png'}" in proc.stdout


def test_every_committed_plot_is_drawn_from_its_committed_results(tmp_path):
    results = ROOT / "bench" / "results"
    dirs = sorted(d.parent.name for d in results.glob("*/results.json"))
    for name in dirs:
        shutil.copytree(results / name, tmp_path / name)
    before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*.png")}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "replot.py"), *(str(tmp_path / d) for d in dirs)],
                          env=run_env(), capture_output=True, text=True, check=True)
    assert "removed" not in proc.stdout, proc.stdout
    assert {p.relative_to(tmp_path) for p in tmp_path.rglob("*.png")} == before
    assert "evidence" in dirs and {"gtsrb_training_curves.png", "transfer_training_curves.png"} <= {
        p.name for p in (tmp_path / "evidence").glob("*.png")}
