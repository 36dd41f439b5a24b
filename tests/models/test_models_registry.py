"""Registry lookup, weight tags and the pretrained-weights cache."""

import json
import re
import shutil
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from robustft.cli import main
from robustft.errors import UserError
from robustft.models import KNOWN_WEIGHTS, create_model, list_models, register_model, save_state_dict
from robustft.models.hub import PretrainedWeights


def test_list_models_is_sorted_and_complete():
    names = list_models()
    assert names == sorted(names)
    assert {"cifar_resnet20", "cifar_resnet18", "preact_resnet18", "wide_resnet34_10", "resnet50", "vit"} <= set(names)


def test_unknown_model_lists_names_and_suggests_a_close_match():
    expected = r"unknown model 'resnet5'; did you mean 'resnet50'\? available: .*cifar_resnet20"
    with pytest.raises(UserError, match=expected):
        create_model("resnet5")


def test_registering_a_name_twice_is_refused():
    def resnet18(**kwargs):
        return None

    with pytest.raises(ValueError, match="registered twice"):
        register_model(resnet18)


def test_num_classes_and_options_reach_the_constructor():
    model = create_model("cifar_resnet20", 7, width=8)
    assert model.fc.out_features == 7 and model.fc.in_features == 32


MADRY_HUB = "https://huggingface.co/madrylab/robust-imagenet-models/resolve/main"


def test_madry_tags_point_at_the_files_of_the_public_hub_copy():
    """File names as huggingface.co/madrylab/robust-imagenet-models lists them (its model card, README.md)."""
    assert KNOWN_WEIGHTS["resnet50.madry_linf4_in1k"].url == f"{MADRY_HUB}/resnet50_linf_eps4.0.ckpt"
    assert KNOWN_WEIGHTS["resnet50.madry_l2_3_in1k"].url == f"{MADRY_HUB}/resnet50_l2_eps3.ckpt"


@pytest.mark.parametrize("name,options,match", [
    ("cifar_resnet20", {"width": "4"}, "option width must be int, got '4'"),
    ("cifar_resnet20", {"width": True}, "option width must be int, got True"),
    ("preact_resnet18", {"final_bn": "no way"}, "option final_bn must be bool, got 'no way'"),
    ("swin", {"drop_path_rate": "high"}, "option drop_path_rate must be float, got 'high'"),
    ("cifar_resnet20", {"width": 0.5}, "option width must be int, got 0.5"),
    ("cifar_resnet20", {"width": -2}, r"cannot be built with width=-2 \(RuntimeError: "),
    ("preact_resnet18", {"layers": (1, 1, 1, 1)}, "sets the option 'layers' itself"),
])
def test_option_values_are_checked_before_the_constructor_runs(name, options, match):
    with pytest.raises(UserError, match=match):
        create_model(name, 3, **options)


def test_unknown_tag_lists_known_ones():
    expected = r"unknown weights resnet50\.foo; known for resnet50: resnet50\.madry_linf4_in1k"
    with pytest.raises(UserError, match=expected):
        create_model("resnet50.foo")
    with pytest.raises(UserError, match="no published weights are known for 'cifar_resnet56'"):
        create_model("cifar_resnet56", pretrained=True)


@pytest.fixture
def fake_weights(monkeypatch, tmp_path):
    """A known-weights entry for cifar_resnet20 and an empty cache in tmp_path; returns the cached file's path."""
    monkeypatch.setenv("ROBUSTFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delitem(KNOWN_WEIGHTS, "cifar_resnet20.at_linf8_cifar10")  # the bundled ones: this one comes first
    monkeypatch.setitem(KNOWN_WEIGHTS, "cifar_resnet20.test_c10", PretrainedWeights(
        url="https://example.invalid/weights/r20.pt", num_classes=10, normalization="cifar10", description="test"))
    return tmp_path / "cache" / "cifar_resnet20.test_c10.pt"


def test_tag_without_pretrained_uses_the_weights_settings(fake_weights):
    model = create_model("cifar_resnet20.test_c10")
    assert (model.pretrained_cfg.architecture, model.pretrained_cfg.tag) == ("cifar_resnet20", "test_c10")
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]))
    assert model.pretrained_cfg.normalization_source == "checkpoint", "the published weights' statistics"
    assert not fake_weights.exists()  # nothing is downloaded without pretrained=True


def test_offline_download_says_where_to_put_the_file(fake_weights, monkeypatch):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    url = re.escape("https://example.invalid/weights/r20.pt")
    expected = rf"could not download .*{url}.*place it at {re.escape(str(fake_weights))}"
    with pytest.raises(UserError, match=expected):
        create_model("cifar_resnet20.test_c10", pretrained=True)


def test_pretrained_loads_from_cache_and_replaces_a_differently_sized_head(fake_weights, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", pytest.fail)  # the cached file must be used as is
    torch.manual_seed(0)
    source = create_model("cifar_resnet20", normalization="cifar10").eval()
    save_state_dict(source, fake_weights)
    x = torch.rand(2, 3, 32, 32)

    model = create_model("cifar_resnet20.test_c10", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
    assert model.pretrained_cfg.tag == "test_c10"

    five = create_model("cifar_resnet20", 5, pretrained=True)  # first known tag of the arch
    assert five.fc.out_features == 5
    assert torch.equal(five.layer3[2].conv2.weight, source.layer3[2].conv2.weight)

    plain = create_model("cifar_resnet20.test_c10", pretrained=True, normalization="none")
    assert torch.equal(plain.normalize.std, torch.ones(1, 3, 1, 1))


def _madry_checkpoint(path: Path) -> torch.nn.Module:
    """A ResNet-50 saved in the layout of the hub's MadryLab ``.ckpt`` files; returns the network."""
    torch.manual_seed(0)
    model = create_model("resnet50").eval()
    state = {f"module.model.{k}": v for k, v in model.state_dict().items() if not k.startswith("normalize.")}
    state["module.normalizer.new_mean"] = model.normalize.mean.reshape(3, 1, 1)
    state["module.normalizer.new_std"] = model.normalize.std.reshape(3, 1, 1)
    torch.save({"model": state, "epoch": 90, "schedule": None}, path)
    return model


def test_tagged_arch_evaluates_the_weights_downloaded_to_the_cache(tmp_path, monkeypatch, capsys):
    upstream = tmp_path / "resnet50_linf_eps4.0.ckpt"
    source = _madry_checkpoint(upstream)
    x = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():  # labels = the source's predictions, so clean accuracy 1.0 means these weights ran
        y = source(x.permute(0, 3, 1, 2).float() / 255).argmax(1)
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "test.npz", x=x.numpy(), y=y.numpy())
    (data / "classes.txt").write_text("\n".join(f"c{i}" for i in range(1000)))
    monkeypatch.setenv("ROBUSTFT_CACHE", str(tmp_path / "cache"))
    requested = []

    def download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        requested.append(url)
        shutil.copyfile(upstream, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    command = ["evaluate", "--arch", "resnet50.madry_linf4_in1k", "--data", str(data), "--steps", "1",
               "--no-channels-last", "--json", str(tmp_path / "r.json")]
    assert main(command) == 0, capsys.readouterr().err
    assert requested == [f"{MADRY_HUB}/resnet50_linf_eps4.0.ckpt"]
    assert (tmp_path / "cache" / "resnet50.madry_linf4_in1k.ckpt").is_file()
    assert json.loads((tmp_path / "r.json").read_text())["clean_acc"] == 1.0

    monkeypatch.setattr(torch.hub, "download_url_to_file", pytest.fail)  # the second time the cache serves
    assert main(command) == 0, capsys.readouterr().err
