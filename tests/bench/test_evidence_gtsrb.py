"""The shipped evidence protocol's GTSRB task runs end to end on the shared data with tiny settings: validation
carved by track, a 43-class head on the CIFAR-10 source, per-class means and the batch-norm table in the report."""

import json
from pathlib import Path

import yaml

from robustft.bench import load_protocol, run_protocol, write_protocol_report
from robustft.bench.runner import bench_roots

SHIPPED = Path(__file__).resolve().parents[2] / "src/robustft/assets/protocols/evidence.yaml"


def test_the_gtsrb_task_runs_with_tiny_settings(shared_dir, tmp_path):
    data = yaml.safe_load(SHIPPED.read_text())
    task = data["tasks"]["gtsrb"]
    task["config"]["data"].update(train_n=86, val_n=43, test_n=86, batch_size=43)
    task["config"]["attack"]["steps"] = 1
    task["config"]["eval"].update(val_steps=1, test_steps=1)
    task["config"]["train"].update(epochs=1)
    task.update(seeds=[0], more_seeds=[], grid_extend=0, bn_stats_n=64,
                autoattack={"n": 43, "version": "custom", "attacks": ["apgd-ce"], "seeds": [0], "selected_only": True},
                cells={k: v for k, v in task["cells"].items() if k in ("adv_linear_probe", "roli full")})
    task["cells"]["roli full"]["grid"] = {"optim.lr": [1.0e-4]}
    data["tasks"] = {"gtsrb": task}
    data["claims"] = []
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    protocol = load_protocol(path)
    record = run_protocol(protocol, tmp_path / "out", bench_roots(shared_dir / "data"), log=lambda s: None)
    rows = {r["label"]: r for r in record["rows"]}
    assert rows["roli full lr=0.0001"]["n_test"] == 86 and "test_autoattack" in rows["roli full lr=0.0001"]
    assert 0 <= rows["roli full lr=0.0001"]["test_clean_class_mean"] <= 1
    config = yaml.safe_load((Path(rows["adv_linear_probe"]["run_dir"]) / "config.yaml").read_text())
    assert config["data"]["name"].endswith("gtsrb32")
    assert set(record["bn_stats"]["gtsrb"]["distances"]) == set(task["bn_stats"])
    written = write_protocol_report(protocol, {**record, "protocol": "evidence", "seeds": [0], "command": "test",
                                               "cells_wall_s": 1.0, "provenance": {"platform": "p", "cpu_count": 2,
                                                                                   "python": "3", "torch": "t"}},
                                    tmp_path / "report")
    md = written[1].read_text()
    assert "Mean per-class accuracy" in md and "| layer1.0.bn1 |" in md
    assert json.loads(written[0].read_text())["grids"][0]["position"] == {"0": "interior"}
