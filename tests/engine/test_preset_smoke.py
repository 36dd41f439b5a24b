"""Every paper preset runs end to end through the CLI at a tiny scale: the preset's method, stages, schedule, attacks,
selection and test protocol, with random source weights of a narrow variant of its architecture on small synthetic
data."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustft.attacks import PGD
from robustft.cli import main
from robustft.engine import load_config
from robustft.methods import create_method
from robustft.models import create_model, save_state_dict

PAPER = sorted((Path(__file__).resolve().parents[2] / "configs" / "paper").glob("*.yaml"))

# A narrow, random-weight variant of each preset architecture (no download, a fraction of a second per step).
TINY_ARCH = {
    "resnet50": ["model.options.widths=[8, 8, 8, 8]"],
    "resnet18": ["model.options.widths=[8, 8, 8, 8]"],
    "cifar_resnet18": ["model.options.widths=[8, 8, 8, 8]"],
    "cifar_resnet34": ["model.options.widths=[8, 8, 8, 8]"],
    "wide_resnet34_10": ["model.options.widen_factor=1"],
    "swin_base_patch4_window7_224": ["model.arch=swin", "model.options.embed_dim=8", "model.options.depths=[1, 1]",
                                     "model.options.num_heads=[1, 1]", "model.options.window_size=2",
                                     "model.options.patch_size=4", "model.options.img_size=16"],
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """An npz dataset of 16-px images, 4 classes: 40 train, 8 test."""
    root = tmp_path_factory.mktemp("presets")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 8)):
        np.savez(root / f"{split}.npz", x=rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), y=np.arange(n) % 4)
    return root


def _tiny(path: Path) -> list[str]:
    """``--set`` overrides (flag, value, ...) that shrink ``path``'s run to seconds, keeping its method and protocol."""
    cfg = load_config(path)
    arch = cfg.model.arch.partition(".")[0]
    sets = [f"model.arch={arch}", *TINY_ARCH[arch], "train.epochs=1",
            "data.batch_size=12", "data.eval_batch_size=16", "attack.steps=1", "eval.val_steps=1", "eval.test_steps=1",
            "optim.warmup_epochs=0", "train.diagnostics=false"]
    if cfg.data.image_size:
        sets.append("data.image_size=16")
    if cfg.model.options.get("resize_input"):
        sets.append("model.options.resize_input=" + ("true" if arch.startswith("swin") else "16"))
    if cfg.eval.corruptions:
        sets += ["eval.corruptions=[gaussian_noise]", "eval.corruption_severities=[1]"]
    if cfg.eval.test_attacks != ["pgd"]:
        sets.append("eval.test_attacks=[pgd]")
    if cfg.method == "roli":
        sets.append("method_args.lp_epochs=1")
    if cfg.method == "rift":
        sets += ["method_args.mrc_n=8", "method_args.mrc_minibatch=8", "method_args.mrc_steps=1",
                 "method_args.mrc_attack_steps=1", "method_args.alphas=[0.0, 1.0]"]
    return [arg for s in sets for arg in ("--set", s)]


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_preset_runs_through_the_cli(path, tiny_data, tmp_path):
    sets = _tiny(path)
    model = load_config(path, sets[1::2]).model
    torch.manual_seed(0)
    source = save_state_dict(create_model(model.arch, num_classes=4, **model.options), tmp_path / "source.pt")
    rc = main(["finetune", "--config", str(path), "--data", str(tiny_data), "--checkpoint", str(source),
               "--out-dir", str(tmp_path), "--name", "run", *sets])
    assert rc == 0
    cfg = load_config(path)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    stages = [s.name for s in create_method(cfg.method, PGD(), **cfg.method_args).stages()]
    assert results["method"] == cfg.method and list(results["stages"]) == stages
    assert results["test"]["n"] == 8 and "pgd1" in results["test"]["robust_acc"]
    assert (tmp_path / "run" / "model.pt").is_file()
