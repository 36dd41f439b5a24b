"""Hugging Face hub model directories (weights + timm ``config.json``) and timm training checkpoints."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from robustft.cli import main
from robustft.errors import UserError
from robustft.models import create_model, load_checkpoint, read_state_dict
from support import Payload, error_line, run_env

# Preprocessing that is no preset and not the architecture's default, so only config.json can have supplied it.
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _timm_config(num_classes: int, size: int, nested: bool = True) -> dict:
    """A config.json as timm's ``save_config_for_hf`` writes it (``nested=False``: the older flat form)."""
    pretrained = {"input_size": [3, size, size], "interpolation": "bicubic", "crop_pct": 0.9, "mean": list(MEAN),
                  "std": list(STD), "num_classes": num_classes, "first_conv": "conv1", "classifier": "fc"}
    if not nested:
        return {"architecture": "cifar_resnet20", **pretrained}
    return {"architecture": "cifar_resnet20", "num_classes": num_classes, "num_features": 64, "global_pool": "avg",
            "pretrained_cfg": pretrained}


def _hub_dir(path: Path, weights: str, num_classes: int = 7, size: int = 40, nested: bool = True) -> torch.nn.Module:
    """Write a hub model directory at ``path``; returns the network in it, normalizing as config.json says."""
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", num_classes, normalization=(MEAN, STD)).eval()
    network = {k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}  # timm has none
    path.mkdir()
    if weights == "model.safetensors":
        safetensors.torch.save_file(network, path / weights)
    else:
        torch.save(network, path / weights)
    (path / "config.json").write_text(json.dumps(_timm_config(num_classes, size, nested)))
    return model


@pytest.mark.parametrize("weights, nested", [("model.safetensors", True), ("pytorch_model.bin", True),
                                             ("model.safetensors", False)], ids=["safetensors", "bin", "flat_config"])
def test_hub_directory_loads_with_its_config(tmp_path, weights, nested):
    source = _hub_dir(tmp_path / "hub", weights, nested=nested)
    model = load_checkpoint("cifar_resnet20", tmp_path / "hub").eval()
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
    assert model.fc.out_features == 7
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor(MEAN))
    assert model.pretrained_cfg.input_size == (3, 40, 40)


def test_explicit_settings_win_over_the_config(tmp_path):
    _hub_dir(tmp_path / "hub", "model.safetensors")
    model = load_checkpoint("cifar_resnet20", tmp_path / "hub", normalization="cifar10")
    assert torch.allclose(model.normalize.std.flatten(), torch.tensor((0.2471, 0.2435, 0.2616)))
    with pytest.raises(UserError, match="class-count mismatch"):
        load_checkpoint("cifar_resnet20", tmp_path / "hub", num_classes=10)


def test_evaluate_reads_a_hub_directory_at_its_input_size(tmp_path, npz_data, capsys):
    _hub_dir(tmp_path / "hub", "pytorch_model.bin", num_classes=10)
    rc = main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(tmp_path / "hub"), "--data", str(npz_data),
               "--steps", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "image size 40 px, the input size stated in" in out and "test images of 40x40 pixels" in out


def test_directory_without_weights_or_with_a_bad_config_is_one_error_line(tmp_path, npz_data, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(tmp_path / "empty"), "--data",
               str(npz_data)])
    assert rc == 2 and "has none of model.safetensors, pytorch_model.bin" in error_line(capsys.readouterr().err)

    _hub_dir(tmp_path / "hub", "model.safetensors", num_classes=10)
    config = _timm_config(10, 32)
    config["pretrained_cfg"]["mean"] = [0.5, 0.5]
    (tmp_path / "hub" / "config.json").write_text(json.dumps(config))
    rc = main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(tmp_path / "hub"), "--data",
               str(npz_data)])
    assert rc == 2 and "malformed 'mean': [0.5, 0.5] (expected 3 numbers)" in error_line(capsys.readouterr().err)


# ----------------------------------------------------------------------------- timm training checkpoints


def _timm_training_checkpoint(state: dict, args: argparse.Namespace) -> dict:
    """What timm's ``CheckpointSaver`` saves: weights, EMA weights, optimizer state and the argparse arguments."""
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9).state_dict()
    return {"epoch": 3, "arch": "cifar_resnet20", "state_dict": state, "optimizer": optimizer, "version": 2,
            "args": args, "metric": 0.5, "state_dict_ema": ema}


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy_pickle"])
def test_timm_training_checkpoint_with_its_argparse_namespace_loads(tmp_path, npz_data, capsys, zipfile):
    torch.manual_seed(0)
    state = create_model("cifar_resnet20", 10).state_dict()
    args = argparse.Namespace(model="resnet50", lr=0.1, mean=None, input_size=[3, 224, 224], aa="rand-m9")
    torch.save(_timm_training_checkpoint(state, args), tmp_path / "last.pth.tar",
               _use_new_zipfile_serialization=zipfile)
    loaded = read_state_dict(tmp_path / "last.pth.tar")
    assert all(torch.equal(loaded[k], v) for k, v in state.items())  # the trained weights, not the EMA copy
    rc = main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(tmp_path / "last.pth.tar"), "--data",
               str(npz_data), "--steps", "1"])
    assert rc == 0, capsys.readouterr().err


@pytest.mark.parametrize("planted", ["in_namespace", "beside_it"])
def test_only_the_namespace_is_admitted_not_what_it_or_the_file_carries(tmp_path, npz_data, capsys, planted):
    marker = tmp_path / "pwned"
    state = create_model("cifar_resnet20", 10).state_dict()
    args = argparse.Namespace(lr=0.1, hook=Payload(marker)) if planted == "in_namespace" else argparse.Namespace()
    checkpoint = _timm_training_checkpoint(state, args)
    if planted == "beside_it":
        checkpoint["extra"] = Payload(marker)
    torch.save(checkpoint, tmp_path / "evil.pth.tar")
    rc = main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(tmp_path / "evil.pth.tar"), "--data",
               str(npz_data)])
    line = error_line(capsys.readouterr().err)
    assert rc == 2 and "refusing to load" in line and "system" in line
    assert not marker.exists()
    torch.load(tmp_path / "evil.pth.tar", weights_only=False)  # control: the payload is live
    assert marker.exists()


# ----------------------------------------------------------------------------- hf-hub: names (huggingface_hub)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hf_cache(cache: Path, repo: str, weights: str = "model.safetensors", num_classes: int = 10) -> torch.nn.Module:
    """The Hugging Face cache as huggingface_hub lays it out: models--OWNER--REPO/refs/main naming a commit whose
    snapshots/<commit>/ holds the files; returns the network in it."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "snapshots").mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    return _hub_dir(root / "snapshots" / COMMIT, weights, num_classes=num_classes, size=32)


def test_hf_hub_name_loads_from_the_huggingface_cache_offline(tmp_path, npz_data):
    """A child process, so huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE as users set them."""
    _hf_cache(tmp_path / "hf", "someone/robust-r20")
    env = {**run_env(), "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # no network: a request would fail
    proc = subprocess.run([sys.executable, "-m", "robustft.cli", "evaluate", "--arch", "cifar_resnet20", "--checkpoint",
                           "hf-hub:someone/robust-r20", "--data", str(npz_data), "--steps", "1", "--json",
                           str(tmp_path / "r.json")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "image size 32 px, the input size stated in" in proc.stdout
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 20


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    """huggingface_hub pointed at an empty cache in tmp_path, offline."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hf"


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_hf_hub_name_reads_the_cached_snapshot_with_its_config(hf_offline, weights):
    source = _hf_cache(hf_offline, "someone/r20", weights, num_classes=7)
    model = load_checkpoint("cifar_resnet20", "hf-hub:someone/r20").eval()
    assert model.fc.out_features == 7 and torch.allclose(model.normalize.mean.flatten(), torch.tensor(MEAN))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
    assert load_checkpoint("cifar_resnet20", f"hf-hub:someone/r20@{COMMIT}").fc.out_features == 7  # a pinned revision


def test_hf_hub_name_missing_from_the_offline_cache_or_misspelt_is_one_line(hf_offline, npz_data, capsys):
    rc = main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", "hf-hub:someone/absent", "--data",
               str(npz_data)])
    line = error_line(capsys.readouterr().err)
    assert rc == 2 and "someone/absent on " in line and "has none of model.safetensors, pytorch_model.bin" in line
    assert "HF_HUB_OFFLINE is set" in line
    rc = main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", "hf-hub:not a/repo name", "--data",
               str(npz_data)])
    assert rc == 2 and "is not a Hugging Face repo name" in error_line(capsys.readouterr().err)


def test_hf_hub_name_without_huggingface_hub_says_which_extra_to_install(monkeypatch, npz_data, capsys):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed: its import fails
    rc = main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", "hf-hub:someone/r20", "--data", str(npz_data)])
    assert rc == 2 and "pip install 'robustft[hub]'" in error_line(capsys.readouterr().err)
