"""RobustBench CIFAR model-zoo layouts load with the logits of the zoo's own architecture, or are refused by name.

``ZooPreActResNet18`` below is written for this test from RobustBench's description of its models
(``model_zoo/architectures/resnet.py`` and ``model_zoo/cifar10.py`` / ``cifar100.py`` at RobustBench/robustbench
78fcc9e): ``PreActResNet(block, [2, 2, 2, 2], bn_before_fc)``, whose ``PreActBlock`` feeds the projection shortcut
the raw block input and ``PreActBlockV2`` its pre-activation, and whose CIFAR model classes normalize with
``mu`` / ``sigma`` buffers. It shares no code with robustft's models.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustft.cli import main
from robustft.errors import UserError
from robustft.models import NORMALIZATIONS, load_checkpoint
from support import error_line

CIFAR10_STATS = NORMALIZATIONS["cifar10"]


class ZooBlock(nn.Module):
    """Pre-activation basic block; ``raw`` picks what its 1x1 projection sees (x, or relu(bn1(x)))."""

    def __init__(self, cin: int, cout: int, stride: int, raw: bool) -> None:
        super().__init__()
        self.raw = raw
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        a = F.relu(self.bn1(x))
        skip = self.shortcut(x if self.raw else a) if hasattr(self, "shortcut") else x
        return self.conv2(F.relu(self.bn2(self.conv1(a)))) + skip


class ZooPreActResNet18(nn.Module):
    """RobustBench's PreActResNet-18, with ``mu`` / ``sigma`` buffers when ``stats`` are given."""

    def __init__(self, raw: bool, bn_before_fc: bool, num_classes: int = 10, stats: tuple | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        cin = 64
        for i, cout in enumerate((64, 128, 256, 512)):
            self.add_module(f"layer{i + 1}", nn.Sequential(ZooBlock(cin, cout, 1 if i == 0 else 2, raw),
                                                           ZooBlock(cout, cout, 1, raw)))
            cin = cout
        if bn_before_fc:
            self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)
        if stats is not None:
            self.register_buffer("mu", torch.tensor(stats[0]).view(1, 3, 1, 1))
            self.register_buffer("sigma", torch.tensor(stats[1]).view(1, 3, 1, 1))
        with torch.no_grad():  # trained-looking BN statistics, so that every layer matters
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
                    m.running_mean.uniform_(-0.3, 0.3)
                    m.running_var.uniform_(0.5, 2.0)

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "mu"):
            x = (x - self.mu) / self.sigma
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        if hasattr(self, "bn"):
            out = F.relu(self.bn(out))
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


def logits(model: nn.Module, x: Tensor) -> Tensor:
    """Eval-mode logits without autograd."""
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def images() -> Tensor:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# (zoo entry, raw projection input, bn_before_fc, classes, mu/sigma, how the file nests the state dict)
LAYOUTS = {
    "Wong2020Fast": (True, False, 10, CIFAR10_STATS, "plain"),
    "Rice2020Overfitting_L2": (False, True, 10, CIFAR10_STATS, "plain"),
    "cifar100_Rice2020Overfitting": (True, True, 100, NORMALIZATIONS["cifar100"], "state_dict_module"),
    "Andriushchenko2020Understanding": (True, False, 10, None, "last_best"),
}


def _save(model: nn.Module, nesting: str, path: Path) -> None:
    """Save ``model``'s weights at ``path`` nested as the zoo file does."""
    state = model.state_dict()
    if nesting == "plain":
        torch.save(state, path)
    elif nesting == "state_dict_module":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 200}, path)
    else:  # two snapshots of the run; RobustBench evaluates "last", which is `model`
        torch.manual_seed(1)
        best = ZooPreActResNet18(raw=True, bn_before_fc=False)
        torch.save({"best": best.state_dict(), "last": state}, path)


@pytest.mark.parametrize("name", LAYOUTS)
def test_zoo_layout_loads_with_the_zoo_logits(name, tmp_path, images, capsys):
    raw, bn, classes, stats, nesting = LAYOUTS[name]
    torch.manual_seed(0)
    zoo = ZooPreActResNet18(raw, bn, classes, stats)
    _save(zoo, nesting, tmp_path / f"{name}.pt")

    model = load_checkpoint("preact_resnet18", tmp_path / f"{name}.pt", projection_input="raw" if raw else "activated",
                       final_bn=bn)
    torch.testing.assert_close(logits(model, images), logits(zoo, images), rtol=0, atol=1e-5)
    assert model.linear.out_features == classes
    if stats is not None:  # the zoo's in-model normalization is now robustft's
        assert torch.equal(model.normalize.mean.flatten(), torch.tensor(stats[0]))
        assert torch.equal(model.normalize.std.flatten(), torch.tensor(stats[1]))
    if nesting == "last_best":
        assert "loading 'last', as RobustBench does" in capsys.readouterr().err


def test_the_other_projection_variant_computes_different_logits(tmp_path, images):
    """Why the keys are not enough: the same file in the other variant gives other logits."""
    torch.manual_seed(0)
    zoo = ZooPreActResNet18(raw=True, bn_before_fc=False, stats=CIFAR10_STATS)
    torch.save(zoo.state_dict(), tmp_path / "wong.pt")
    wrong = load_checkpoint("preact_resnet18", tmp_path / "wong.pt", projection_input="activated", final_bn=False)
    assert (logits(wrong, images) - logits(zoo, images)).abs().max() > 1e-2


@pytest.mark.parametrize("bn", [False, True], ids=["no_final_bn", "final_bn"])
def test_checkpoint_that_fits_both_variants_is_refused_naming_the_option(tmp_path, bn):
    torch.manual_seed(0)
    torch.save(ZooPreActResNet18(raw=True, bn_before_fc=bn).state_dict(), tmp_path / "zoo.pt")
    with pytest.raises(UserError, match=r"fit two variants .*projection_input=raw .*projection_input=activated") as e:
        load_checkpoint("preact_resnet18", tmp_path / "zoo.pt")
    assert ("final_bn=false" in str(e.value)) == (not bn)  # the default final_bn=True fits only a file with `bn`


def test_final_bn_mismatch_is_refused_naming_the_option(tmp_path):
    torch.manual_seed(0)
    torch.save(ZooPreActResNet18(raw=False, bn_before_fc=False).state_dict(), tmp_path / "zoo.pt")
    with pytest.raises(UserError, match=r"has no final `bn` before pooling: set the model option final_bn=false"):
        load_checkpoint("preact_resnet18", tmp_path / "zoo.pt", projection_input="activated")


def test_evaluate_refuses_the_ambiguous_snapshot_file_in_one_line(tmp_path, npz_data, capsys):
    torch.manual_seed(0)
    _save(ZooPreActResNet18(raw=True, bn_before_fc=False), "last_best", tmp_path / "andriushchenko.pt")
    rc = main(["evaluate", "--arch", "preact_resnet18", "--checkpoint", str(tmp_path / "andriushchenko.pt"),
               "--data", str(npz_data), "--steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "robustft: warning: " in err and "loading 'last'" in err
    line = error_line(err)
    assert "projection_input=raw" in line and "final_bn=false" in line and "model.options" in line


def test_fresh_model_and_bad_option():
    assert load_checkpoint("preact_resnet18").projection_input is None  # a model to train: robustft's (activated) block
    with pytest.raises(UserError, match="option projection_input must be one of activated, raw"):
        load_checkpoint("preact_resnet18", projection_input="x")
