"""A run on an image folder of mixed aspect ratios with the papers' view: images stored at their aspect ratio
(data.storage_size), trained on random-resized crops and evaluated on centre crops of data.image_size."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from robustft.cli import main
from support import error_line, finetune_args

SHAPES = [(36, 48), (40, 40), (48, 36), (36, 60)]  # height, width


@pytest.fixture
def mixed_folder(tmp_path):
    """An image folder of 4 tinted-noise classes (as tiny_task's) in four aspect ratios: 96 train, 16 test."""
    rng = np.random.default_rng(0)
    root = tmp_path / "mixed"
    for split, n in (("train", 96), ("test", 16)):
        for i in range(n):
            label = i % 4
            h, w = SHAPES[(i // 4) % len(SHAPES)]
            x = rng.integers(0, 150, (h, w, 3)).astype(np.uint8)
            if label < 3:
                x[:, :, label] += 100
            (root / split / f"c{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(x).save(root / split / f"c{label}" / f"{i:03d}.png")
    return root


def test_a_run_trains_on_random_resized_crops_of_images_kept_at_their_aspect_ratio(mixed_folder, tiny_task, tmp_path,
                                                                                     capsys):
    _, ckpt = tiny_task
    view = ("--set", "data.storage_size=36", "--set", "data.image_size=32", "--set", "data.augment=random_resized_crop")
    assert main(finetune_args(mixed_folder, ckpt, tmp_path, "r", "--epochs", "2", *view)) == 0
    out = capsys.readouterr().out
    assert ("images of 32x32 pixels (data.image_size) cropped from images kept at their aspect ratio, shorter side "
            "36 (data.storage_size), 4 classes") in out
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["data"]["image_size"] == [32, 32] and results["test"]["n"] == 16
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["data"]["crop_scale"] == [0.08, 1.0]


@pytest.mark.parametrize("extra,match", [
    (("--set", "data.augment=random_crop"), "set data.storage_size"),
    (("--set", "data.storage_size=36", "--set", "data.image_size=32"), "augment=crop_flip pads and crops"),
    (("--set", "data.storage_size=36", "--set", "data.augment=random_crop"), "needs data.image_size"),
    (("--set", "data.crop_scale=[0.5, 2.0]",), "data.crop_scale must be"),
])
def test_view_mistakes_stop_the_run_before_it_writes(mixed_folder, tiny_task, tmp_path, capsys, extra, match):
    _, ckpt = tiny_task
    assert main(finetune_args(mixed_folder, ckpt, tmp_path, "r", "--epochs", "1", *extra)) == 2
    assert match in error_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()
