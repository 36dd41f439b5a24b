"""`robustft report`: tables and plots from run directories, numbers read (never recomputed) from their files."""

import csv
import json
import subprocess

from support import finetune_args, robustft_cmd, run_env, run_ok


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
    assert [r["run"] for r in rows] == ["standard", "twins"]
    for row in rows:
        results = json.loads((tmp_path / "runs" / row["run"] / "results.json").read_text())
        assert float(row["test_clean"]) == results["test"]["clean_acc"]
    assert "| standard | standard |" in (out / "results.md").read_text()


def test_report_refuses_unfinished_run(tmp_path):
    proc = subprocess.run(robustft_cmd("report", str(tmp_path)), env=run_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and "not a finished robustft run" in proc.stderr
