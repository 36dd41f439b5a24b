"""`robustft report`: tables and plots from run directories, numbers read (never recomputed) from their files."""

import csv
import json
import subprocess

from robustft.report import markdown_table, result_row
from support import error_line, finetune_args, robustft_cmd, run_env, run_ok


def test_report_from_two_runs(tiny_task, tmp_path):
    data, ckpt = tiny_task
    for method in ("standard", "twins"):
        run_ok(robustft_cmd(*finetune_args(data, ckpt, tmp_path / "runs", method, "--method", method,
                                           "--epochs", "1", "--set", "train.diagnostics=true")))
    out = tmp_path / "report"
    proc = run_ok(robustft_cmd("report", str(tmp_path / "runs" / "standard"), str(tmp_path / "runs" / "twins"),
                               "--out", str(out)))
    assert proc.stdout.count("wrote") == 5
    for name in ("clean_vs_robust.png", "training_curves.png", "norm_diagnostics.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["label"] for r in rows] == ["standard", "twins"]
    for row in rows:
        results = json.loads((tmp_path / "runs" / row["label"] / "results.json").read_text())
        assert float(row["test_clean"]) == results["test"]["clean_acc"]
        assert float(row["test_pgd"]) == results["test"]["robust_acc"]["pgd2"] and row["pgd_name"] == "pgd2"
    assert "| standard | standard |" in (out / "results.md").read_text()


def test_report_refuses_unfinished_run(tmp_path):
    proc = subprocess.run(robustft_cmd("report", str(tmp_path / "run"), "--out", str(tmp_path / "out")),
                          env=run_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and "not a finished robustft run" in proc.stderr
    assert not (tmp_path / "out").exists(), "nothing is written for a report that cannot be made"


def _tested(clean: float, pgd: float, corruption: float) -> dict:
    """What a run records for one tested model (test split, corruption mean)."""
    return {"test": {"clean_acc": clean, "robust_acc": {"pgd20": pgd}, "n": 1000},
            "test_corruptions": {"mean": corruption}}


def test_result_row_is_one_schema_for_runs_sources_and_autoattack_subsets():
    run = {"method": "rift", "stages": {"ft": {"best_epoch": 3, "best_val": {"val_clean_acc": 0.6,
                                                                              "val_robust_acc": 0.3}}},
           "history": {"ft": [{"train_images_per_s": 100.0}, {"train_images_per_s": 300.0}]}, "wall_s": 42.0,
           **_tested(0.65, 0.38, 0.59), "test_source": _tested(0.64, 0.39, 0.58),
           "test_autoattack": {"clean_acc": 0.7, "robust_acc": {"autoattack": 0.3}, "n": 100}}
    assert result_row(run, "after") == {
        "label": "after", "method": "rift", "best_epoch": 3, "val_clean": 0.6, "val_robust": 0.3, "test_clean": 0.65,
        "test_pgd": 0.38, "pgd_name": "pgd20", "test_autoattack": 0.3, "aa_subset_clean": 0.7, "n_autoattack": 100,
        "test_corruption": 0.59, "n_test": 1000, "wall_s": 42.0, "train_images_per_s": 200.0}
    subset = {"clean_acc": 0.66, "robust_acc": {"pgd20": 0.4, "autoattack": 0.35}, "n": 30, "timing": {"total": 9.0}}
    assert result_row(run, "before", source=True, autoattack=subset) == {
        "label": "before", "method": "rift", "test_clean": 0.64, "test_pgd": 0.39, "pgd_name": "pgd20",
        "test_autoattack": 0.35, "aa_subset_clean": 0.66, "aa_subset_pgd": 0.4, "n_autoattack": 30,
        "autoattack_s": 9.0, "test_corruption": 0.58, "n_test": 1000}


def test_a_truncated_results_json_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text('{"method": "pgd_at", "test": {"clean_acc": 0.5')
    proc = subprocess.run(robustft_cmd("report", str(run), "--out", str(tmp_path / "out")), env=run_env(),
                          capture_output=True, text=True)
    line = error_line(proc.stderr)
    assert proc.returncode == 2 and "results.json is damaged" in line and "--resume" in line
    assert not (tmp_path / "out").exists()


def test_strings_from_results_are_escaped_in_the_markdown_table():
    rows = [{"label": "a|b", "method": "<img src=x onerror=alert(1)>|x|\n# heading", "test_clean": 0.5}]
    table = markdown_table(rows)
    lines = table.splitlines()
    assert len(lines) == 3 and all(line.count(" | ") == 2 for line in lines[::2])
    assert "a\\|b" in lines[2] and "&lt;img src=x onerror=alert(1)&gt;\\|x\\| # heading" in lines[2]
    assert "<img" not in table
