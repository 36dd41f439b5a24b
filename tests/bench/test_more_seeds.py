"""Seeds where the spread dominates: after the protocol's seeds, claims whose interval is inconclusive because the
seeds disagree (seed half-width above the image half-width) get more seeds, for exactly their cells, up to the cap."""

import json

import pytest
import yaml

from fake_cells import install
from robustft.bench import load_protocol, run_protocol, write_protocol_report
from robustft.errors import UserError

ROOTS = {"data": "/", "models": "/"}  # must exist; the fake cells read nothing


def _protocol(tmp_path, more_seeds: list[int]):
    data = {"name": "seeds", "description": "d", "seeds": [0, 1], "tasks": {"t": {
        "title": "t", "config": {"data": {"name": "{data}"}, "model": {"arch": "cifar_resnet20"}},
        "more_seeds": more_seeds,
        "cells": {"pgd_at": {"method": "pgd_at"}, "twins": {"method": "twins"},
                  "adv_linear_probe": {"method": "adv_linear_probe"},
                  "roli bias": {"method": "roli", "set": {"model.init_head": "{cell:adv_linear_probe}"}}}}},
        "claims": [{"claim": "twins", "task": "t", "better": ["twins"], "than": ["pgd_at"], "metrics": ["clean"]},
                   {"claim": "roli", "task": "t", "better": ["roli bias"], "than": ["adv_linear_probe"],
                    "metrics": ["clean"]}]}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_protocol(path)


def _accuracy(spread: str):
    """Per method and seed: ``spread`` (twins or roli) alternates ±10 points around a gain, the other is a steady
    +20 points (decided at any seed count)."""
    def acc(method: str, lr: float, seed: int) -> float:
        base = {"pgd_at": 0.5, "twins": 0.7, "adv_linear_probe": 0.3, "roli": 0.5}[method]
        return base + (0.1 * (-1) ** seed if method == spread else 0.0) - (0.2 if method == spread else 0.0)
    return acc


def test_more_seeds_run_only_the_spread_limited_claims_cells_up_to_the_cap(tmp_path, monkeypatch):
    ran = install(monkeypatch, _accuracy("twins"))
    protocol = _protocol(tmp_path, [5, 6])
    record = run_protocol(protocol, tmp_path / "out", ROOTS, log=lambda s: None)
    assert [(seed, method) for _, seed, method in ran if seed >= 5] == [
        (5, "pgd_at"), (5, "twins"), (6, "pgd_at"), (6, "twins")]  # still inconclusive after 5: the cap stops it
    added = record["more_seeds"]["t"]
    assert [a["seed"] for a in added] == [5, 6] and all(a["cells"] == ["pgd_at", "twins"] for a in added)
    assert [c["claim"] for c in added[0]["claims"]] == ["twins"]
    written = write_protocol_report(protocol, {**record, "protocol": "seeds", "seeds": [0, 1], "command": "test",
                                               "cells_wall_s": 1.0, "provenance": {"platform": "p", "cpu_count": 2,
                                                                                   "python": "3", "torch": "t"}},
                                    tmp_path / "report")
    md = written[1].read_text()
    assert "- seed 5: pgd_at, twins — for twins (clean)" in md
    # the per-class means beside the plain accuracies
    assert "| pgd_at | 50.0 ± 0.0 | 25.0 ± 0.0 | 50.0 ± 0.0 | 12.5 ± 0.0 |" in md
    claim = next(c for c in json.loads(written[0].read_text())["claims"] if c["claim"] == "twins")
    assert claim["metrics"]["clean"]["paired"]["seeds"] == 4  # the interval rule, now over 4 seeds


def test_a_spread_limited_claim_brings_the_cells_its_cells_refer_to(tmp_path, monkeypatch):
    ran = install(monkeypatch, _accuracy("roli"))
    record = run_protocol(_protocol(tmp_path, [2]), tmp_path / "out", ROOTS, log=lambda s: None)
    assert [method for _, seed, method in ran if seed == 2] == ["adv_linear_probe", "roli"]
    assert record["more_seeds"]["t"][0]["cells"] == ["adv_linear_probe", "roli bias"]


def test_nothing_is_added_when_no_claim_is_limited_by_seeds(tmp_path, monkeypatch):
    ran = install(monkeypatch, _accuracy("none"))
    record = run_protocol(_protocol(tmp_path, [2, 3]), tmp_path / "out", ROOTS, log=lambda s: None)
    assert {seed for _, seed, _ in ran} == {0, 1} and record["more_seeds"] == {"t": []}


def test_more_seeds_must_be_new_seeds(tmp_path, monkeypatch):
    install(monkeypatch, _accuracy("twins"))
    with pytest.raises(UserError, match="more_seeds \\[1\\] already run"):
        run_protocol(_protocol(tmp_path, [1, 2]), tmp_path / "out", ROOTS, log=lambda s: None)
