"""Checkpoint reading, unwrapping, strict loading with named errors, and saving."""

import json
import os

import numpy as np
import pytest
import torch

from robustft.errors import UserError
from robustft.models import (
    NORMALIZATIONS,
    create_model,
    load_checkpoint,
    load_state_dict_into,
    read_state_dict,
    save_state_dict,
    set_normalization,
    unwrap_state_dict,
)
from support import Payload


def logits_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode logits without autograd."""
    with torch.no_grad():
        return model.eval()(x)


def test_reference_checkpoint_loads_strictly(reference_checkpoint):
    model = create_model("cifar_resnet20")
    state = read_state_dict(reference_checkpoint)
    card = json.loads(reference_checkpoint.with_suffix(".json").read_text())
    assert {k: list(v.shape) for k, v in state.items()} == card["state_dict_keys"]
    assert load_state_dict_into(model, state) == ([], [])
    assert torch.equal(model.normalize.mean.flatten(), torch.tensor(NORMALIZATIONS["cifar10"][0]))
    # The model really carries the checkpoint: its first conv is the stored one, and torch's strict load agrees.
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    model.load_state_dict(torch.load(reference_checkpoint, weights_only=True), strict=True)


def test_load_model_reads_the_reference_checkpoint(reference_checkpoint):
    model = load_checkpoint("cifar_resnet20", reference_checkpoint)
    assert model.fc.out_features == 10
    assert torch.equal(model.normalize.std.flatten(), torch.tensor(NORMALIZATIONS["cifar10"][1]))
    assert torch.isfinite(logits_of(model, torch.rand(2, 3, 32, 32))).all()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_save_and_read_round_trip_gives_identical_logits(resnet50_setup, tmp_path, suffix):
    model, x, logits = resnet50_setup
    path = save_state_dict(model, tmp_path / f"net{suffix}")
    assert os.listdir(tmp_path) == [path.name]  # written atomically: no temporary file left behind
    state = read_state_dict(path)
    assert state.keys() == model.state_dict().keys()
    assert torch.equal(logits_of(load_checkpoint("resnet50", path), x), logits)


def test_dataparallel_wrapped_checkpoint_loads(resnet50_setup, tmp_path):
    model, x, logits = resnet50_setup
    wrapped = {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 90, "best_acc": 0.5}
    torch.save(wrapped, tmp_path / "ddp.pth")
    assert torch.equal(logits_of(load_checkpoint("resnet50", tmp_path / "ddp.pth"), x), logits)


def test_madrylab_robustness_checkpoint_loads(resnet50_setup, tmp_path):
    """``robustness`` AttackerModel: network twice (model / attacker.model) and a [3,1,1] normalizer."""
    model, x, logits = resnet50_setup
    network = {k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}
    mean, std = model.normalize.mean.reshape(3, 1, 1), model.normalize.std.reshape(3, 1, 1)
    state = {
        **{f"module.model.{k}": v for k, v in network.items()},
        **{f"module.attacker.model.{k}": v for k, v in network.items()},
        "module.normalizer.new_mean": mean, "module.normalizer.new_std": std,
        "module.attacker.normalize.new_mean": mean, "module.attacker.normalize.new_std": std,
    }
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 90}, tmp_path / "madry.pt")
    loaded = load_checkpoint("resnet50", tmp_path / "madry.pt")  # arch default is imagenet; the checkpoint says cifar10
    assert torch.equal(loaded.normalize.mean, model.normalize.mean)
    assert torch.equal(logits_of(loaded, x), logits)


def test_real_model_prefix_is_kept_when_not_shared_by_all_keys():
    """Only a prefix shared by every key is a wrapper; a submodule called ``model`` beside others stays."""
    state = {"model.weight": torch.zeros(1), "head.weight": torch.zeros(1)}
    assert unwrap_state_dict({"net": state}).keys() == state.keys()
    assert unwrap_state_dict({"module.model.a": torch.zeros(1), "module.model.b": torch.zeros(1)}).keys() == {"a", "b"}


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": create_model("cifar_resnet20").state_dict(), "extra": Payload(marker)}, path)

    with pytest.raises(UserError, match=r"refusing to load .*arbitrary code execution.*re-save it") as err:
        read_state_dict(path)
    assert "system" in str(err.value)
    assert not marker.exists()
    # Control: the payload is live, so the assertion above is meaningful.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_pickled_module_is_refused(tmp_path):
    torch.save(create_model("cifar_resnet20"), tmp_path / "whole_model.pt")
    with pytest.raises(UserError, match="refusing to load"):
        read_state_dict(tmp_path / "whole_model.pt")


def test_numpy_scalars_in_checkpoint_are_allowed(tmp_path):
    state = create_model("cifar_resnet20").state_dict()
    torch.save({"model_state_dict": state, "epoch": np.int64(7), "best_acc": np.float64(0.5)}, tmp_path / "np.pt")
    assert read_state_dict(tmp_path / "np.pt").keys() == state.keys()


def test_missing_and_unreadable_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(UserError, match=r"junk\.pt is not a (readable )?PyTorch checkpoint"):
        read_state_dict(tmp_path / "junk.pt")
    (tmp_path / "junk.safetensors").write_text("not a checkpoint")
    with pytest.raises(UserError, match=r"junk\.safetensors is not a readable safetensors file"):
        read_state_dict(tmp_path / "junk.safetensors")
    torch.save({"optimizer": {"lr": torch.tensor(0.1)}, "epoch": 3}, tmp_path / "opt_only.pt")
    with pytest.raises(UserError, match="no state dict found"):
        read_state_dict(tmp_path / "opt_only.pt")


def test_missing_unexpected_and_misshapen_keys_are_named():
    state = create_model("cifar_resnet20").state_dict()
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(3)
    state["layer2.0.conv1.weight"] = torch.zeros(32, 16, 5, 5)
    with pytest.raises(UserError) as err:
        load_state_dict_into(create_model("cifar_resnet20"), state)
    message = str(err.value)
    assert "missing keys: layer1.0.conv1.weight" in message
    assert "unexpected keys: extra.weight" in message
    assert "layer2.0.conv1.weight (32, 16, 5, 5) vs (32, 16, 3, 3)" in message


def test_long_key_lists_are_truncated():
    state = {k: v for k, v in create_model("cifar_resnet20").state_dict().items() if not k.startswith("layer")}
    with pytest.raises(UserError, match=r"missing keys: layer1\.0\.bn1\.bias, .*\(\d+ more\)"):
        load_state_dict_into(create_model("cifar_resnet20"), state)


def test_non_strict_load_reports_but_tolerates_missing_keys():
    state = create_model("cifar_resnet20").state_dict()
    del state["fc.bias"]
    result = load_state_dict_into(create_model("cifar_resnet20"), {**state, "aux.w": torch.zeros(1)}, strict=False)
    assert result == (["fc.bias"], ["aux.w"])


@pytest.mark.parametrize("name, head", [("cifar_resnet20", "fc"), ("cifar_resnet18", "linear")])
def test_class_count_mismatch_message(name, head):
    state = create_model(name, num_classes=10).state_dict()
    with pytest.raises(UserError, match=rf"class-count mismatch: the checkpoint's classifier `{head}` has 10 outputs "
                                        r"but the model/data has 100 classes.*data with 10 classes.*fine-tune"):
        load_state_dict_into(create_model(name, num_classes=100), state)


def test_skip_classifier_loads_the_backbone_only():
    source = create_model("cifar_resnet20", num_classes=10)
    target = create_model("cifar_resnet20", num_classes=100)
    head_before = target.fc.weight.clone()
    load_state_dict_into(target, source.state_dict(), skip_classifier=True)
    assert torch.equal(target.layer3[2].conv2.weight, source.layer3[2].conv2.weight)
    assert torch.equal(target.fc.weight, head_before)


def test_load_model_infers_class_count_and_normalization(tmp_path):
    source = set_normalization(create_model("cifar_resnet20", num_classes=100), "cifar100")
    save_state_dict(source, tmp_path / "c100.pt")
    model = load_checkpoint("cifar_resnet20", tmp_path / "c100.pt")
    assert model.fc.out_features == 100
    assert torch.equal(model.normalize.mean, source.normalize.mean)
    explicit = load_checkpoint("cifar_resnet20", tmp_path / "c100.pt", normalization="none")
    assert torch.equal(explicit.normalize.std, torch.ones(1, 3, 1, 1))
    with pytest.raises(UserError, match="class-count mismatch"):
        load_checkpoint("cifar_resnet20", tmp_path / "c100.pt", num_classes=10)


def test_checkpoint_without_normalization_keeps_the_configured_one():
    network = {k: v for k, v in create_model("cifar_resnet20").state_dict().items() if not k.startswith("normalize.")}
    model = create_model("cifar_resnet20", normalization="cifar10")
    assert load_state_dict_into(model, network) == ([], [])
    assert torch.equal(model.normalize.mean.flatten(), torch.tensor(NORMALIZATIONS["cifar10"][0]))


@pytest.mark.parametrize("keys,normalization,source,mean", [
    (True, None, "checkpoint", NORMALIZATIONS["cifar100"][0]),
    (True, "imagenet", "given", NORMALIZATIONS["imagenet"][0]),
    (False, "cifar10", "given", NORMALIZATIONS["cifar10"][0]),
    (False, None, "assumed", NORMALIZATIONS["imagenet"][0]),  # the resnet18 default
])
def test_load_model_records_where_its_normalization_comes_from(tmp_path, capsys, keys, normalization, source, mean):
    state = set_normalization(create_model("resnet18", num_classes=3), "cifar100").state_dict()
    path = tmp_path / "m.pt"
    torch.save({k: v for k, v in state.items() if keys or not k.startswith("normalize.")}, path)
    model = load_checkpoint("resnet18", path, normalization=normalization)
    assert model.pretrained_cfg.normalization_source == source
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor(mean))
    warned = capsys.readouterr().err.splitlines()
    assert warned == ([f"robustft: warning: {path} carries no input normalization (no normalize/normalizer mean and "
                       f"std) and none was given: assuming the resnet18 default, imagenet (mean 0.485,0.456,0.406, "
                       f"std 0.229,0.224,0.225); if its weights were trained on other statistics, predictions are "
                       f"wrong: pass --normalization (model.normalization) none|cifar10|cifar100|imagenet or "
                       f"m1,m2,m3/s1,s2,s3"] if source == "assumed" else [])


def test_trades_unused_sub_block1_is_dropped():
    """TRADES checkpoints carry weights of a ``sub_block1`` that forward never uses."""
    source = create_model("wide_resnet34_10", depth=10, widen_factor=1)
    state = source.state_dict()
    state.update({f"sub_block1.{k.removeprefix('block1.')}": v for k, v in state.items() if k.startswith("block1.")})
    model = create_model("wide_resnet34_10", depth=10, widen_factor=1)
    assert load_state_dict_into(model, state) == ([], [])
    assert not any(k.startswith("sub_block1.") for k in model.state_dict())
