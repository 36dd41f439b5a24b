"""The notebook API: docs/python.md runs as written; `import robustft` stays light; every verb takes a plain nn.Module
where the method allows it and refuses one in one line where robustft's model structure is needed."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import robustft
from robustft.data import ArrayDataset
from robustft.engine import fit, load_config
from robustft.engine.distributed import DistInfo
from robustft.errors import UserError
from robustft.methods import create_method
from support import run_env, tiny_resnet

ROOT = Path(__file__).resolve().parents[1]
# about a second per run on one core: 64 training images, 1-step attacks, 16 test images
TINY = dict(epochs=1, data={"train_n": 64, "test_n": 16, "batch_size": 32}, attack={"steps": 1},
            eval={"val_steps": 1, "test_steps": 1, "select": "last"}, log=lambda s: None)


class PlainNet(nn.Module):
    """Conv-BN-ReLU-pool-linear written without robustft: no get_classifier, no pretrained_cfg, no normalize."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def python_blocks() -> list[str]:
    """The ```python blocks of docs/python.md, in order."""
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs/python.md").read_text(), flags=re.S)


def test_the_walkthrough_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROBUSTFT_CACHE", str(tmp_path / "cache"))  # decoded demo images stay in the test's directory
    blocks = python_blocks()
    assert len(blocks) >= 4, "the walkthrough lost its blocks"
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/python.md block {i + 1}", "exec"), namespace)
    assert namespace["result"].results["test"]["n"] == 100
    assert json.loads((tmp_path / "runs/python/plain_twins/model.json").read_text())["arch"] == ""
    assert not (tmp_path / "runs/python/plain_probe").exists(), "the refused run wrote nothing"
    assert (tmp_path / "runs/python/report/results.md").read_text().count("\n") == 4  # header, rule, two runs


def test_import_robustft_and_the_cli_parser_load_no_torch_until_a_verb_is_used():
    code = ("import sys, robustft, robustft.cli; robustft.cli.build_parser(); "
            "print('torch' in sys.modules, set(robustft.__all__) <= set(dir(robustft))); "
            "robustft.finetune; print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], env=run_env(), capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["False", "True", "True"]


def test_every_top_level_verb_resolves():
    from robustft import api

    assert set(robustft.__all__) - {"__version__"} == set(api.__all__)
    for name in api.__all__:
        assert getattr(robustft, name) is getattr(api, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        robustft.nope  # noqa: B018


def test_keyword_overrides_are_shortcuts_sections_or_dotted_keys():
    from robustft.engine.config import keyword_overrides

    assert keyword_overrides({"epochs": 2, "data": Path("d.zip"), "optim": {"lr": 0.5}, "train.seed": 3,
                              "method_args": {"lam": 0.4}, "model": {"options": {"width": 4}}}) == {
        "train.epochs": 2, "data.name": "d.zip", "optim.lr": 0.5, "train.seed": 3, "method_args.lam": 0.4,
        "model.options": {"width": 4}}


def test_create_attack_has_defaults_and_reads_fractions():
    pgd = robustft.create_attack("pgd", eps="4/255", step_size="1/255")
    assert (pgd.name, pgd.steps, pgd.eps, pgd.step_size) == ("pgd20", 20, 4 / 255, 1 / 255)
    assert robustft.create_attack("fgsm").eps == 8 / 255


def test_evaluate_takes_a_plain_module_on_its_device(npz_data):
    data = robustft.load_dataset(npz_data, "test")
    result = robustft.evaluate(PlainNet(10), data, ["pgd", robustft.create_attack("fgsm", eps=0.01)], steps=2,
                               progress=False)
    assert result.n == 20 and set(result.robust_acc) == {"pgd2", "fgsm"}
    with pytest.raises(UserError, match="gives 4 logits per image but the data has 10 classes"):
        robustft.evaluate(PlainNet(4), data, progress=False)


@pytest.mark.parametrize("method", ["pgd_at", "trades", "twins", "partial", "rift"])
def test_finetune_trains_a_copy_of_a_plain_module(method, tiny_task, tmp_path):
    data, _ = tiny_task
    plain = PlainNet()
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    options = ({"method_args": {"mrc_n": 16, "mrc_steps": 1, "mrc_attack_steps": 1, "alphas": [1.0]}}
               if method == "rift" else {})
    result = robustft.finetune(plain, data, method=method, out_dir=tmp_path, name="r", **TINY, **options,
                               **{"eval.test_source": True})
    assert all(torch.equal(v, before[k]) for k, v in plain.state_dict().items()), "the caller's module is untouched"
    assert type(result.model) is PlainNet and result.model is not plain
    exported = torch.load(result.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(v, exported[k]) for k, v in result.model.state_dict().items())
    if method != "rift":  # RiFT may export the source itself (α* = 0)
        assert any(not torch.equal(v, before[k]) for k, v in exported.items() if v.is_floating_point())
    assert result.results["test"]["n"] == result.results["test_source"]["test"]["n"] == 16
    card = json.loads((result.run_dir / "model.json").read_text())
    assert (card["arch"], card["normalize"], card["recipe"]["model"]["checkpoint"]) == ("", None, None)
    with pytest.raises(UserError, match="fine-tuned from a plain nn.Module"):
        robustft.load_model("cifar_resnet20", result.run_dir / "model.pt")


@pytest.mark.parametrize("method,overrides,match", [
    ("linear_probe", {}, r"method linear_probe needs robustft's model structure \(it trains the classifier alone, "
                         r"found by get_classifier\(\)\), which a plain PlainNet lacks.*\(partial, pgd_at, rift, "
                         r"standard, trades, twins, twins_trades\)"),
    ("roli", {}, "method roli needs robustft's model structure"),
    ("pgd_at", {"model": {"head": "new"}}, "model.head=new replaces the classifier, which a plain PlainNet does not"),
    ("pgd_at", {"model": {"init_head": "x.pt"}}, "model.init_head replaces the classifier"),
])
def test_finetune_refuses_a_plain_module_where_robustft_structure_is_needed(method, overrides, match, tiny_task,
                                                                            tmp_path):
    data, _ = tiny_task
    with pytest.raises(UserError, match=match):
        robustft.finetune(PlainNet(), data, method=method, out_dir=tmp_path, name="r", **TINY, **overrides)
    assert not (tmp_path / "r").exists()


def test_finetune_refuses_a_plain_head_of_the_wrong_size_and_a_loaded_split(tiny_task, tmp_path):
    data, _ = tiny_task
    with pytest.raises(UserError, match="gives 10 logits per image but .* has 4 classes: give it a 4-output head"):
        robustft.finetune(PlainNet(10), data, method="pgd_at", out_dir=tmp_path, name="r", **TINY)
    with pytest.raises(UserError, match="pass the dataset as load_dataset takes it"):
        robustft.finetune(PlainNet(), robustft.load_dataset(data, "train"), method="pgd_at", **TINY)
    assert not (tmp_path / "r").exists()


def test_finetune_records_a_robustft_models_arch_and_options_so_its_export_rebuilds(tiny_task, tmp_path):
    data, _ = tiny_task
    model = robustft.create_model("cifar_resnet20", num_classes=10, width=4)  # its 10-class head is replaced
    result = robustft.finetune(model, data, method="pgd_at", out_dir=tmp_path, name="r", **TINY)
    recipe = json.loads((result.run_dir / "model.json").read_text())["recipe"]["model"]
    assert (recipe["arch"], recipe["options"], recipe["checkpoint"]) == ("cifar_resnet20", {"width": 4}, None)
    assert model.get_classifier().out_features == 10 and result.model.get_classifier().out_features == 4
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # what `robustft evaluate --arch cifar_resnet20 --checkpoint RUN/model.pt` builds
        assert torch.equal(robustft.load_model("cifar_resnet20", result.run_dir / "model.pt").eval()(x),
                           result.model.eval()(x))


def test_a_method_is_built_without_an_attack_for_its_structure_and_refuses_to_train_without_one(tmp_path):
    method = create_method("roli", peft="adapter")
    assert method.attack is None
    adapted = method.export_architecture(tiny_resnet())
    assert any(".adapter." in k for k in adapted.state_dict())
    split = ArrayDataset(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), ["a"], "t")
    cfg = load_config(None, ["data.name=t", "model.arch=cifar_resnet20", "data.batch_size=2"])
    with pytest.raises(UserError, match="Method was built without an attack, which training needs"):
        fit(create_method("pgd_at"), PlainNet(1), split, split, cfg, tmp_path, DistInfo(0, 1, torch.device("cpu")))
