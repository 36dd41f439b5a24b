"""Every shipped YAML preset parses and validates, and names a registered method and architecture; the RoLI paper
presets train with the official effective learning rates and modes."""

from pathlib import Path

import pytest
from torch import nn

from robustft.attacks import PGD
from robustft.engine import build_optimizer, load_config
from robustft.engine.run import _stage_config
from robustft.methods import create_method, list_methods
from robustft.models import list_models

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))
DEMO = Path(__file__).resolve().parents[2] / "src" / "robustft" / "assets" / "demo.yaml"


@pytest.mark.parametrize("path", [*CONFIGS, DEMO], ids=lambda p: p.name)
def test_preset_is_valid(path):
    cfg = load_config(path)
    assert cfg.method in list_methods()
    assert cfg.model.arch.partition(".")[0] in list_models()


def test_presets_exist():
    names = {p.parent.name + "/" + p.stem for p in CONFIGS}
    assert {"paper/twins_cifar10", "paper/twins_trades_cifar10", "paper/twins_caltech256",
            "cpu/cifar100_transfer", "cpu/demo_source", "paper/rift_cifar10", "cpu/rift_cifar10",
            "cpu/roli_cifar100", "paper/roli_lora_cifar100"} <= names


PAPER = sorted((Path(__file__).resolve().parents[2] / "configs" / "paper").glob("*.yaml"))


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_presets_reproduce_the_official_precision_and_export(path):
    cfg = load_config(path)
    assert cfg.train.amp == "off", "all three official codes train in fp32"
    if cfg.method.startswith("twins"):
        assert cfg.eval.select == "last", "the official TWINS code exports the final epoch"


# The official runs' effective rates at batch 64: the official YAMLs' BASE_LR / 256 * 64 (stage lp from
# configs/linear/<data>_ranli.yaml, stage ft from configs/<peft>/<data>_roli.yaml).
ROLI_EFFECTIVE_LR = {
    "cifar10": {"lp": 0.0125, "full": 2.5e-5, "bias": 1.25e-3, "lora": 2.5e-4, "adapter": 1.25e-2},
    "cifar100": {"lp": 0.025, "full": 2.5e-5, "bias": 1.25e-3, "lora": 2.5e-4, "adapter": 1.25e-2},
    "caltech256": {"lp": 0.125, "full": 2.5e-5, "bias": 2.5e-6, "lora": 2.5e-5, "adapter": 1.25e-4},
}
ROLI_PRESETS = sorted(p for p in CONFIGS if p.parent.name == "paper" and p.stem.startswith("roli_"))


@pytest.mark.parametrize("path", ROLI_PRESETS, ids=lambda p: p.stem)
def test_roli_preset_trains_at_the_official_effective_lr(path):
    """Both stages' optimizers, built from the stage configs the engine trains with, get the official rates."""
    _, peft, data = path.stem.split("_")
    cfg = load_config(path)
    assert cfg.data.batch_size == 64 and cfg.optim.lr_scale_batch == 256
    stages = create_method(cfg.method, PGD(), **cfg.method_args).stages()
    assert [s.name for s in stages] == ["lp", "ft"]
    model = nn.Linear(4, 2)
    for stage in stages:
        optimizer = build_optimizer(model, model.named_parameters(), _stage_config(cfg, stage).optim)
        expected = ROLI_EFFECTIVE_LR[data]["lp" if stage.name == "lp" else peft]
        assert all(g["lr"] == pytest.approx(expected, rel=1e-12) for g in optimizer.param_groups), stage.name


@pytest.mark.parametrize("path", ROLI_PRESETS, ids=lambda p: p.stem)
def test_roli_preset_modes_are_the_official_ones(path):
    """Stochastic depth only where the encoder trains in train mode (full); the official head init everywhere."""
    cfg = load_config(path)
    assert ("drop_path_rate" in cfg.model.options) == (cfg.method_args["peft"] == "full")
    assert cfg.method_args["head_init"] == "official" and "lora_dropout" not in cfg.method_args
