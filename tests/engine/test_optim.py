"""Optimizers and schedules: warm-up never at 0, schedule shapes, no-decay groups found by module type, the
linear batch-size scaling rule of the lr."""

import math

import pytest
import torch
from torch import nn

from robustft.engine import OptimConfig, build_optimizer, build_scheduler, from_dict, lr_factor
from robustft.engine.optim import resolve_lr
from robustft.errors import UserError


def test_warmup_starts_above_zero_and_reaches_peak():
    f = lr_factor(OptimConfig(schedule="cosine", warmup_epochs=2, warmup_start=0.1), epochs=10)
    assert f(0) == pytest.approx(0.1)
    assert f(1) == pytest.approx(0.55)
    assert f(2) == pytest.approx(1.0)
    assert f(10) == pytest.approx(0.0, abs=1e-9)
    assert all(f(t / 10) > 0 for t in range(0, 100))


def test_multistep_epochs_and_fractions():
    f = lr_factor(OptimConfig(schedule="multistep", milestones=[30, 50], gamma=0.1), epochs=60)
    assert [f(29.9), f(30), f(49.9), f(50)] == pytest.approx([1, 0.1, 0.1, 0.01])
    g = lr_factor(OptimConfig(schedule="multistep", milestones=[0.5]), epochs=10)
    assert g(4.99) == 1 and g(5) == pytest.approx(0.1)


def test_onecycle_shape():
    f = lr_factor(OptimConfig(schedule="onecycle", onecycle_peak=0.3), epochs=10)
    assert f(0) == pytest.approx(0.04) and f(3) == pytest.approx(1.0) and f(10) == pytest.approx(0.0)
    assert f(1.5) < f(3) and f(6) < f(3)


def test_scheduler_is_stepped_per_iteration():
    model = nn.Linear(2, 2)
    cfg = OptimConfig(lr=1.0, schedule="cosine")
    opt = build_optimizer(model, model.named_parameters(), cfg)
    sched = build_scheduler(opt, cfg, epochs=2, iters_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 1.0 and lrs[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))


def test_no_decay_groups_by_module_type():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))
    opt = build_optimizer(model, model.named_parameters(), OptimConfig(weight_decay=0.1, no_decay_norm_bias=True))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, BN weight+bias, linear bias


def test_adamw_and_frozen_params():
    model = nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    opt = build_optimizer(model, model.named_parameters(), OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05))
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 0.05
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(model.weight)]


def test_lr_scale_batch_is_the_linear_scaling_rule():
    """RoLI's official ``BASE_LR / 256 * BATCH_SIZE``: lr 0.05 given for 256 images trains at 0.0125 at batch 64."""
    cfg = OptimConfig(lr=0.05, lr_scale_batch=256)
    resolved = resolve_lr(cfg, 64)
    assert resolved.lr == 0.0125 and resolved.lr_scale_batch is None and cfg.lr == 0.05
    plain = OptimConfig(lr=0.05)
    assert resolve_lr(plain, 64) is plain, "no rule: the lr as it is"
    model = nn.Linear(2, 2)
    assert build_optimizer(model, model.named_parameters(), resolved).param_groups[0]["lr"] == 0.0125
    with pytest.raises(ValueError, match="resolve_lr"):  # the rule cannot be skipped silently
        build_optimizer(model, model.named_parameters(), cfg)
    with pytest.raises(UserError, match="lr_scale_batch"):
        from_dict(OptimConfig, {"lr_scale_batch": 0})
