"""Every shipped YAML preset parses and validates, and names a registered method and architecture."""

from pathlib import Path

import pytest

from robustft.engine import load_config
from robustft.methods import list_methods
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
