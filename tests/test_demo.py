"""The bundled demo: assets ship inside the package and `robustft demo` runs end to end (shortened here)."""

import json

import torch

from robustft.demo import DEMO_METHODS, asset, run_demo
from robustft.models import load_checkpoint


def test_assets_are_bundled_and_the_source_model_is_robust_pretrained():
    card = json.loads(asset("demo_source_resnet20.json").read_text())
    assert card["produced_by"].startswith("robustft pretrain") and card["method"] == "pgd_at"
    model = load_checkpoint(card["arch"], asset("demo_source_resnet20.pt"))
    assert model.get_classifier().out_features == 5
    assert asset("demo_cifar10_dog-truck.zip").stat().st_size < 3_000_000


def test_demo_runs_end_to_end(tmp_path):
    rows = run_demo(tmp_path, overrides=["train.epochs=1", "data.train_n=128", "data.test_n=50",
                                         "eval.val_steps=1", "eval.test_steps=2", "attack.steps=1"],
                    log=lambda s: None)
    assert [r["method"] for r in rows] == list(DEMO_METHODS)
    for name in ("comparison.md", "comparison.png", "training_curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    exported = torch.load(tmp_path / "pgd_at" / "model.pt", weights_only=True)
    assert exported["fc.weight"].shape == (5, 64)
