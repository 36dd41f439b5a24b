"""Benchmark protocols: the grid runs, cells reference each other, finished cells are reused, a lost cell is redone
to the same numbers, the report aggregates over seeds and checks claims."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from robustft.engine.protocol import Claim, cell_dir, list_protocols, load_protocol, run_protocol
from robustft.errors import UserError
from robustft.report.protocol import aggregate, check_claims, write_protocol_report
from support import robustft_cmd, run_env

TINY = {
    "name": "tiny", "description": "a tiny grid", "seeds": [0, 1],
    "tasks": {"t": {
        "title": "tiny task",
        "config": {"data": {"name": "{data}", "val_fraction": 0.2, "batch_size": 32},
                   "model": {"arch": "cifar_resnet20", "checkpoint": "{models}/source.pt", "options": {"width": 4}},
                   "attack": {"steps": 2}, "optim": {"lr": 0.05},
                   "eval": {"val_steps": 2, "test_steps": 2, "corruptions": ["gaussian_noise"],
                            "corruption_severities": [1]},
                   "train": {"epochs": 1}},
        "autoattack": {"n": 8, "version": "custom", "attacks": ["apgd-ce"], "seeds": [0]},
        "cells": {"adv_linear_probe": {"method": "adv_linear_probe"},
                  "roli bias": {"method": "roli", "set": ["method_args.peft=bias",
                                                          "method_args.stage1_from={cell:adv_linear_probe}"]}}}},
    "claims": [{"claim": "roli beats the probe", "task": "t", "better": ["roli bias"], "than": ["adv_linear_probe"],
                "metrics": ["clean", "autoattack"]}],
}


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _numbers(rows: list[dict]) -> list[dict]:
    """Rows without their timings and time stamps (which differ between invocations)."""
    return [{k: v for k, v in r.items() if not k.endswith(("_s", "_per_s", "_utc"))} for r in rows]


def _files(out: Path) -> dict[Path, int]:
    """Every results/AutoAttack file of the cells with its modification time."""
    return {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json") if p.name.startswith(("results", "auto"))}


def test_grid_runs_reuses_and_redoes_a_lost_cell(tiny_task, tmp_path):
    root, _ = tiny_task
    protocol = load_protocol(_write(tmp_path, TINY))
    roots = {"data": str(root), "models": str(root)}
    out = tmp_path / "out"
    first = run_protocol(protocol, out, roots, log=lambda s: None)
    assert [(r["label"], r["seed"]) for r in first["rows"]] == [
        ("adv_linear_probe", 0), ("roli bias", 0), ("adv_linear_probe", 1), ("roli bias", 1)]
    # {cell:...} is the same seed's probe; AutoAttack only for the listed seed, cached beside the run
    cfg = yaml.safe_load((cell_dir(out, "t", "roli bias", 1) / "config.yaml").read_text())
    assert cfg["method_args"]["stage1_from"] == str(cell_dir(out, "t", "adv_linear_probe", 1))
    assert [("test_autoattack" in r) for r in first["rows"]] == [True, True, False, False]
    assert (cell_dir(out, "t", "roli bias", 0) / "autoattack_n8.json").is_file()
    for row in first["rows"]:
        results = json.loads((Path(row["run_dir"]) / "results.json").read_text())
        assert row["test_clean"] == results["test"]["clean_acc"]
        assert row["test_corruption"] == results["test_corruptions"]["mean"]
    before = _files(out)
    assert _numbers(run_protocol(protocol, out, roots, log=lambda s: None)["rows"]) == _numbers(first["rows"])
    assert _files(out) == before  # nothing recomputed
    # a cell that never finished (results and AutoAttack file gone): only it runs again, to the same numbers
    lost = cell_dir(out, "t", "roli bias", 0)
    (lost / "results.json").unlink()
    (lost / "autoattack_n8.json").unlink()
    again = run_protocol(protocol, out, roots, log=lambda s: None)
    assert _numbers(again["rows"]) == _numbers(first["rows"])
    changed = {p for p, t in _files(out).items() if before.get(p) != t}
    assert changed == {lost / "results.json", lost / "autoattack_n8.json"}


def test_report_aggregates_and_checks_claims():
    rows = [{"task": "t", "label": lab, "method": lab, "seed": s, "test_clean": c, "test_pgd": p, "n_test": 10,
             "pgd_name": "pgd20", **({"test_autoattack": aa, "n_autoattack": 10} if aa is not None else {})}
            for lab, s, c, p, aa in [("a", 0, 0.5, 0.2, 0.1), ("a", 1, 0.7, 0.3, None),
                                     ("b", 0, 0.4, 0.25, 0.15), ("b", 1, 0.6, 0.25, None)]]
    table = aggregate(rows)
    a = table[0]
    assert a["test_clean"] == pytest.approx(0.6) and a["test_clean_spread"] == pytest.approx(0.1)
    assert a["test_autoattack_n"] == 1 and a["seeds"] == [0, 1]
    claims = check_claims([Claim("a cleaner", "t", ["a"], ["b"], ["clean"]),
                           Claim("a more robust", "t", ["a"], ["b"], ["pgd", "autoattack"]),
                           Claim("a as robust", "t", ["a"], ["b"], ["pgd"], tolerance=0.05)], rows)
    assert [c["held"] for c in claims] == [True, False, True]
    assert [c["within_noise"] for c in claims] == [True, True, False]  # 2 SE at n = 10 is 32 points
    assert claims[1]["metrics"]["pgd"]["per_seed"] == {0: pytest.approx(-0.05), 1: pytest.approx(0.05)}
    assert claims[1]["metrics"]["autoattack"]["difference"] == pytest.approx(-0.05)
    assert claims[0]["metrics"]["clean"]["noise"] == pytest.approx(1 / 10 ** 0.5)  # 2 SE bound at n_test = 10


def test_report_files_state_the_claims(tiny_task, tmp_path):
    root, _ = tiny_task
    protocol = load_protocol(_write(tmp_path, {**TINY, "seeds": [0]}))
    record = run_protocol(protocol, tmp_path / "out", {"data": str(root), "models": str(root)}, log=lambda s: None)
    record.update(seeds=[0], command="robustft bench --protocol tiny.yaml", cells_wall_s=1.0,
                  provenance={"platform": "p", "cpu_count": 2, "python": "3", "torch": "t"})
    written = write_protocol_report(protocol, record, tmp_path / "report")
    names = {p.name for p in written}
    assert {"results.json", "results.md", "t_clean_vs_robust.png", "t_training_curves.png"} <= names
    text = (tmp_path / "report" / "results.md").read_text()
    held = json.loads((tmp_path / "report" / "results.json").read_text())["claims"][0]["held"]
    assert "roli beats the probe: roli bias vs adv_linear_probe | clean: " in text
    assert ("**held" if held else "**did not hold**") in text


def test_protocol_errors(tmp_path):
    assert "cpu-small" in list_protocols()
    with pytest.raises(UserError, match="not an earlier cell"):
        bad = {**TINY, "tasks": {"t": {**TINY["tasks"]["t"], "cells": dict(reversed(TINY["tasks"]["t"]["cells"]
                                                                                     .items()))}}}
        load_protocol(_write(tmp_path, bad))
    with pytest.raises(UserError, match="unknown cells/metrics"):
        load_protocol(_write(tmp_path, {**TINY, "claims": [{**TINY["claims"][0], "metrics": ["speed"]}]}))
    with pytest.raises(UserError, match="unknown protocol"):
        load_protocol("cpu-huge")
    proc = subprocess.run(robustft_cmd("bench", "--protocol", "cpu-small", "--data-root", str(tmp_path / "none")),
                          env=run_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--data-root" in proc.stderr


def test_cpu_small_cells_build():
    protocol = load_protocol("cpu-small")
    from robustft.engine.protocol import cell_config

    roots = {"data": "/d", "models": "/m"}
    cfgs = {label: cell_config(protocol, task, label, 1, Path("/o"), roots)
            for task, t in protocol.tasks.items() for label in t.cells}
    assert len(cfgs) == 14 and cfgs["roli lora"].method_args["stage1_from"] == str(
        cell_dir(Path("/o"), "transfer", "adv_linear_probe", 1))
    assert cfgs["twins + roli head"].model.init_head == "roli:" + str(cell_dir(Path("/o"), "transfer",
                                                                               "adv_linear_probe", 1))
    assert {c.data.name for c in cfgs.values()} == {"/d/cifar100", "/d/cifar10-jpeg/cifar10-jpeg.zip"}
    assert all(c.train.seed == 1 for c in cfgs.values())
