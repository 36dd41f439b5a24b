"""A run on an image folder of mixed aspect ratios with the papers' view: images stored at their aspect ratio
(data.storage_size), trained on random-resized crops and evaluated on centre crops of data.image_size."""

import json
import subprocess
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from robustft.cli import main
from support import error_line, finetune_args, robustft_cmd, run_env, run_ok

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
    card = json.loads((tmp_path / "r" / "model.json").read_text())
    assert card["data"]["storage_size"] == 36 and card["data"]["image_size"] == [32, 32]
    # evaluate of the export sees the run's test view: centre crops of the images stored at 36 px
    assert main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(tmp_path / "r" / "model.pt"), "--data",
                 str(mixed_folder), "--steps", "2", "--json", str(tmp_path / "e.json")]) == 0
    assert "centre crops of images resized to 36 px on the shorter side" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["clean_acc"] == results["test"]["clean_acc"]


@pytest.mark.parametrize("extra,match", [
    (("--set", "data.augment=random_crop"), "set data.storage_size"),
    (("--set", "data.storage_size=36", "--set", "data.image_size=32"), "augment=crop_flip pads and crops"),
    (("--set", "data.storage_size=36", "--set", "data.augment=random_crop"), "needs data.image_size"),
    (("--set", "data.crop_scale=[0.5, 2.0]",), "data.crop_scale must be"),
    (("--set", "data.storage=disk",), "data.storage=disk stores image folders kept at their aspect ratio"),
])
def test_view_mistakes_stop_the_run_before_it_writes(mixed_folder, tiny_task, tmp_path, capsys, extra, match):
    _, ckpt = tiny_task
    assert main(finetune_args(mixed_folder, ckpt, tmp_path, "r", "--epochs", "1", *extra)) == 2
    assert match in error_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


DISK = ("--set", "data.storage_size=36", "--set", "data.image_size=32", "--set", "data.augment=random_crop",
        "--set", "data.storage=disk")
TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")


def _weights(run_dir):
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


def test_disk_store_runs_match_memory_and_two_gloo_processes_match_one(mixed_folder, tiny_task, tmp_path):
    """Linear probing (see test_ddp.py for why 2 processes then agree with 1 up to summation order)."""
    _, ckpt = tiny_task
    extra = ("--method", "linear_probe", "--epochs", "2", "--set", "optim.lr=0.5", "--set", "train.amp=off", *DISK)
    run_ok(robustft_cmd(*finetune_args(mixed_folder, ckpt, tmp_path, "one", *extra)))
    run_ok(robustft_cmd(*finetune_args(mixed_folder, ckpt, tmp_path, "memory", *extra, "--set",
                                       "data.storage=memory")))
    run_ok(robustft_cmd(*finetune_args(mixed_folder, ckpt, tmp_path, "two", *extra), launcher=TORCHRUN))
    one, memory, two = (_weights(tmp_path / name) for name in ("one", "memory", "two"))
    assert (one["fc.weight"] - torch.load(ckpt, weights_only=True)["fc.weight"]).abs().max() > 1e-3
    for k in one:
        assert torch.equal(one[k], memory[k]), k
        assert torch.allclose(one[k].float(), two[k].float(), rtol=1e-5, atol=1e-6), k


def test_a_killed_disk_store_run_resumes_to_the_uninterrupted_result(mixed_folder, tiny_task, tmp_path):
    _, ckpt = tiny_task
    extra = ("--epochs", "3", "--set", "data.batch_size=16", *DISK)
    run_ok(robustft_cmd(*finetune_args(mixed_folder, ckpt, tmp_path, "straight", *extra)))
    args = finetune_args(mixed_folder, ckpt, tmp_path, "killed", *extra)
    proc = subprocess.Popen(robustft_cmd(*args), env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last, deadline = tmp_path / "killed" / "last.pt", time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()
    proc.kill()
    proc.wait()
    assert torch.load(last, weights_only=True)["epoch"] < 3 and not (tmp_path / "killed" / "results.json").exists()
    run_ok(robustft_cmd(*args, "--resume"))
    a, b = (json.loads((tmp_path / name / "results.json").read_text())["test"] for name in ("straight", "killed"))
    assert a["clean_acc"] == b["clean_acc"] and a["robust_acc"] == b["robust_acc"]
    wa, wb = (torch.load(tmp_path / name / "model.pt", weights_only=True) for name in ("straight", "killed"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights must be bit-identical"
