"""A run on one's own .npz file: other key names, a class subset, a test split carved from the one labelled file and
an image size per run, all stated in config.yaml, results.json and the card; evaluate of the export follows the
card's image size and classes unless told otherwise."""

import json

import numpy as np
import pytest
import torch
import yaml

from robustft.cli import main
from robustft.data import stratified_split
from support import error_line, finetune_args

LABELS = np.arange(200) % 5
KEYS = ("--set", "data.x_key=images", "--set", "data.y_key=labels")


@pytest.fixture
def one_file(tmp_path):
    """200 random 32x32 images of 5 classes in one file named after no split, with keys of its own."""
    path = tmp_path / "mine.npz"
    np.savez(path, images=np.random.default_rng(0).integers(0, 256, (200, 32, 32, 3), dtype=np.uint8),
             labels=LABELS, ids=np.arange(200))
    return path


def test_a_run_on_one_file_states_its_subset_carve_and_image_size(one_file, tiny_task, tmp_path, capsys):
    _, ckpt = tiny_task
    assert main(finetune_args(one_file, ckpt, tmp_path, "r", "--epochs", "1", *KEYS, "--set", "data.classes=[3, 0, 1]",
                              "--set", "data.test_fraction=0.25", "--set", "data.image_size=16")) == 0
    run = tmp_path / "r"
    kept = np.isin(LABELS, [3, 0, 1])
    relabelled = torch.from_numpy(np.select([LABELS[kept] == 3, LABELS[kept] == 0], [0, 1], 2))
    rest, test = stratified_split(relabelled, 0.25, 0)
    train, val = stratified_split(relabelled[rest], 0.1, 0)
    assert f"data: {len(train)} train / {len(val)} val images of 16x16 pixels (data.image_size), 3 classes" \
           f" (data.classes: 3, 0, 1); test split carved from the training data" in capsys.readouterr().out

    config = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert config["test_fraction"] == 0.25 and config["classes"] == [3, 0, 1] and config["x_key"] == "images"
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["n"] == len(test) == 30
    assert results["data"]["image_size"] == [16, 16] and results["data"]["classes"] == [3, 0, 1]
    assert results["data"]["test_split"].startswith("carved from the training data: class-stratified "
                                                    "data.test_fraction=0.25 drawn with data.split_seed=0")
    card = json.loads((run / "model.json").read_text())
    assert card["classes"] == ["3", "0", "1"] and card["num_classes"] == 3 and card["data"] == results["data"]
    assert not (run / "tensorboard").exists(), "no tracker by default (train.report_to: [])"

    # evaluate on the same 32 px file: the card's 16 px and classes apply, and the carve is the run's own test split
    evaluate = ["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(run / "model.pt"), "--data", str(one_file),
                "--x-key", "images", "--y-key", "labels", "--test-fraction", "0.25", "--steps", "1"]
    assert main([*evaluate, "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "image size 16x16: the size the export was trained at, from its card" in out
    assert "classes 3, 0, 1: the export's class subset, from its card" in out
    record = json.loads((tmp_path / "e.json").read_text())
    assert record["image_size"] == [16, 16] and record["n"] == len(test)
    assert record["clean_acc"] == results["test"]["clean_acc"]
    assert main([*evaluate, "--image-size", "32", "--json", str(tmp_path / "e32.json")]) == 0
    assert json.loads((tmp_path / "e32.json").read_text())["image_size"] == [32, 32]


@pytest.mark.parametrize("extra,match", [
    (KEYS, "carve one from the training data with data.test_fraction"),  # one file, no carve: refused up front
    ((*KEYS, "--set", "data.test_fraction=0.2", "--set", "data.classes=[9]"), "no class index 9"),
    (("--set", "data.x_key=pixels", "--set", "data.test_fraction=0.2"), "has no array 'pixels'"),
    (("--set", "data.test_fraction=0.2"), "2 arrays that could be the labels"),  # labels and ids: ambiguous
])
def test_own_data_mistakes_stop_the_run_before_it_writes(one_file, tiny_task, tmp_path, capsys, extra, match):
    _, ckpt = tiny_task
    assert main(finetune_args(one_file, ckpt, tmp_path, "r", "--epochs", "1", *extra)) == 2
    assert match in error_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_an_export_trained_at_32_px_is_evaluated_at_32_px_on_64_px_data(tiny_task, tmp_path, capsys):
    data, ckpt = tiny_task
    assert main(finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1")) == 0  # native 32 px, no data.image_size
    assert json.loads((tmp_path / "r" / "model.json").read_text())["data"]["image_size"] == [32, 32]
    big = tmp_path / "big"
    big.mkdir()
    with np.load(data / "test.npz") as test:  # the same test images at 64 px (nearest: each pixel 2x2)
        np.savez(big / "test.npz", x=test["x"].repeat(2, axis=1).repeat(2, axis=2), y=test["y"])
    evaluate = ["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(tmp_path / "r" / "model.pt"),
                "--steps", "1"]
    capsys.readouterr()
    assert main([*evaluate, "--data", str(big), "--json", str(tmp_path / "e.json")]) == 0
    assert "data: 48 test images of 32x32 pixels" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["image_size"] == [32, 32]
    assert main([*evaluate, "--data", str(big), "--image-size", "64", "--json", str(tmp_path / "e64.json")]) == 0
    assert json.loads((tmp_path / "e64.json").read_text())["image_size"] == [64, 64]
