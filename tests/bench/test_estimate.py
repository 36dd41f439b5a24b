"""The expected compute of a protocol from a committed run: passes per cell scale with images, epochs, attack steps
and pixels; extensions and added seeds count at their caps; the shipped evidence protocol states its estimate."""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robustft.bench import load_protocol
from robustft.bench.estimate import cell_passes, estimate_protocol

ROOT = Path(__file__).resolve().parents[2]
ROOTS = {"data": "/d", "models": "/m"}
COUNTS = {"t": {"train": 1000, "val": 100, "test": 500}}
BASE = {"name": "e", "description": "d", "seeds": [0, 1], "tasks": {"t": {
    "title": "t", "config": {"data": {"name": "{data}", "image_size": 16, "train_n": 100, "val_n": 10,
                                      "test_n": 50},
                             "model": {"arch": "cifar_resnet20"}, "attack": {"steps": 4},
                             "eval": {"val_steps": 3, "test_steps": 8}, "train": {"epochs": 2}},
    "cells": {"a": {"method": "pgd_at"}, "b": {"method": "twins"}}}},
    "claims": [{"claim": "c", "task": "t", "better": ["b"], "than": ["a"], "metrics": ["clean"]}]}


def _load(tmp_path: Path, data: dict, name: str = "p.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return load_protocol(path)


def test_passes_scale_with_images_steps_and_pixels(tmp_path):
    from robustft.bench import cell_config
    protocol = _load(tmp_path, BASE)
    cfg = cell_config(protocol, "t", "a", 0, Path("/o"), ROOTS)
    assert cell_passes(cfg, COUNTS["t"]) == 2 * (100 * 5 + 10 * 5) + 50 * 10
    big = copy.deepcopy(BASE)
    big["tasks"]["t"]["config"]["data"]["image_size"] = 32
    cfg32 = cell_config(_load(tmp_path, big, "b.yaml"), "t", "a", 0, Path("/o"), ROOTS)
    assert cell_passes(cfg32, COUNTS["t"]) == 4 * cell_passes(cfg, COUNTS["t"])


def test_the_committed_run_prices_the_new_version_and_caps_count(tmp_path):
    committed = _load(tmp_path, BASE)
    record = {"rows": [{"task": "t", "label": label, "seed": seed, "wall_s": wall, "autoattack_s": 0}
                       for label, wall in (("a", 10.0), ("b", 20.0)) for seed in (0, 1)]}
    same = estimate_protocol(committed, committed, record, ROOTS, COUNTS)
    assert same["total_s"] == pytest.approx(2 * (10 + 20))
    grown = copy.deepcopy(BASE)
    grown["tasks"]["t"].update(more_seeds=[2, 3])
    grown["tasks"]["t"]["config"]["train"]["epochs"] = 4  # twice the training passes
    out = estimate_protocol(_load(tmp_path, grown, "g.yaml"), committed, record, ROOTS, COUNTS)["tasks"]["t"]
    passes = 2 * (100 * 5 + 10 * 5) + 50 * 10
    factor = (passes + 2 * (100 * 5 + 10 * 5)) / passes
    assert out["cells_s"] == pytest.approx(2 * 30 * factor)
    assert out["more_seeds_s"] == pytest.approx(2 * 30 * factor)  # both claim cells, both added seeds


def test_the_shipped_evidence_protocol_states_its_estimate():
    proc = subprocess.run([sys.executable, str(ROOT / "bench/evidence_estimate.py")], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    hours = float(re.search(r"= ([\d.]+) h", proc.stdout).group(1))
    description = load_protocol("evidence").description
    assert f"{hours:.1f} hours with every grid extension" in description
