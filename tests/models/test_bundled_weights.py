"""The reference robust model ships with the package and loads by name, byte-identical to CI's offline copy."""

import hashlib
import json

import pytest
import torch

from robustft.models import load_checkpoint
from robustft.models.hub import KNOWN_WEIGHTS, fetch_weights

NAME = "cifar_resnet20.at_linf8_cifar10"
SHA256 = {"cifar10_resnet20_linf_at.pt": "23a0792f369c037c553a7a1220a6ce658a893d6e814d0552507f0e1716905ab3",
          "cifar10_resnet20_linf_at.json": "3c31cfbe69b3846fa4089a0feaf73aa85d46bb56c066141bb55ce680f53b00ba"}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("file", sorted(SHA256))
def test_bundled_files_have_their_checksums(file):
    path = fetch_weights(NAME).with_name(file)
    assert sha256(path) == SHA256[file]


@pytest.mark.parametrize("file", sorted(SHA256))
def test_bundled_files_equal_the_offline_copies(shared_dir, file):
    assert sha256(shared_dir / "models" / file) == SHA256[file]


def test_the_name_loads_the_card_s_model(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUSTFT_CACHE", str(tmp_path / "cache"))  # nothing may be downloaded or cached
    model = load_checkpoint(NAME)
    path = fetch_weights(NAME)
    card = json.loads(path.with_suffix(".json").read_text())
    state = torch.load(path, weights_only=True)
    assert set(model.state_dict()) == set(card["state_dict_keys"])
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.pretrained_cfg.tag == "at_linf8_cifar10" and KNOWN_WEIGHTS[NAME].num_classes == len(card["classes"])
    assert not (tmp_path / "cache").exists()
