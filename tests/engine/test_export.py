"""`robustft export`: a finished run's model as a plain state dict (no normalize.* keys) that code written without
robustft loads strictly, with its normalization stated in a card beside it."""

import json
import shutil

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from robustft.cli import main
from robustft.card import load_exported_model
from support import error_line, finetune_args


class PlainBlock(nn.Module):
    """A torchvision-style basic block, written here without robustft."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        same = stride == 1 and cin == cout
        self.downsample = nn.Sequential() if same else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                                     nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.downsample(x))


class PlainResNet20(nn.Module):
    """He et al.'s CIFAR ResNet-20 with torchvision names; takes inputs that are already normalized."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            blocks = [PlainBlock(cin if j == 0 else cout, cout, 2 if i and j == 0 else 1) for j in range(3)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.fc(self.layer3(self.layer2(self.layer1(x))).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def run_dir(tiny_task, tmp_path_factory):
    """A finished one-epoch run trained with CIFAR-10 statistics (so normalizing outside is not the identity)."""
    data, source = tiny_task
    out = tmp_path_factory.mktemp("export")
    assert main(finetune_args(data, source, out, "r", "--epochs", "1", "--set", "model.normalization=cifar10")) == 0
    return out / "r"


@pytest.mark.parametrize("name", ["model_plain.safetensors", "model_plain.pt"])
def test_a_plain_model_loads_the_plain_export_strictly_and_gives_the_same_logits(run_dir, tmp_path, capsys, name):
    out = tmp_path / name
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert "mean 0.4914,0.4822,0.4465" in capsys.readouterr().out
    card = json.loads(out.with_suffix(".json").read_text())
    mean, std = (torch.tensor(card["normalize"][k]).reshape(1, 3, 1, 1) for k in ("mean", "std"))
    assert card["normalize"]["source"] == "given" and card["num_classes"] == 4
    torch.testing.assert_close(mean.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]))

    state = (safetensors.torch.load_file(out) if out.suffix == ".safetensors"
             else torch.load(out, map_location="cpu", weights_only=True))
    assert not [k for k in state if k.startswith("normalize.")]
    assert {k: list(v.shape) for k, v in state.items()} == card["state_dict_keys"]
    plain = PlainResNet20(width=4, num_classes=4)
    plain.load_state_dict(state, strict=True)

    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = load_exported_model("cifar_resnet20", run_dir / "model.pt").eval()(x)
        torch.testing.assert_close(plain.eval()((x - mean) / std), expected)
        # robustft reads the plain export back with its card's normalization, silently and exactly
        torch.testing.assert_close(load_exported_model("cifar_resnet20", out).eval()(x), expected)
    assert capsys.readouterr().err == ""


def test_evaluate_reads_a_plain_export_with_its_cards_normalization(run_dir, tiny_task, tmp_path, capsys):
    data, _ = tiny_task
    out = tmp_path / "plain.safetensors"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    results = []
    for checkpoint in (run_dir / "model.pt", out):
        assert main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(checkpoint), "--data", str(data),
                     "--steps", "2", "--json", str(tmp_path / "r.json")]) == 0
        results.append(json.loads((tmp_path / "r.json").read_text()))
    assert "robustft: warning" not in capsys.readouterr().err
    assert [(r["clean_acc"], r["robust_acc"]) for r in results[1:]] == [(results[0]["clean_acc"],
                                                                         results[0]["robust_acc"])]


def _with_extra_key(run_dir, tmp_path):
    """A copy of the run's export (and card) holding a key that no plain cifar_resnet20 has (as adapters add)."""
    state = torch.load(run_dir / "model.pt", weights_only=True)
    state["layer1.0.adapter.down.weight"] = torch.zeros(1, 16, 1, 1)
    torch.save(state, tmp_path / "m.pt")
    shutil.copy(run_dir / "model.json", tmp_path / "m.json")
    return tmp_path / "m.pt"


@pytest.mark.parametrize("source,out,match", [
    (None, "plain.onnx", "name a .safetensors, .pt or .pth file"),
    (None, "{run}/model.safetensors", "would overwrite the card"),
    ("{tmp}/nowhere", "plain.pt", "neither a checkpoint file nor a run directory"),
    ("{tmp}/bare.pt", "plain.pt", "has no robustft card beside it"),
    ("extra", "plain.pt", "not have the plain cifar_resnet20 layout (key layer1.0.adapter.down.weight; 1 differing"),
])
def test_what_cannot_be_exported_is_one_line_and_writes_nothing(run_dir, tmp_path, capsys, source, out, match):
    torch.save({"w": torch.zeros(1)}, tmp_path / "bare.pt")
    given = (_with_extra_key(run_dir, tmp_path) if source == "extra"
             else (source or str(run_dir)).format(tmp=tmp_path, run=run_dir))
    target = out.format(run=run_dir) if out.startswith("{") else str(tmp_path / out)
    before = sorted(p.name for p in run_dir.iterdir())
    assert main(["export", str(given), "--out", target]) == 2
    assert match in error_line(capsys.readouterr().err)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("plain")]
    assert sorted(p.name for p in run_dir.iterdir()) == before
