"""scripts/gpu_check.sh --device cpu --tiny: the GPU check's three steps run and write their summary, perf table and
protocol report (on a GPU the same script runs them at full size)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from support import run_env

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_tiny_on_the_cpu(tiny_task, tmp_path):
    data, _ = tiny_task
    out = tmp_path / "gpu"
    env = {**run_env(), "ROBUSTFT_NO_SETUP": "1",  # this interpreter's environment, not a fresh .venv
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    argv = ["--device", "cpu", "--tiny", "--out", str(out), "--data-root", str(data), "--runs", str(tmp_path / "runs")]
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), *argv], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((out / "gpu_check.json").read_text())
    assert record["device"] == "cpu" and [s["returncode"] for s in record["steps"]] == [0, 0, 0]
    assert record["tests"].endswith(("passed", "s")) and "passed" in record["tests"]
    header = next(line for line in (ROOT / "bench/results/perf.md").read_text().splitlines() if line.startswith("|"))
    perf_md = (out / "perf" / "perf.md").read_text()
    assert header in perf_md, "the columns of bench/results/perf.md"
    rows = {(r["label"], r["precision"]) for r in json.loads((out / "perf" / "perf.json").read_text())["rows"]}
    assert rows == {(label, p) for label in ("seed_style", "standard", "pgd_at") for p in ("bf16", "fp32")}
    results = json.loads((out / "gpu-paper" / "results.json").read_text())
    assert [(r["task"], r["label"]) for r in results["rows"]] == [("source", "pgd_at source")]
    readme = (out / "README.md").read_text()
    assert readme.startswith("# GPU check on cpu") and "pgd_at bf16:" in readme and "pgd_at fp32:" in readme
