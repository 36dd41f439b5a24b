"""The gpu-paper protocol runs end to end on CPU: the shipped file with tiny sizes (data, epochs, attack steps,
AutoAttack), every task in order — a source trained by the protocol, RiFT on it, transfers from it — through
`robustft bench`, with a report under 16 MB that gives every claim a verdict."""

import json
import subprocess
from importlib import resources

import yaml

from support import robustft_cmd, run_env

TINY_DATA = {"train_n": 64, "val_n": 32, "test_n": 32, "batch_size": 32, "eval_batch_size": 64, "image_size": 16}


def test_gpu_paper_protocol_runs_with_tiny_settings(tiny_task, tmp_path):
    root, _ = tiny_task
    protocol = yaml.safe_load((resources.files("robustft") / "assets/protocols/gpu-paper.yaml").read_text())
    assert list(protocol["tasks"]) == ["source", "same_task", "transfer"]
    for task in protocol["tasks"].values():
        cfg = task["config"]
        cfg["data"].update(TINY_DATA, name="{data}")
        cfg["data"].pop("val_n")
        cfg["data"]["val_fraction"] = 0.25
        cfg["train"]["epochs"] = 1
        cfg["model"]["options"] = {"widths": [8, 16, 32, 64]}  # ResNet-18's layout at 1/8 of its width
        cfg["attack"]["steps"] = 1
        cfg["attack"].pop("step_size", None)
        cfg["eval"].update(val_steps=1, test_steps=1)
        if "corruptions" in cfg["eval"]:
            cfg["eval"].update(corruptions=["gaussian_noise"], corruption_severities=[1], corruption_n=16)
        if "method_args" in cfg:
            cfg["method_args"]["mrc_n"] = 16
        if "autoattack" in task:
            task["autoattack"].update(n=8, version="custom", attacks=["apgd-ce"])
        if "bn_stats" in task:
            task["bn_stats_n"] = 32
        if "optim" in cfg and cfg["optim"].get("schedule") == "multistep":
            cfg["optim"]["milestones"] = [1]
    path = tmp_path / "gpu-paper-tiny.yaml"
    path.write_text(yaml.safe_dump(protocol, sort_keys=False, allow_unicode=True))
    report = tmp_path / "report"
    proc = subprocess.run(robustft_cmd("bench", "--protocol", str(path), "--data-root", str(root), "--out",
                                       str(tmp_path / "runs"), "--report-dir", str(report)),
                          env=run_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((report / "results.json").read_text())
    assert (report / "results.json").stat().st_size < 16 * 2**20
    labels = [(r["task"], r["label"]) for r in results["rows"]]
    assert labels[:3] == [("source", "pgd_at source"), ("same_task", "source (before RiFT)"), ("same_task", "rift")]
    assert {label for task, label in labels if task == "transfer"} == {
        "pgd_at", "twins", "trades", "twins_trades", "adv_linear_probe", "ranli full", "roli full", "autolora"}
    source = str(tmp_path / "runs" / "runs" / "source" / "pgd_at_source" / "seed0" / "model.pt")
    for row in results["rows"][2:]:
        cfg = yaml.safe_load((tmp_path / row["run_dir"] / "config.yaml").read_text())
        assert cfg["model"]["checkpoint"] == source, "every later cell starts from the protocol-trained source"
    assert len(results["claims"]) == 8
    assert all(c["verdict"] in ("held", "contradicted", "inconclusive") for c in results["claims"])
    assert all("paired" in m for c in results["claims"] for m in c["metrics"].values()), \
        "every claim metric is compared per test image (AutoAttack and corruption included)"
    assert "transfer" in results["bn_stats"]
    assert "Validation curve of pgd_at source" in (report / "results.md").read_text(), "the source's curve is shown"
