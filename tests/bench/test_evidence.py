"""The evidence machinery: a grid cell is a group of variants, grid seeds decide the variant the other seeds run, a
cell may start from an earlier task's cell, batch-norm statistics are measured against the source, corruption
accuracy is compared per image, and claims are also shown at matched grid positions."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from robustft.bench import cell_config, cell_dir, load_protocol, run_protocol, write_protocol_report
from robustft.errors import UserError

TWO_TASKS = {
    "name": "evidence-tiny", "description": "grid, grid seeds, a protocol-trained source", "seeds": [0, 1],
    "tasks": {
        "source": {
            "title": "a source trained by the protocol",
            "config": {"data": {"name": "{data}", "val_fraction": 0.2, "batch_size": 32},
                       "model": {"arch": "cifar_resnet20", "options": {"width": 4}},
                       "attack": {"steps": 1}, "eval": {"val_steps": 1, "test_steps": 1}, "train": {"epochs": 1}},
            "cells": {"src": {"method": "pgd_at"}}},
        "t": {
            "title": "grid on top of it",
            "config": {"data": {"name": "{data}", "val_fraction": 0.2, "batch_size": 32},
                       "model": {"arch": "cifar_resnet20", "options": {"width": 4}, "head": "new"},
                       "attack": {"steps": 1},
                       "eval": {"val_steps": 1, "test_steps": 1, "corruptions": ["gaussian_noise"],
                                "corruption_severities": [1, 2]},
                       "train": {"epochs": 1}},
            "grid_seeds": [0],
            "bn_stats": {"this data": {"model.checkpoint": "{models}/source.pt"}},
            "bn_stats_n": 64,
            "cells": {
                "pgd_at": {"method": "pgd_at", "set": {"model.checkpoint": "{cell:source/src}/model.pt"},
                           "grid": {"optim.lr": [0.1, 0.01, 0.001]}},
                "twins": {"method": "twins", "set": {"model.checkpoint": "{cell:source/src}/model.pt"},
                          "grid": {"optim.lr": [0.1, 0.01, 0.001]}}}}},
    "claims": [{"claim": "twins beats pgd_at", "task": "t", "better": ["twins"], "than": ["pgd_at"],
                "metrics": ["clean", "corruption"]}],
}


def _load(tmp_path: Path, data: dict) -> object:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return load_protocol(path)


def test_a_grid_cell_is_a_group_of_one_variant_per_value(tmp_path):
    protocol = _load(tmp_path, TWO_TASKS)
    task = protocol.tasks["t"]
    assert task.groups()["pgd_at"] == ["pgd_at lr=0.1", "pgd_at lr=0.01", "pgd_at lr=0.001"]
    cfg = cell_config(protocol, "t", "twins lr=0.01", 1, Path("/o"), {"data": "/d", "models": "/m"})
    assert (cfg.method, cfg.optim.lr, cfg.train.seed) == ("twins", 0.01, 1)
    assert cfg.model.checkpoint == str(cell_dir(Path("/o"), "source", "src", 1)) + "/model.pt"
    bad = copy.deepcopy(TWO_TASKS)
    bad["tasks"]["t"]["cells"]["pgd_at"]["group"] = "x"
    with pytest.raises(UserError, match="a grid takes one KEY and no group"):
        _load(tmp_path, bad)
    bad = copy.deepcopy(TWO_TASKS)
    bad["tasks"] = {"t": bad["tasks"]["t"], "source": bad["tasks"]["source"]}  # the source comes after its user
    with pytest.raises(UserError, match="TASK/LABEL of an earlier task"):
        _load(tmp_path, bad)


def test_grid_seeds_choose_the_variant_the_other_seeds_run(tiny_task, tmp_path):
    root, ckpt = tiny_task
    protocol = _load(tmp_path, TWO_TASKS)
    out = tmp_path / "out"
    record = run_protocol(protocol, out, {"data": str(root), "models": str(root)}, log=lambda s: None)
    rows = {(r["task"], r["label"], r["seed"]): r for r in record["rows"]}
    for group in ("pgd_at", "twins"):
        seed0 = [r for (t, _, s), r in rows.items() if t == "t" and s == 0 and r["group"] == group]
        seed1 = [r for (t, _, s), r in rows.items() if t == "t" and s == 1 and r["group"] == group]
        assert len(seed0) == 3 and len(seed1) == 1  # the whole grid at seed 0, one variant at seed 1
        best = max(seed0, key=lambda r: r["val_robust"])  # first listed wins a tie, as max keeps the first
        assert [r["label"] for r in seed0 if r["selected"]] == [best["label"]] == [seed1[0]["label"]]
        unrun = [label for label in protocol.tasks["t"].groups()[group] if label != seed1[0]["label"]]
        assert not any(cell_dir(out, "t", label, 1).exists() for label in unrun)
    # the transfer cells start from the same seed's protocol-trained source
    cfg = yaml.safe_load((cell_dir(out, "t", seed1[0]["label"], 1) / "config.yaml").read_text())
    assert cfg["model"]["checkpoint"] == str(cell_dir(out, "source", "src", 1) / "model.pt")
    # corruption flags: one string per corruption set, on the same images
    row = rows[("t", best["label"], 0)]
    assert len(row["samples"]["corruption"]) == 2 and {len(f) for f in row["samples"]["corruption"]} == {row["n_test"]}
    mean = sum(f.count("1") for f in row["samples"]["corruption"]) / (2 * row["n_test"])
    assert row["test_corruption"] == pytest.approx(mean)
    # the source's batch-norm statistics on the task's data: one entry per BN layer (19 + 2 in the shortcuts)
    bn = record["bn_stats"]["t"]
    assert list(bn["distances"]) == ["this data"] and len(bn["distances"]["this data"]) == 21
    assert json.loads((out / "bn_stats_t.json").read_text()) == bn
    # the report: verdicts from paired flags (corruption included), the grid at matched positions, the BN table
    written = write_protocol_report(protocol, {**record, "protocol": protocol.name, "seeds": [0, 1],
                                               "command": "test", "cells_wall_s": 1.0,
                                               "provenance": {"platform": "p", "cpu_count": 2, "python": "3",
                                                              "torch": "t"}}, tmp_path / "report")
    report = json.loads(written[0].read_text())
    claim = report["claims"][0]
    assert all("paired" in m for m in claim["metrics"].values())
    assert claim["metrics"]["corruption"]["paired"]["n"] == row["n_test"]
    assert claim["metrics"]["corruption"]["paired"]["models"] == [4, 4]  # 2 seeds × 2 corruption sets per side
    matched = claim["matched_grid"]
    assert [m["variants"] for m in matched] == [{"twins": f"twins lr={v}", "pgd_at": f"pgd_at lr={v}"}
                                                for v in (0.1, 0.01, 0.001)]
    assert all(m["metrics"]["clean"]["paired"]["models"] == [1, 1] for m in matched)  # seed 0 only
    md = written[1].read_text()
    assert "matched learning rates" in md and "Batch-norm statistics of the source" in md
    assert md.count("| layer1.0.bn1 |") == 1


def test_grid_seeds_must_be_run(tmp_path, tiny_task):
    root, _ = tiny_task
    protocol = _load(tmp_path, TWO_TASKS)
    with pytest.raises(UserError, match="include none of the grid seeds"):
        run_protocol(protocol, tmp_path / "o", {"data": str(root), "models": str(root)}, seeds=[1],
                     log=lambda s: None)


def test_a_task_with_its_own_seeds_is_one_source_for_every_seed(tiny_task, tmp_path):
    root, _ = tiny_task
    data = copy.deepcopy(TWO_TASKS)
    data["tasks"]["source"].update(seeds=[0], curve=True)
    data["tasks"]["source"]["config"]["train"]["epochs"] = 2
    data["tasks"]["t"]["cells"] = {"pgd_at": {"method": "pgd_at",
                                              "set": {"model.checkpoint": "{cell:source/src}/model.pt"}}}
    data["claims"] = []
    del data["tasks"]["t"]["grid_seeds"]
    protocol = _load(tmp_path, data)
    out, roots, lines = tmp_path / "out", {"data": str(root), "models": str(root)}, []
    record = run_protocol(protocol, out, roots, seeds=[1], log=lines.append)
    assert [(r["task"], r["seed"]) for r in record["rows"]] == [("source", 0), ("t", 1)]
    assert "cell 2/2" in "\n".join(lines) and not cell_dir(out, "source", "src", 1).exists()
    cfg = yaml.safe_load((cell_dir(out, "t", "pgd_at", 1) / "config.yaml").read_text())
    assert cfg["model"]["checkpoint"] == str(cell_dir(out, "source", "src", 0) / "model.pt")
    record = run_protocol(protocol, out, roots, log=lines.append)  # seeds 0 and 1: the source is reused
    assert [(r["task"], r["seed"]) for r in record["rows"]] == [("source", 0), ("t", 0), ("t", 1)]
    written = write_protocol_report(protocol, {**record, "protocol": protocol.name, "seeds": [0, 1],
                                               "command": "test", "cells_wall_s": 1.0,
                                               "provenance": {"platform": "p", "cpu_count": 2, "python": "3",
                                                              "torch": "t"}}, tmp_path / "report")
    md = written[1].read_text()
    curve = md.split("Validation curve of src")[1].split("\n\n")[1].splitlines()
    assert [line.split(" | ")[0] for line in curve[2:]] == ["| 1", "| 2"]  # one row per epoch
    assert "Validation curve of pgd_at" not in md  # only tasks with curve: true
    with pytest.raises(UserError, match="list no seeds"):
        _load(tmp_path, {**data, "tasks": {**data["tasks"], "source": {**data["tasks"]["source"], "seeds": []}}})


def test_the_batch_norm_table_is_measured_again_when_its_data_changes(tiny_task, tmp_path):
    from robustft.bench.runner import _bn_stats

    root, _ = tiny_task
    roots = {"data": str(root), "models": str(root)}
    task = {**copy.deepcopy(TWO_TASKS["tasks"]["t"]), "grid_seeds": None, "bn_stats": {"this data": {}},
            "cells": {"p": {"method": "pgd_at"}}}
    task["config"]["model"]["checkpoint"] = "{models}/source.pt"
    data = {**TWO_TASKS, "tasks": {"t": task}, "claims": []}
    out = tmp_path / "out"
    out.mkdir()
    first = _bn_stats(_load(tmp_path, data), "t", 0, out, roots, log=lambda s: None)
    stored = json.loads((out / "bn_stats_t.json").read_text())
    stored["distances"] = {"this data": "cached"}
    (out / "bn_stats_t.json").write_text(json.dumps(stored))
    assert _bn_stats(_load(tmp_path, data), "t", 0, out, roots, log=lambda s: None)["distances"] == {
        "this data": "cached"}  # same data: the stored table is reused
    task["config"]["data"]["val_fraction"] = 0.3  # another training split: the stored table no longer applies
    again = _bn_stats(_load(tmp_path, data), "t", 0, out, roots, log=lambda s: None)
    assert again["distances"].keys() == first["distances"].keys() and again["distances"]["this data"] != "cached"
    stored = json.loads((out / "bn_stats_t.json").read_text())
    stored["distances"] = {"this data": "cached"}
    (out / "bn_stats_t.json").write_text(json.dumps(stored))
    (root / "elsewhere.pt").write_bytes((root / "source.pt").read_bytes())
    task["config"]["model"]["checkpoint"] = "{models}/elsewhere.pt"  # another source model: measured again
    assert _bn_stats(_load(tmp_path, data), "t", 0, out, roots, log=lambda s: None)["distances"]["this data"] != "cached"
