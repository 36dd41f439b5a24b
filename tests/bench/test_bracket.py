"""Grids that bracket: a grid whose validation choice is an end grows past it (validation only) until the choice is
interior or the bound is reached, and the report says which."""

import json

import pytest
import yaml

from fake_cells import install, peak_at
from robustft.bench import load_protocol, run_protocol, write_protocol_report
from robustft.bench.protocol import Grid
import robustft.bench.runner as runner

ROOTS = {"data": "/", "models": "/"}  # must exist; the fake cells read nothing
PROVENANCE = {"platform": "p", "cpu_count": 2, "python": "3", "torch": "t"}


def _protocol(tmp_path, grid: list[float], extend: int, seeds: list[int] = (0, 1)):
    data = {"name": "bracket", "description": "d", "seeds": list(seeds), "tasks": {"t": {
        "title": "t", "config": {"data": {"name": "{data}"}, "model": {"arch": "cifar_resnet20"}},
        "grid_seeds": [0], "grid_extend": extend,
        "cells": {"pgd_at": {"method": "pgd_at", "grid": {"optim.lr": grid}},
                  "twins": {"method": "twins", "grid": {"optim.lr": list(grid)}}}}},
        "claims": [{"claim": "c", "task": "t", "better": ["twins"], "than": ["pgd_at"], "metrics": ["clean"]}]}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_protocol(path)


def test_a_grid_grows_past_the_chosen_end_until_interior(tmp_path, monkeypatch):
    ran = install(monkeypatch, peak_at(0.3))
    protocol = _protocol(tmp_path, [0.01, 0.03, 0.1], extend=3)
    record = run_protocol(protocol, tmp_path / "out", ROOTS, log=lambda s: None)
    # seed 0: the grid, then 0.333 (chosen: an end), then 1.11 (0.333 now interior); seed 1 runs 0.333 only
    assert [lr for lr, seed, _ in ran if seed == 0] == [0.01, 0.03, 0.1, 0.01, 0.03, 0.1, 0.333, 0.333, 1.11, 1.11]
    assert [lr for lr, seed, _ in ran if seed == 1] == [0.333, 0.333]
    assert protocol.tasks["t"].groups()["pgd_at"] == [f"pgd_at lr={v}" for v in (0.01, 0.03, 0.1, 0.333, 1.11)]
    grids = {g["group"]: g for g in record["grids"]}
    assert grids["pgd_at"]["chosen"] == {0: 0.333} and grids["pgd_at"]["position"] == {0: "interior"}
    assert grids["pgd_at"]["added"] == {"first": 0, "last": 2}
    chosen = [r["label"] for r in record["rows"] if r["selected"]]
    assert chosen == ["pgd_at lr=0.333", "twins lr=0.333"] * 2
    written = write_protocol_report(protocol, {**record, "protocol": "bracket", "seeds": [0, 1], "command": "test",
                                               "cells_wall_s": 1.0, "provenance": PROVENANCE}, tmp_path / "report")
    md = written[1].read_text()
    assert "| pgd_at | 0.01, 0.03, 0.1, 0.333, 1.11 | 0 / 2 (≤ 3) | 0: 0.333 | interior |" in md
    assert json.loads(written[0].read_text())["grids"][0]["position"] == {"0": "interior"}


def test_the_bound_stops_the_growth_and_the_report_says_so(tmp_path, monkeypatch):
    ran = install(monkeypatch, peak_at(0.0001))
    protocol = _protocol(tmp_path, [0.1, 0.03, 0.01], extend=1, seeds=[0])  # descending: the low end is last
    record = run_protocol(protocol, tmp_path / "out", ROOTS, log=lambda s: None)
    assert sorted({lr for lr, _, _ in ran}) == [0.00333, 0.01, 0.03, 0.1]
    grids = {g["group"]: g for g in record["grids"]}
    assert grids["twins"]["values"] == [0.1, 0.03, 0.01, 0.00333]
    assert grids["twins"]["position"] == {0: "bound"}
    written = write_protocol_report(protocol, {**record, "protocol": "bracket", "seeds": [0], "command": "test",
                                               "cells_wall_s": 1.0, "provenance": PROVENANCE}, tmp_path / "report")
    assert "| twins | 0.1, 0.03, 0.01, 0.00333 | 0 / 1 (≤ 1) | 0: 0.00333 | hit the bound |" in written[1].read_text()


def test_without_grid_extend_an_end_choice_is_reported_as_the_end(tmp_path, monkeypatch):
    install(monkeypatch, peak_at(0.3))
    protocol = _protocol(tmp_path, [0.01, 0.03, 0.1], extend=0, seeds=[0])
    record = run_protocol(protocol, tmp_path / "out", ROOTS, log=lambda s: None)
    assert {g["group"]: g["position"] for g in record["grids"]} == {"pgd_at": {0: "end"}, "twins": {0: "end"}}


def test_the_next_value_uses_the_grids_own_ratio_at_that_end():
    from robustft.bench.protocol import CellSpec
    grid = Grid("g", CellSpec(method="m"), "optim.lr", [0.005, 0.015, 0.05])
    assert (grid.beyond(0), grid.beyond(-1)) == (0.00167, 0.167)
    with pytest.raises(Exception, match="2\\+ positive numbers"):
        Grid("g", CellSpec(method="m"), "method_args.peft", ["full", "bias"]).beyond(0)


def test_a_diverged_grid_value_is_recorded_and_bounds_the_grid_and_other_cells_still_fail(tmp_path, monkeypatch):
    from robustft.errors import TrainingDiverged
    ran = install(monkeypatch, peak_at(0.3))
    fake_run = runner.run

    def run(cfg, run_dir, resume, log):
        if cfg.optim.lr > 0.2:
            raise TrainingDiverged("training diverged: loss is nan at epoch 1, iteration 3")
        fake_run(cfg, run_dir, resume, log)

    monkeypatch.setattr(runner, "run", run)
    protocol = _protocol(tmp_path, [0.01, 0.03, 0.1], extend=1)
    record = run_protocol(protocol, tmp_path / "out", ROOTS, log=lambda s: None)
    grids = {g["group"]: g for g in record["grids"]}
    assert grids["pgd_at"]["values"] == [0.01, 0.03, 0.1, 0.333] and grids["pgd_at"]["diverged"] == [0.333]
    assert grids["pgd_at"]["chosen"] == {0: 0.1} and grids["pgd_at"]["position"] == {0: "interior"}
    assert [r["label"] for r in record["rows"] if r["selected"]] == ["pgd_at lr=0.1", "twins lr=0.1"] * 2
    assert all(lr < 0.2 for lr, _, _ in ran)
    written = write_protocol_report(protocol, {**record, "protocol": "bracket", "seeds": [0, 1], "command": "test",
                                               "cells_wall_s": 1.0, "provenance": PROVENANCE}, tmp_path / "report")
    md = written[1].read_text()
    assert "| pgd_at | 0.01, 0.03, 0.1, 0.333 (diverged) | 0 / 1 (≤ 1) | 0: 0.1 | interior |" in md
    assert "| pgd_at lr=0.333 | 0 | training diverged: loss is nan at epoch 1, iteration 3 |" in md
    assert [d["label"] for d in record["diverged"]] == ["pgd_at lr=0.333", "twins lr=0.333"]
    plain = load_protocol(_write(tmp_path, {"name": "p", "description": "d", "seeds": [0], "tasks": {"t": {
        "title": "t", "config": {"data": {"name": "{data}"}, "model": {"arch": "cifar_resnet20"},
                                 "optim": {"lr": 0.5}},
        "cells": {"pgd_at": {"method": "pgd_at"}}}}, "claims": []}))
    with pytest.raises(TrainingDiverged):  # a cell that is no grid variant: divergence stops the protocol
        run_protocol(plain, tmp_path / "out2", ROOTS, log=lambda s: None)


def _write(tmp_path, data: dict):
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
