"""Every shipped YAML preset parses and validates, and names a registered method and architecture; the RoLI paper
presets train with the official effective learning rates and modes; the paper presets reproduce the official code's
behaviour (input upsampling, attack loss, BN re-estimation, MRC regime, optimizer, PEFT inits, AutoLoRa branch),
each checked against a transcription of the official logic."""

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from robustft.attacks import PGD
from robustft.engine import build_optimizer, load_config
from robustft.engine.run import _stage_config
from robustft.methods import create_method, list_methods
from robustft.models import create_model, list_models
from support import tiny_resnet, with_source_bn_stats

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
DEMO = Path(__file__).resolve().parents[2] / "src" / "robustft" / "assets" / "demo.yaml"


@pytest.mark.parametrize("path", [*CONFIGS, DEMO], ids=lambda p: p.name)
def test_preset_is_valid(path):
    cfg = load_config(path)
    assert cfg.method in list_methods()
    assert cfg.model.arch.partition(".")[0] in list_models()


def test_presets_exist():
    names = {p.parent.name + "/" + p.stem for p in CONFIGS}
    assert {"paper/twins_cifar10", "paper/twins_trades_cifar10", "paper/twins_caltech256",
            "cpu/cifar100_transfer", "cpu/demo_source", "paper/rift_cifar10", "cpu/rift_cifar10",
            "cpu/roli_cifar100", "paper/roli_lora_cifar100"} <= names


PAPER = sorted((Path(__file__).resolve().parents[2] / "configs" / "paper").glob("*.yaml"))


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_presets_reproduce_the_official_precision_and_export(path):
    cfg = load_config(path)
    assert cfg.train.amp == "off", "all three official codes train in fp32"
    if cfg.method.startswith("twins"):
        assert cfg.eval.select == "last", "the official TWINS code exports the final epoch"


# The official runs' effective rates at batch 64: the official YAMLs' BASE_LR / 256 * 64 (stage lp from
# configs/linear/<data>_ranli.yaml, stage ft from configs/<peft>/<data>_roli.yaml).
ROLI_EFFECTIVE_LR = {
    "cifar10": {"lp": 0.0125, "full": 2.5e-5, "bias": 1.25e-3, "lora": 2.5e-4, "adapter": 1.25e-2},
    "cifar100": {"lp": 0.025, "full": 2.5e-5, "bias": 1.25e-3, "lora": 2.5e-4, "adapter": 1.25e-2},
    "caltech256": {"lp": 0.125, "full": 2.5e-5, "bias": 2.5e-6, "lora": 2.5e-5, "adapter": 1.25e-4},
    "cub200": {"lp": 0.25, "full": 2.5e-5, "bias": 1.25e-4, "lora": 1.25e-3, "adapter": 1.25e-2},
    "stanford_dogs": {"lp": 0.25, "full": 1.25e-5, "bias": 1.25e-5, "lora": 2.5e-4, "adapter": 2.5e-5},
}
ROLI_DATA = list(ROLI_EFFECTIVE_LR)
ROLI_PRESETS = sorted(p for p in CONFIGS if p.parent.name == "paper" and p.stem.startswith("roli_"))


@pytest.mark.parametrize("path", ROLI_PRESETS, ids=lambda p: p.stem)
def test_roli_preset_trains_at_the_official_effective_lr(path):
    """Both stages' optimizers, built from the stage configs the engine trains with, get the official rates."""
    _, peft, data = path.stem.split("_", 2)
    cfg = load_config(path)
    assert cfg.data.batch_size == 64 and cfg.optim.lr_scale_batch == 256
    stages = create_method(cfg.method, PGD(), **cfg.method_args).stages()
    assert [s.name for s in stages] == ["lp", "ft"]
    model = nn.Linear(4, 2)
    for stage in stages:
        optimizer = build_optimizer(model, model.named_parameters(), _stage_config(cfg, stage).optim)
        expected = ROLI_EFFECTIVE_LR[data]["lp" if stage.name == "lp" else peft]
        assert all(g["lr"] == pytest.approx(expected, rel=1e-12) for g in optimizer.param_groups), stage.name


@pytest.mark.parametrize("path", ROLI_PRESETS, ids=lambda p: p.stem)
def test_roli_preset_modes_are_the_official_ones(path):
    """Stochastic depth only where the encoder trains in train mode (full); the official head init everywhere."""
    cfg = load_config(path)
    assert ("drop_path_rate" in cfg.model.options) == (cfg.method_args["peft"] == "full")
    assert cfg.method_args["head_init"] == "official" and "lora_dropout" not in cfg.method_args


# ---------------------------------------------------------------------------------------------------------------
# the paper presets reproduce the official code's behaviour (issue #24), each against a transcription of it
# ---------------------------------------------------------------------------------------------------------------
def _paper(stem: str) -> Path:
    return ROOT / "configs" / "paper" / f"{stem}.yaml"


def _method(cfg):
    """The method a run of ``cfg`` trains with, its training attack built as the engine builds it."""
    attack = PGD(eps=cfg.attack.eps, norm=cfg.attack.norm, steps=cfg.attack.steps, step_size=cfg.attack.step_size,
                 name="pgd_train")
    return create_method(cfg.method, attack, **cfg.method_args)


RIFT_PRESETS = [f"rift_{a}{d}" for a in ("", "r34_", "wrn34_") for d in ("cifar10", "cifar100", "tinyimagenet")]
TWINS_CIFAR = [f"twins_{t}cifar{n}" for t in ("", "trades_") for n in (10, 100)]


@pytest.mark.parametrize("stem", TWINS_CIFAR + [f"twins_baseline_{b}_cifar{n}" for b in ("at", "trades")
                                                for n in (10, 100)])
def test_twins_cifar_presets_upsample_to_224_inside_the_model(stem):
    """Official: ``F.interpolate(inp, 224)`` (nearest) before the ImageNet ResNet-50, so layer4 sees 7x7, not 1x1."""
    cfg = load_config(_paper(stem))
    arch = cfg.model.arch.partition(".")[0]
    small = dict(num_classes=10, widths=(8, 16, 32, 64))
    torch.manual_seed(0)
    model = create_model(arch, **small, **cfg.model.options).eval()
    seen = []
    model.layer4.register_forward_hook(lambda m, i, out: seen.append(tuple(out.shape[-2:])))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        plain = create_model(arch, **small).eval()
        plain.load_state_dict(model.state_dict())
        official = plain(F.interpolate(x, 224))  # the official AttackerModel's upsampling, default mode
    assert seen == [(7, 7)]
    torch.testing.assert_close(logits, official)


@pytest.mark.parametrize("stem", [f"twins_{t}_{d}" for t in ("trades", "baseline_trades")
                                  for d in ("cifar10", "cifar100", "caltech256")])
def test_twins_trades_presets_attack_with_ce_as_official(stem):
    """The preset's training attack gives the official CE PGD's examples (transcribed here, from the clean point)."""
    cfg = load_config(_paper(stem))
    attack = dataclasses.replace(_method(cfg).attack, random_start=False, steps=3)
    model = tiny_resnet(num_classes=10).eval()
    x, y = torch.rand(6, 3, 32, 32), torch.arange(6) % 10
    eps, step = attack.eps, cfg.attack.step_size
    x_adv = x.clone()
    for _ in range(attack.steps):  # the official PGD: sign step on CE, projection to the ball and to [0, 1]
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    torch.testing.assert_close(attack.perturb(model, x, y), x_adv, rtol=0, atol=1e-6)


@pytest.mark.parametrize("stem", ["rift_cifar10", "rift_cifar100"])
def test_rift_presets_reestimate_bn_as_the_official_fine_tune(stem):
    """One step of the preset's module fine-tune changes the tensors one step of the transcribed official loop changes
    (parameters whose name holds the module name train, the model in train mode: every BN statistic moves), equally."""
    cfg = load_config(_paper(stem))
    module = "layer2.1.conv2"
    torch.manual_seed(0)
    source = with_source_bn_stats(create_model(cfg.model.arch, num_classes=10, widths=(4, 8, 16, 32)))
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 10
    sgd = dict(lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    official = copy.deepcopy(source)
    for name, p in official.named_parameters():
        p.requires_grad_(module in name)
    official.train()
    opt = torch.optim.SGD(official.parameters(), **sgd)
    F.cross_entropy(official(x), y).backward()
    opt.step()
    method = _method(dataclasses.replace(cfg, method_args={**cfg.method_args, "module": module}))
    ours = method.prepare(copy.deepcopy(source))
    method.train_mode(ours)
    opt = torch.optim.SGD([p for _, p in method.trainable_parameters(ours)], **sgd)
    method.loss(ours, x, y)[0].backward()
    opt.step()

    def changed(model: nn.Module) -> set[str]:
        return {k for k, v in model.state_dict().items() if not torch.equal(v, source.state_dict()[k])}
    assert changed(ours) == changed(official) and len(changed(official)) > 1
    torch.testing.assert_close(ours.state_dict(), official.state_dict())


@pytest.mark.parametrize("stem", ["rift_cifar10", "rift_cifar100"])
def test_rift_presets_use_the_official_mrc_regime_and_test_attack(stem):
    """MRC on 10,000 examples, 20 mini-batch SGD steps per projection; test PGD-10; validation 10 % of train."""
    cfg = load_config(_paper(stem))
    method = _method(cfg).cfg
    assert method.official_bn and method.mrc_n == 10000 and math.ceil(method.mrc_n / method.mrc_minibatch) == 20
    assert cfg.eval.test_steps == 10
    assert yaml.safe_load(_paper(stem).read_text())["data"]["val_fraction"] == 0.1


@pytest.mark.parametrize("stem", TWINS_CIFAR)
def test_twins_presets_state_their_validation_carve(stem):
    assert yaml.safe_load(_paper(stem).read_text())["data"]["val_fraction"] == 0.1


@pytest.mark.parametrize(("stem", "arch", "module"), [
    ("rift_r34_cifar10", "cifar_resnet34", "layer2.3.conv2"), ("rift_r34_cifar100", "cifar_resnet34", "layer2.3.conv2"),
    ("rift_wrn34_cifar10", "wide_resnet34_10", "block1.layer.3.conv2"),
    ("rift_wrn34_cifar100", "wide_resnet34_10", "block1.layer.2.conv2"),
    ("rift_r34_tinyimagenet", "cifar_resnet34", "layer3.5.conv2"),
    ("rift_wrn34_tinyimagenet", "wide_resnet34_10", "block1.layer.2.conv2")])
def test_rift_other_sources_are_the_resnet18_cell_on_the_official_layout(stem, arch, module):
    """Every setting but the architecture is the ResNet-18 cell's, and the module the official README names as the
    lowest-MRC one is a conv of the robustft architecture (the official checkpoints' layout)."""
    cfg = load_config(_paper(stem))
    base = load_config(_paper(stem.replace("r34_", "").replace("wrn34_", "")))
    assert cfg.model.arch == arch
    assert dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, arch=base.model.arch)) == base
    model = create_model(cfg.model.arch, num_classes=10, **cfg.model.options)
    assert isinstance(model.get_submodule(module), nn.Conv2d)


@pytest.mark.parametrize(("stem", "features"), [("rift_tinyimagenet", 2048), ("rift_r34_tinyimagenet", 2048),
                                                ("rift_wrn34_tinyimagenet", 2560)])
def test_rift_tinyimagenet_presets_use_the_official_64_px_network_view_and_mrc_split(stem, features):
    """Official main.py with --dataset TinyImageNet --input_size 64: the head over 2x2 pooled cells (models/resnet.py
    ``nn.Linear(512 * (input_size // 32) ** 2, ...)``, models/wide_resnet.py likewise), RandomCrop(64, padding=8) +
    flip, ImageNet mean/std; MRC on the training split (generate_adv_dataset: TinyImageNet("train"), all of it) in
    mini-batches of 512 (main.py:58); test PGD-10 with random start (utils.py:109); README module ResNet18
    layer3.1.conv2. Lines: main.py:240 (crop), :243 (mean/std), :32 (MRC data)."""
    cfg = load_config(_paper(stem))
    model = create_model(cfg.model.arch, num_classes=200, normalization=cfg.model.normalization,
                         **cfg.model.options)
    assert model.get_classifier().in_features == features
    torch.testing.assert_close(model.normalize.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(model.normalize.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    assert (cfg.data.name, cfg.data.augment, cfg.data.crop_padding, cfg.data.image_size) == \
        ("tinyimagenet", "crop_flip", 8, None)
    method = _method(cfg).cfg
    assert method.official_bn and method.mrc_n >= 100_000 and method.mrc_minibatch == 512
    assert cfg.eval.test_steps == 10 and cfg.eval.test_random_start
    if stem == "rift_tinyimagenet":
        assert isinstance(model.get_submodule("layer3.1.conv2"), nn.Conv2d)


# The official configs/<peft>/<data>_roli.yaml SOLVER.WEIGHT_DECAY of stage ft
ROLI_OFFICIAL_WD = {
    "cifar10": {"full": 0.01, "bias": 1e-3, "lora": 1e-4, "adapter": 0.01},
    "cifar100": {"full": 1e-3, "bias": 0.01, "lora": 1e-4, "adapter": 1e-4},
    "caltech256": {"full": 1e-4, "bias": 0.0, "lora": 1e-4, "adapter": 0.0},
    "cub200": {"full": 0.01, "bias": 1e-4, "lora": 1e-4, "adapter": 1e-3},
    "stanford_dogs": {"full": 1e-3, "bias": 1e-4, "lora": 0.01, "adapter": 1e-4},
}


def _official_roli_optimizer(model: nn.Module, weight_decay: float, lr: float) -> torch.optim.Optimizer:
    """Transcription of the official make_optimizer for OPTIMIZER adamw: AdamW with weight decay 0.01 (not the YAML's)
    on parameters whose name holds no "bias" when WEIGHT_DECAY > 0, else SGD momentum 0.9 without weight decay."""
    params = list(model.named_parameters())
    if weight_decay > 0:
        return torch.optim.AdamW([{"params": [p for n, p in params if "bias" not in n], "weight_decay": 0.01},
                                  {"params": [p for n, p in params if "bias" in n], "weight_decay": 0.0}], lr=lr)
    return torch.optim.SGD([p for _, p in params], lr=lr, momentum=0.9)


@pytest.mark.parametrize("path", ROLI_PRESETS, ids=lambda p: p.stem)
def test_roli_preset_stage2_optimizer_is_the_official_one(path):
    """Stage ft's optimizer type, momentum and per-parameter weight decay equal the transcribed official factory's."""
    _, peft, data = path.stem.split("_", 2)
    cfg = load_config(path)
    stage = create_method(cfg.method, PGD(), **cfg.method_args).stages()[-1]
    optim = _stage_config(cfg, stage).optim
    model = nn.Linear(4, 2)
    ours = build_optimizer(model, model.named_parameters(), optim)
    official = _official_roli_optimizer(model, ROLI_OFFICIAL_WD[data][peft], optim.lr)
    assert type(ours) is type(official)

    def decay(opt: torch.optim.Optimizer) -> dict[int, tuple[float, float]]:
        return {id(p): (g["weight_decay"], g.get("momentum", 0.0)) for g in opt.param_groups for p in g["params"]}
    assert decay(ours) == decay(official)


@pytest.mark.parametrize("path", ROLI_PRESETS, ids=lambda p: p.stem)
def test_roli_presets_use_the_official_peft_inits(path):
    """LoRA and adapter presets reproduce the official (zero) initializations."""
    peft = path.stem.split("_")[1]
    method = create_method("roli", PGD(), **load_config(path).method_args).cfg
    assert (method.lora_init == "official") == (peft == "lora")
    assert (method.adapter_init == "official") == (peft == "adapter")


@pytest.mark.parametrize("stem", ["autolora_cifar10", "autolora_cifar100"])
def test_autolora_presets_use_the_official_branch(stem):
    assert create_method("autolora", PGD(), **load_config(_paper(stem)).method_args).cfg.lora_layout == "official"


# ---------------------------------------------------------------------------------------------------------------
# every paper preset, every stage: the effective settings against a table of the official values
# ---------------------------------------------------------------------------------------------------------------
def _twins(data: str) -> dict:
    """TWINS (train.sh of TWINS_cifar / TWINS_high_res_data, argument.py, test())."""
    caltech = data == "caltech256"
    return {"main": dict(
        optim="sgd", lr=0.003, momentum=0.9, weight_decay=1e-3 if caltech else 1e-5, epochs=60, warmup=0.0,
        schedule="multistep", milestones=[30, 50], batch=128, attack=(8 / 255, 10, 2 / 255), val_steps=10,
        test_steps=10, test_random_start=False, view=("image_size", 224, 256, "random_resized_crop") if caltech else ("resize_input", 224),
        select="last", val_fraction=0.1)}


def _roli(peft: str, data: str) -> dict:
    """RoLI (configs/linear/<data>_ranli.yaml, configs/<peft>/<data>_roli.yaml, make_optimizer, BASE_LR/256*64)."""
    high_res = not data.startswith("cifar")
    epochs = {"cifar10": 20, "cifar100": 20, "caltech256": 40, "cub200": 60, "stanford_dogs": 40}[data]
    shared = dict(batch=64, attack=(8 / 255, 7, 2 / 255), val_steps=10, test_steps=10, test_random_start=True,
                  view=("image_size", 224, 256, "random_crop") if high_res else ("resize_input", True), select="auto", warmup=10.0,
                  schedule="cosine", epochs=epochs, val_fraction=0.1)
    lp_wd = {"cifar10": 0.01, "cifar100": 1e-3, "caltech256": 0.01, "cub200": 1e-3, "stanford_dogs": 0.01}[data]
    official_wd = ROLI_OFFICIAL_WD[data][peft]
    return {"lp": dict(shared, optim="sgd", lr=ROLI_EFFECTIVE_LR[data]["lp"], momentum=0.9, weight_decay=lp_wd),
            "ft": dict(shared, optim="adamw" if official_wd > 0 else "sgd", lr=ROLI_EFFECTIVE_LR[data][peft],
                       momentum=None if official_wd > 0 else 0.9, weight_decay=0.01 if official_wd > 0 else 0.0)}


# The official configs/<peft>/<data>_ranli.yaml (BASE_LR, WEIGHT_DECAY): RanLI, the RoLI paper's baseline
RANLI_OFFICIAL = {
    "cifar10": {"full": (5e-4, 0.01), "bias": (5e-3, 1e-3), "lora": (0.01, 1e-4), "adapter": (0.05, 0.01)},
    "cifar100": {"full": (5e-4, 1e-3), "bias": (5e-3, 1e-3), "lora": (0.05, 0.0), "adapter": (5e-3, 1e-4)},
    "caltech256": {"full": (5e-4, 1e-4), "bias": (1e-3, 0.01), "lora": (1e-3, 1e-4), "adapter": (5e-3, 1e-4)},
    "cub200": {"full": (5e-4, 1e-3), "bias": (5e-3, 1e-3), "lora": (5e-3, 1e-4), "adapter": (0.05, 1e-4)},
    "stanford_dogs": {"full": (5e-4, 0.01), "bias": (1e-3, 1e-4), "lora": (5e-3, 1e-4), "adapter": (5e-3, 1e-4)},
}


def _ranli(peft: str, data: str) -> dict:
    """RanLI: one stage from a random head, the official make_optimizer at BASE_LR / 256 * 64."""
    lr, official_wd = RANLI_OFFICIAL[data][peft]
    return {"ft": dict(_roli(peft, data)["ft"], optim="adamw" if official_wd > 0 else "sgd", lr=lr / 4,
                       momentum=None if official_wd > 0 else 0.9, weight_decay=0.01 if official_wd > 0 else 0.0)}


RIFT = {"main": dict(optim="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4, epochs=10, warmup=0.0, schedule="multistep",
                     milestones=[5], batch=128, attack=(8 / 255, 10, 2 / 255), val_steps=10, test_steps=10,
                     test_random_start=True, view=None, select="clean_acc", val_fraction=0.1)}
# Tiny-ImageNet: RiFT/main.py run with --dataset TinyImageNet --input_size 64 (:181) and its defaults (lr :185,
# momentum :196, wd :198, epochs :199, batch :200, decay at epochs // 2 :266), test PGD-10 (utils.py:109): the CIFAR
# recipe on the 64-px network, whose head reads 2x2 pooled cells (models/resnet.py:127, models/wide_resnet.py:105)
RIFT_TINY = {"main": dict(RIFT["main"], view=("img_size", 64))}
AUTOLORA = {"main": dict(optim="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, epochs=60, warmup=0.0,
                         schedule="constant", batch=128, attack=(8 / 255, 10, 2 / 255), val_steps=10, test_steps=10,
                         test_random_start=False, view=("resize_input", 224), select="auto", val_fraction=0.05)}
OFFICIAL_SETTINGS = {
    **{f"twins_{t}{d}": _twins(d) for t in ("", "trades_") for d in ("cifar10", "cifar100")},
    "twins_caltech256": _twins("caltech256"), "twins_trades_caltech256": _twins("caltech256"),
    **{f"twins_baseline_{b}_{d}": _twins(d) for b in ("at", "trades") for d in ("cifar10", "cifar100", "caltech256")},
    **{f"roli_{p}_{d}": _roli(p, d) for p in ("full", "bias", "lora", "adapter") for d in ROLI_DATA},
    **{f"ranli_{p}_{d}": _ranli(p, d) for p in ("full", "bias", "lora", "adapter") for d in ROLI_DATA},
    **{stem: RIFT_TINY if stem.endswith("tinyimagenet") else RIFT for stem in RIFT_PRESETS},
    **{f"autolora_{r}{d}": AUTOLORA if d.startswith("cifar") else
       {"main": dict(AUTOLORA["main"], view=("image_size", 224, 256, "random_resized_crop"))}
       for r in ("", "r18_") for d in ("cifar10", "cifar100", "dtd", "stanford_dogs", "cub200", "caltech256")},
}


def _effective(cfg) -> dict:
    """The settings a stage config trains and evaluates with, in the table's terms."""
    o, d, e = cfg.optim, cfg.data, cfg.eval
    view = next(((k, v) for k, v in (("image_size", d.image_size), *cfg.model.options.items())
                 if k in ("image_size", "resize_input", "img_size") and v), None)
    if d.storage_size is not None:  # the 224-px pipelines: Resize(storage_size), then the training crop
        view = (*view, d.storage_size, d.augment)
    row = dict(optim=o.name, lr=o.lr, momentum=o.momentum if o.name == "sgd" else None, weight_decay=o.weight_decay,
               epochs=cfg.train.epochs, warmup=float(o.warmup_epochs), schedule=o.schedule, batch=d.batch_size,
               attack=(cfg.attack.eps, cfg.attack.steps, cfg.attack.step_size), val_steps=e.val_steps,
               test_steps=e.test_steps, test_random_start=e.test_random_start, view=view, select=e.select,
               val_fraction=d.val_fraction)
    if o.schedule == "multistep":
        row["milestones"] = list(o.milestones)
    return row


def test_every_paper_preset_has_a_row_of_official_settings():
    assert {p.stem for p in PAPER} == set(OFFICIAL_SETTINGS)


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_preset_stages_train_with_the_official_settings(path):
    """Each stage's effective lr (after batch scaling), epochs, warm-up, schedule, weight decay, optimizer, batch,
    training / validation / test attack, image view, selection rule and validation carve equal the official values."""
    cfg = load_config(path)
    stages = create_method(cfg.method, PGD(), **cfg.method_args).stages()
    expected = OFFICIAL_SETTINGS[path.stem]
    assert [s.name for s in stages] == list(expected)
    for stage in stages:
        got, want = _effective(_stage_config(cfg, stage)), expected[stage.name]
        assert got.keys() == want.keys(), stage.name
        for key, value in want.items():
            assert got[key] == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value), \
                f"{path.stem} stage {stage.name}: {key} is {got[key]!r}, official {value!r}"
