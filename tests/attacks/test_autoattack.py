"""AutoAttack adapter over the official pyautoattack package."""

import pytest
import torch

from robustft.attacks import PGD, AutoAttack, create_attack
from robustft.errors import UserError


def test_autoattack_custom_is_in_ball_and_not_weaker_than_clean(tiny_model, batch):
    x, y = batch
    x_adv = AutoAttack(eps=8 / 255, version="custom", attacks=["apgd-ce"]).perturb(tiny_model.to(
        memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last), y)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        clean_ok = tiny_model(x).argmax(1) == y
        adv_ok = tiny_model(x_adv).argmax(1) == y
    assert adv_ok.sum() <= clean_ok.sum()
    assert (adv_ok & ~clean_ok).sum() == 0, "AutoAttack keeps misclassified points as they are"


def test_autoattack_restores_mode(tiny_model, batch):
    x, y = batch
    tiny_model.train()
    AutoAttack(eps=2 / 255, version="custom", attacks=["apgd-ce"]).perturb(tiny_model, x[:4], y[:4])
    assert tiny_model.training


@pytest.mark.parametrize("kwargs", [dict(version="nope"), dict(version="standard", attacks=["apgd-ce"]),
                                    dict(version="custom"), dict(version="custom", attacks=["pgd"]),
                                    dict(norm="l0")])
def test_autoattack_bad_options(kwargs):
    with pytest.raises(UserError):
        AutoAttack(**kwargs)


def test_create_attack_by_name():
    pgd = create_attack("pgd", eps=8 / 255, norm="linf", steps=20)
    assert isinstance(pgd, PGD) and pgd.name == "pgd20" and pgd.step_size == pytest.approx(2 / 255)
    assert create_attack("FGSM", eps=0.1, norm="l2").steps == 1
    assert create_attack("autoattack", eps=0.1, norm="linf").version == "standard"
    with pytest.raises(UserError, match="unknown attack"):
        create_attack("cw", eps=0.1, norm="linf")


def _classifier(n_classes: int) -> torch.nn.Module:
    """A small conv classifier with ``n_classes`` outputs."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, n_classes))


@pytest.mark.parametrize("attack", ["apgd-t", "fab-t"])
def test_autoattack_targets_fit_fewer_than_ten_classes(attack):
    """pyautoattack targets 9 classes: on 4-class data the targeted attacks use the 3 others instead of failing."""
    model = _classifier(4)
    x = torch.rand(6, 3, 8, 8)
    y = model(x).argmax(1)  # every point starts correct, so the attack runs
    x_adv = AutoAttack(eps=8 / 255, version="custom", attacks=[attack]).perturb(model, x, y)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6


def test_autoattack_refuses_dlr_on_too_few_classes():
    """The targeted DLR loss reads the 4th largest logit: 3 classes are refused in one line, not an IndexError."""
    model = _classifier(3)
    x = torch.rand(4, 3, 8, 8)
    with pytest.raises(UserError, match="apgd-t needs at least 4 classes"):
        AutoAttack(eps=8 / 255).perturb(model, x, model(x).argmax(1))
