"""AutoLoRa: the LoRA branch sits where declared and is on only in the natural forward; each loss term reaches only its
route's parameters; λ follows the branch's clean training accuracy; the automatic schedule decays, reloads and stops
as the official rule does; evaluation and export see the plain backbone; whole runs work through the CLI and resume
bit-exactly."""

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustft.attacks import PGD
from robustft.data import ArrayDataset
from robustft.engine import load_config, run
from robustft.engine.run import _stage_config
from robustft.errors import UserError
from robustft.methods import RunContext, create_method
from robustft.methods.autolora import LoRALibConv2d, auto_lr_decision, loss_weights, lr_decays
from robustft.methods.peft import LoRAConv2d, LoRALinear, lora_enabled, lora_layers, lora_parameters, remove_lora
from robustft.models import create_model
from support import finetune_args, robustft_cmd, run_ok

ROOT = Path(__file__).resolve().parents[2]
ARCHS = {"cnn": ("cifar_resnet20", dict(width=4)), "resnet50": ("resnet50", dict(widths=(8, 16, 32, 64))), "vit": ("vit", dict(depth=2, embed_dim=48, num_heads=3)),
         "swin": ("swin", {})}


def _model(kind: str = "cnn", **method_args):
    """A prepared (model, method) pair with non-zero LoRA B, so the branch changes the function."""
    arch, options = ARCHS[kind]
    torch.manual_seed(0)
    model = create_model(arch, num_classes=4, **options)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    method = create_method("autolora", PGD(steps=2), **method_args)
    method.prepare(model)
    with torch.no_grad():
        for m in lora_layers(model):
            for layer in m.lora_B.modules():
                if isinstance(layer, (nn.Linear, nn.Conv2d)):
                    nn.init.normal_(layer.weight, std=0.05)
    return model, method


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 4, (n,), generator=g)


def _with_grad(model: nn.Module) -> set[int]:
    return {id(p) for p in model.parameters() if p.grad is not None}


# ---------------------------------------------------------------------------------------------------------------
# where the branch goes and when it is on
# ---------------------------------------------------------------------------------------------------------------
def test_cnn_branch_covers_the_residual_blocks_not_the_stem_and_starts_off():
    model, method = _model()
    wrapped = {n for n, m in model.named_modules() if isinstance(m, LoRAConv2d)}
    convs = {n for n, m in create_model("cifar_resnet20", num_classes=4, width=4).named_modules()
             if isinstance(m, nn.Conv2d)}
    assert wrapped == convs - {"conv1"}, "every block conv and projection shortcut, not the stem"
    assert "layer2.0.downsample.0" in wrapped
    assert all(not m.active for m in lora_layers(model)) and all(p.requires_grad for p in model.parameters())
    everywhere, _ = _model(attach="all")
    assert {n for n, m in everywhere.named_modules() if isinstance(m, LoRAConv2d)} == convs
    a = torch.cat([m.lora_A.weight.flatten() for m in lora_layers(model)])
    assert 0.9 < a.std().item() < 1.1, "the official init: A ~ N(0, 1)"
    kaiming, _ = _model(lora_init="kaiming")
    assert torch.cat([m.lora_A.weight.flatten() for m in lora_layers(kaiming)]).std() < 0.2
    assert lora_layers(model)[0].scaling == pytest.approx(1 / 8), "official r 8, alpha 1"


def _official_branch_forward(plain: nn.Module, wrapped: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Transcription of the official high-resolution natural forward: ``SequentialWithArgs`` hands the branch switch to
    the last block of each stage only, where loralib's ``ConvLoRA`` convolves with W + (B @ A).view(W.shape) · α/r
    (A and B taken from ``wrapped``, the robustft model, by the official conv's name)."""
    official = copy.deepcopy(plain)
    lora = dict(wrapped.named_modules())
    with torch.no_grad():
        for stage in official.stage_names:
            blocks = getattr(official, stage)
            last = f"{stage}.{len(blocks) - 1}"
            for conv_name in ("conv1", "conv2", "conv3"):
                conv, m = getattr(blocks[-1], conv_name), lora[f"{last}.{conv_name}"]
                conv.weight += (m.lora_B.weight @ m.lora_A.weight).view(conv.weight.shape) * m.scaling
    return official(x)


def test_official_layout_is_the_official_branch_placement_shapes_and_forward():
    """``lora_layout: official``: loralib-shaped LoRA on the 12 convs of a ResNet-50's stage-final blocks, and the
    branch-on forward equals the transcribed official natural forward."""
    model, _ = _model("resnet50", lora_layout="official")
    plain = remove_lora(copy.deepcopy(model)).eval()
    wrapped = {n: m for n, m in model.named_modules() if isinstance(m, LoRAConv2d)}
    assert sorted(wrapped) == sorted(f"layer{s}.{b}.conv{c}" for s, b in ((1, 2), (2, 3), (3, 5), (4, 2))
                                     for c in (1, 2, 3))
    assert all(isinstance(m, LoRALibConv2d) for m in wrapped.values())
    conv = wrapped["layer2.3.conv2"]  # 3x3, 16 -> 16, r 8: A (r·k, in·k), B (out·k, r·k)
    assert conv.lora_A.weight.shape == (24, 48) and conv.lora_B.weight.shape == (48, 24)
    assert wrapped["layer4.2.conv3"].lora_A.weight.shape == (8, 64), "1x1: ordinary LoRA"
    x = torch.rand(2, 3, 64, 64)
    model.eval()
    with torch.no_grad(), lora_enabled(model):
        ours = model(x)
    with torch.no_grad():
        assert not torch.allclose(ours, plain(x), atol=1e-4), "the branch must change the function"
        torch.testing.assert_close(ours, _official_branch_forward(plain, model, x), rtol=1e-4, atol=1e-5)


def test_loralib_factorization_reaches_rank_r_k_squared():
    """As an [out, in·k²] matrix the official 3x3 update reaches rank r·k² = 72 at r = 8; robustft's conv LoRA r."""
    torch.manual_seed(0)
    base = nn.Conv2d(32, 96, 3, padding=1, bias=False)
    for layer_cls, rank in ((LoRALibConv2d, 72), (LoRAConv2d, 8)):
        layer = layer_cls(base, 8, 1.0)
        with torch.no_grad():
            for p in [*layer.lora_A.parameters(), *layer.lora_B.parameters()]:
                p.normal_()
        assert torch.linalg.matrix_rank(layer.delta_weight().flatten(1)).item() == rank


def test_official_layout_refuses_what_it_cannot_reproduce():
    with pytest.raises(UserError, match="drop method_args.attach"):
        create_method("autolora", lora_layout="official", attach="all")
    with pytest.raises(UserError, match="last residual block"):
        _model("vit", lora_layout="official")


@pytest.mark.parametrize("kind", ["vit", "swin"])
def test_transformer_branch_is_on_the_q_and_v_rows_of_every_fused_qkv(kind):
    model, _ = _model(kind)
    layers = lora_layers(model)
    assert layers and all(isinstance(m, LoRALinear) for m in layers)
    assert {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, LoRALinear)} == {"qkv"}
    d = layers[0].base_layer.out_features // 3
    assert layers[0].slices == ((0, d), (2 * d, 3 * d))


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_the_branch_is_off_in_eval_attacks_and_export(kind):
    """Outside the natural forward the model computes the plain backbone with the same weights, bit for bit; the
    finalized model is that plain architecture."""
    model, method = _model(kind)
    arch, options = ARCHS[kind]
    plain = create_model(arch, num_classes=4, **options)
    plain.load_state_dict(remove_lora(copy.deepcopy(model)).state_dict())
    model.eval(), plain.eval()
    x, y = _batch()
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
        with lora_enabled(model):
            assert (model(x) - plain(x)).abs().max() > 1e-3, "the branch changes the natural forward"
    attack = PGD(steps=2)
    adv = attack.perturb(model, x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(adv, attack.perturb(plain, x, y, generator=torch.Generator().manual_seed(3)))
    final = method.finalize(model, None)
    assert final.state_dict().keys() == plain.state_dict().keys() and not lora_layers(final)
    with torch.no_grad():
        assert torch.equal(final(x), plain(x))


# ---------------------------------------------------------------------------------------------------------------
# gradient routing
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_each_term_reaches_only_its_routes_parameters(kind):
    model, method = _model(kind)
    model.train()
    x, y = _batch()
    x_adv = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    lora = {id(p) for p in lora_parameters(model)}
    head = {id(p) for p in model.get_classifier().parameters()}
    everything = {id(p) for p in model.parameters()}

    def grads_of(term):
        model.zero_grad(set_to_none=True)
        logits_nat, logits_adv = method.forward_paths(model, x, x_adv)
        term(logits_nat, logits_adv).backward()
        return _with_grad(model)

    assert grads_of(lambda n, a: F.cross_entropy(n, y)) == lora | head
    b = [m.lora_B for m in lora_layers(model)]
    assert all(p.grad.abs().sum() > 0 for m in b for p in m.parameters()), "LoRA B learns from the natural term"
    assert grads_of(lambda n, a: F.cross_entropy(a, y)) == everything - lora, "backbone, norms and head"
    bn = [p for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)) for p in m.parameters()]
    assert bn and all(p.grad is not None for p in bn)
    kl = grads_of(lambda n, a: F.kl_div(F.log_softmax(a, 1), F.softmax(n, 1), reduction="batchmean"))
    assert kl == everything, "the KL's target is not detached: p_nat trains LoRA, p_adv the backbone"
    assert all(p.requires_grad for p in model.parameters()), "the flags are restored"


def test_both_forwards_update_the_bn_statistics_in_train_mode():
    model, method = _model()
    model.train()
    x, _ = _batch()
    before = model.bn1.num_batches_tracked.item()
    method.forward_paths(model, x, x)
    assert model.bn1.num_batches_tracked.item() == before + 2, "the natural and the adversarial forward"


# ---------------------------------------------------------------------------------------------------------------
# λ from the branch's clean training accuracy
# ---------------------------------------------------------------------------------------------------------------
class _Shift:
    """A fixed 'attack' (x + 0.02), so the loss can be recomputed by hand."""

    def perturb(self, model, x, y, generator=None):
        return (x + 0.02).clamp(0, 1)


def test_lambda_follows_the_branchs_clean_training_accuracy(tmp_path):
    assert loss_weights(0.3, 6.0) == pytest.approx((0.7, 1.8))
    model, method = _model()
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g)
    model.eval()
    with torch.no_grad(), lora_enabled(model):  # a head centred on the branch's features, so its predictions vary
        features = model.forward_features(images.float() / 255)
        head = model.get_classifier()
        head.weight.normal_(0, 10, generator=g)
        head.bias.copy_(-head.weight @ features.mean(0))
        on = model(images.float() / 255).argmax(1)
    with torch.no_grad():
        off = model(images.float() / 255).argmax(1)
    labels = on.clone()
    labels[12:] = (on[12:] + 1) % 4  # the branch gets 12 of 16 right
    assert (off == labels).float().mean().item() != 0.75, "the plain path scores differently (the official LR bug)"
    data = ArrayDataset(images, labels, classes=list("abcd"), name="constructed")
    cfg = load_config(None, ["train.channels_last=false"])
    method.setup(model, RunContext(train=data, val=data, cfg=cfg, run_dir=tmp_path, source_state={},
                                   device=torch.device("cpu"), log=lambda s: None))
    method.epoch_start(model, 0)
    method.train_mode(model)
    assert method.natural_acc == 0.75 and model.training
    assert method.epoch_metrics(model) == pytest.approx({"natural_train_acc": 0.75, "lambda1": 0.25,
                                                         "lambda2": 4.5})

    method.attack = _Shift()
    x, y = _batch()
    model.train()
    state = copy.deepcopy(model.state_dict())
    loss, stats = method.loss(model, x, y)
    model.load_state_dict(state)  # the loss's forwards moved the BN statistics: recompute from the same state
    logits_nat, logits_adv = method.forward_paths(model, x, (x + 0.02).clamp(0, 1))
    kl = (F.softmax(logits_nat, 1) * (F.log_softmax(logits_nat, 1) - F.log_softmax(logits_adv, 1))).sum() / len(x)
    expected = 0.25 * F.cross_entropy(logits_nat, y) + 0.75 * F.cross_entropy(logits_adv, y) + 4.5 * kl
    torch.testing.assert_close(loss, expected)
    assert set(stats) == {"loss", "acc", "adv_acc"}

    method.cfg.acc_n = 8
    method.setup(model, RunContext(train=data, val=data, cfg=cfg, run_dir=tmp_path, source_state={},
                                   device=torch.device("cpu"), log=lambda s: None))
    assert torch.equal(method.train_data.y, labels[::2]), "acc_n: evenly spaced images"


def test_the_loss_needs_the_accuracy_first():
    model, method = _model()
    with pytest.raises(UserError, match="epoch_start"):
        method.loss(model, *_batch())


# ---------------------------------------------------------------------------------------------------------------
# the automatic lr schedule
# ---------------------------------------------------------------------------------------------------------------
RISING = [0.10, 0.20, 0.30, 0.40, 0.50]


@pytest.mark.parametrize("accs,decays", [
    (RISING, False),                                      # 4 of 4 changes improved: keep the lr
    ([0.10, 0.20, 0.15, 0.25, 0.30], False),              # 3 of 4 = ρ·4: keep
    ([0.10, 0.20, 0.15, 0.12, 0.30], True),               # 2 of 4 < 3: decay
    (RISING[:4], False),                                  # not a checkpoint (index 3)
    ([0.50, 0.10, 0.20, 0.30, 0.40], False),              # no new best, but the first checkpoint never asks
    (RISING + [0.30, 0.35, 0.40, 0.45], True),            # 2nd checkpoint: 3 of 4 improved, but no new best (0.50)
    (RISING + [0.30, 0.35, 0.40, 0.55], False),           # ... with a new best: keep
    (RISING + [0.30, 0.35, 0.40, 0.50], True),            # equalling the best is no new best
    (RISING + [0.60, 0.50, 0.40, 0.30], True),            # a new best, but 0 of 4 improved
    (RISING + [0.55, 0.56, 0.57], False),                 # index 7: between checkpoints
])
def test_the_decay_rule_on_constructed_validation_curves(accs, decays):
    assert lr_decays(accs, window=4, rho=0.75) is decays


def test_explicit_checkpoints_and_their_windows():
    points = [0, 2, 5]
    assert lr_decays([0.1, 0.2, 0.3], checkpoints=points) is False  # 2 of 2 ≥ 1.5
    assert lr_decays([0.1, 0.2, 0.2], checkpoints=points) is True   # 1 of 2 < 1.5
    assert lr_decays([0.1, 0.2, 0.3, 0.4], checkpoints=points) is False  # index 3: no checkpoint
    assert lr_decays([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], checkpoints=points) is False
    assert lr_decays([0.1, 0.2, 0.3, 0.4, 0.2, 0.25], checkpoints=points) is True  # 2 of 3 < 2.25
    with pytest.raises(UserError, match="lr_checkpoints"):
        create_method("autolora", lr_checkpoints=[2, 4])
    with pytest.raises(UserError, match="lr_checkpoints"):
        create_method("autolora", lr_checkpoints=[0, 4, 4])


def test_decisions_halve_reload_and_stop_below_the_floor():
    cfg = create_method("autolora").cfg
    keep = auto_lr_decision(RISING, 0.01, cfg)
    assert not keep.acts
    decay = auto_lr_decision([0.10, 0.20, 0.15, 0.12, 0.30], 0.01, cfg)
    assert (decay.lr_scale, decay.reload_best, decay.stop) == (0.5, True, False)
    last = auto_lr_decision([0.10, 0.20, 0.15, 0.12, 0.30], 1.5e-5, cfg)  # 0.01 / 2^10 < 1e-5 stops, as official
    assert (last.lr_scale, last.reload_best, last.stop) == (0.5, True, True)
    off = create_method("autolora", auto_lr=False)
    assert not off.epoch_end(None, [{"val_robust_acc": a, "lr": 0.01} for a in [0.1, 0.2, 0.15, 0.12, 0.3]]).acts
    assert off.stages()[0].overrides == {}
    on = create_method("autolora", lr=0.05)
    assert on.stages()[0].overrides == {"optim.schedule": "constant", "optim.warmup_epochs": 0.0, "optim.lr": 0.05}


@pytest.mark.parametrize("name", ["paper/autolora_cifar10", "paper/autolora_cifar100", "cpu/autolora_cifar100"])
def test_presets_train_with_the_automatic_schedule(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    method = create_method(cfg.method, PGD(), **cfg.method_args)
    stage = _stage_config(cfg, method.stages()[0])
    assert cfg.method == "autolora" and stage.optim.schedule == "constant" and stage.optim.warmup_epochs == 0
    if name.startswith("paper/"):
        assert stage.optim.lr == 0.01 and stage.optim.weight_decay == 1e-4 and cfg.method_args["lora_rank"] == 8
        assert cfg.model.arch == "resnet50.madry_linf4_in1k" and cfg.model.options == {"resize_input": 224}
        assert cfg.data.val_fraction == 0.05 and cfg.train.epochs == 60


# ---------------------------------------------------------------------------------------------------------------
# whole runs
# ---------------------------------------------------------------------------------------------------------------
SMALL = ("--method", "autolora", "--set", "method_args.lr_window=1", "--set", "method_args.lr_floor=0.02",
         "--set", "train.channels_last=false")


@pytest.mark.parametrize("layout", ["standard", "official"])
def test_cli_run_exports_a_plain_model_that_evaluate_and_export_read(tiny_task, tmp_path, layout):
    data, ckpt = tiny_task
    run_ok(robustft_cmd(*finetune_args(data, ckpt, tmp_path, "al", "--epochs", "3", *SMALL,
                                       "--set", f"method_args.lora_layout={layout}")))
    run_dir = tmp_path / "al"
    results = json.loads((run_dir / "results.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all({"natural_train_acc", "lambda1", "lambda2"} <= set(h) for h in history)
    assert all(h["lambda1"] == pytest.approx(1 - h["natural_train_acc"]) for h in history)
    exported = torch.load(run_dir / "model.pt", weights_only=True)
    plain = create_model("cifar_resnet20", num_classes=4, width=4).state_dict()
    assert exported.keys() == plain.keys(), "the branch is dropped: the source architecture"

    run_ok(robustft_cmd("evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(run_dir / "model.pt"),
                        "--data", str(data), "--steps", "2", "--json", str(tmp_path / "eval.json")))
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["clean_acc"] == results["test"]["clean_acc"] and evaluated["n"] == results["test"]["n"]
    run_ok(robustft_cmd("export", str(run_dir), "--out", str(tmp_path / "plain.pt")))
    state = torch.load(tmp_path / "plain.pt", weights_only=True)
    assert state.keys() == {k for k in plain if not k.startswith("normalize.")}


class _Killed(Exception):
    """Raised by the log right after an epoch's checkpoint is written: the process 'dies' there."""


def _cfg(data: Path, ckpt: Path, out: Path, name: str):
    return load_config(None, [
        f"data.name={data}", "model.arch=cifar_resnet20", f"model.checkpoint={ckpt}", "model.options.width=4",
        "method=autolora", "method_args.lr_window=1", "method_args.lr_floor=0.02", "attack.steps=2",
        "data.batch_size=32", "optim.lr=0.05", "eval.val_steps=2", "eval.test_steps=2", "train.epochs=5",
        "train.channels_last=false", f"train.out_dir={out}", f"train.name={name}"])


def test_killed_and_resumed_run_ends_where_an_uninterrupted_one_does(tiny_task, tmp_path):
    data, ckpt = tiny_task
    straight = run(_cfg(data, ckpt, tmp_path, "straight"), log=lambda s: None)

    def dies_after_epoch_2(line: str) -> None:
        if line.startswith("epoch 2/"):
            raise _Killed

    cfg = _cfg(data, ckpt, tmp_path, "killed")
    with pytest.raises(_Killed):
        run(cfg, log=dies_after_epoch_2)
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["epoch"] == 2
    resumed = run(cfg, resume=True, log=lambda s: None)

    def history(name):
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    a, b = history("straight"), history("killed")
    assert any("lr_scale" in h for h in a[:2]), "the schedule acted before the kill, so resume must restore it"
    assert a[-1].get("stopped") and len(a) < 5, "the lr fell below the floor: the run stopped early"
    assert [(h["epoch"], h["lr"], h["natural_train_acc"], h["val_robust_acc"], h.get("lr_scale"),
             h.get("reloaded_epoch"), h.get("stopped")) for h in a] == \
           [(h["epoch"], h["lr"], h["natural_train_acc"], h["val_robust_acc"], h.get("lr_scale"),
             h.get("reloaded_epoch"), h.get("stopped")) for h in b]
    assert straight["test"]["clean_acc"] == resumed["test"]["clean_acc"]
    assert straight["test"]["robust_acc"] == resumed["test"]["robust_acc"]
    w_a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    w_b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a), "weights must be bit-identical"
