"""TWINS: the frozen wing keeps the pre-trained statistics, the adaptive wing adapts, export drops the frozen wing."""

import pytest
import torch
from torch import nn

from robustft.attacks import PGD
from robustft.methods import TwoWingBatchNorm2d, create_method
from robustft.methods.twins import frozen_split
from robustft.models import create_model, load_state_dict_into
from support import finetune_args, robustft_cmd, run_ok, tiny_resnet


@pytest.fixture
def source():
    return tiny_resnet(num_classes=5)


def _train(method, model, batch_sizes):
    model = method.prepare(model)
    opt = torch.optim.SGD([p for _, p in method.trainable_parameters(model)], lr=0.05)
    g = torch.Generator().manual_seed(0)
    for b in batch_sizes:
        x, y = torch.rand(b, 3, 32, 32, generator=g), torch.randint(0, 5, (b,), generator=g)
        method.train_mode(model)
        loss, _ = method.loss(model, x, y, g)
        assert torch.isfinite(loss), b
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("name", ["twins", "twins_trades"])
def test_frozen_stats_fixed_affine_trains_adaptive_moves(name, source):
    bns = {n: (m.running_mean.clone(), m.running_var.clone(), m.weight.detach().clone())
           for n, m in source.named_modules() if isinstance(m, nn.BatchNorm2d)}
    method = create_method(name, PGD(steps=2))
    model = _train(method, source, [16, 16, 15, 1, 7])  # odd, last-short and single-sample batches
    layers = {n: m for n, m in model.named_modules() if isinstance(m, TwoWingBatchNorm2d)}
    assert set(layers) == set(bns), "every BN (stem, blocks, downsample) becomes two-winged"
    for n, m in layers.items():
        mean, var, weight = bns[n]
        assert torch.equal(m.frozen_mean, mean) and torch.equal(m.frozen_var, var), f"{n}: frozen stats moved"
        assert not torch.equal(m.frozen_weight, weight), f"{n}: frozen affine must train"
        assert not torch.equal(m.running_mean, mean), f"{n}: adaptive stats must move"


def test_eval_uses_adaptive_wing_and_split_routes_rows(source):
    model = create_method("twins", PGD()).prepare(source).eval()
    layer = model.bn1
    with torch.no_grad():
        layer.frozen_weight.mul_(3.0)  # make the wings differ
        x = torch.rand(6, 3, 32, 32)
        plain = nn.BatchNorm2d(layer.num_features).eval()
        plain.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("frozen_")})
        feats = model.conv1(model.normalize(x))
        assert torch.allclose(layer(feats), plain(feats))
        with frozen_split(model, 2):
            out = layer(feats)
        assert torch.allclose(out[2:], plain(feats[2:]))
        expected = nn.functional.batch_norm(feats[:2], layer.frozen_mean, layer.frozen_var, layer.frozen_weight,
                                            layer.frozen_bias, eps=layer.eps)
        assert torch.allclose(out[:2], expected)
    assert layer.frozen_rows is None


def test_export_is_plain_and_gives_identical_logits(source):
    method = create_method("twins", PGD(steps=1))
    model = _train(method, source, [8, 8]).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    plain = method.finalize(model, None)
    assert not any(isinstance(m, TwoWingBatchNorm2d) for m in plain.modules())
    fresh = create_model("cifar_resnet20", num_classes=5, width=4).eval()
    load_state_dict_into(fresh, plain.state_dict())  # strict: loads into the plain architecture
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)


def test_twins_trades_attack_switch():
    assert create_method("twins_trades", PGD()).attack.loss == "kl"
    assert create_method("twins_trades", PGD(), ce_attack=True).attack.loss == "ce"
    assert create_method("twins", PGD()).attack.loss == "ce"


def test_twins_two_process_ddp(tiny_task, tmp_path):
    data, ckpt = tiny_task
    run_ok(robustft_cmd(*finetune_args(data, ckpt, tmp_path, "tw", "--method", "twins", "--epochs", "1",
                                       "--set", "data.batch_size=30"),
                        launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")))
    exported = torch.load(tmp_path / "tw" / "model.pt", weights_only=True)
    assert not any("frozen" in k for k in exported)
