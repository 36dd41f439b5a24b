"""PGD/FGSM: threat-model constraints, loss increase, restarts, mode handling, ε parsing."""

import pytest
import torch
import torch.nn.functional as F

from robustft.attacks import PGD, eval_mode, fgsm, parse_eps
from robustft.errors import UserError


def _lp(t: torch.Tensor, norm: str) -> torch.Tensor:
    flat = t.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
@pytest.mark.parametrize("loss", ["ce", "kl"])
@pytest.mark.parametrize("restarts", [1, 3])
def test_pgd_stays_in_ball_and_box(tiny_model, batch, norm, eps, loss, restarts):
    x, y = batch
    x = x.clone()
    x[:4] = 0.0  # samples on the box boundary must stay inside [0,1]
    x[4:8] = 1.0
    attack = PGD(eps=eps, steps=5, norm=norm, loss=loss, restarts=restarts)
    x_adv = attack.perturb(tiny_model, x, y, generator=torch.Generator().manual_seed(0))
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (_lp(x_adv - x, norm) <= eps * (1 + 1e-5)).all()
    assert (_lp(x_adv - x, norm) > 0).any()


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_pgd_raises_the_loss(tiny_model, batch, norm, eps):
    x, y = batch
    x_adv = PGD(eps=eps, steps=10, norm=norm).perturb(tiny_model, x, y, generator=torch.Generator().manual_seed(0))
    noise = PGD(eps=eps, steps=1, step_size=0.0, norm=norm)._init_delta(x, torch.Generator().manual_seed(1))
    with torch.no_grad():
        clean = F.cross_entropy(tiny_model(x), y, reduction="none")
        adv = F.cross_entropy(tiny_model(x_adv), y, reduction="none")
        rand = F.cross_entropy(tiny_model(x + noise), y, reduction="none")
    assert (adv > clean).float().mean() >= 0.95
    # gradient ascent must beat a random point of the same ball by a wide margin
    assert (adv - clean).mean() > 5 * (rand - clean).abs().mean()


def test_kl_attack_raises_divergence(tiny_model, batch):
    x, y = batch
    x_adv = PGD(eps=8 / 255, steps=10, loss="kl").perturb(tiny_model, x, y, generator=torch.Generator().manual_seed(0))
    noise = PGD(eps=8 / 255)._init_delta(x, torch.Generator().manual_seed(1))
    with torch.no_grad():
        p = F.softmax(tiny_model(x), 1)
        kl = F.kl_div(F.log_softmax(tiny_model(x_adv), 1), p, reduction="none").sum(1)
        kl_rand = F.kl_div(F.log_softmax(tiny_model(x + noise), 1), p, reduction="none").sum(1)
    assert kl.mean() > 10 * kl_rand.mean() > 0


def test_restarts_never_lower_success_per_sample(tiny_model, batch):
    x, y = batch
    x = x.repeat(4, 1, 1, 1)
    y = y.repeat(4)
    eps = 4 / 255
    outcomes = []
    for restarts in (1, 4):
        x_adv = PGD(eps=eps, steps=3, restarts=restarts).perturb(tiny_model, x, y,
                                                                  generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            logits = tiny_model(x_adv)
        outcomes.append((logits.argmax(1) != y, F.cross_entropy(logits, y, reduction="none")))
    (fooled1, loss1), (fooled4, loss4) = outcomes
    assert (fooled4 | ~fooled1).all(), "a sample fooled by one restart must stay fooled with more"
    unfooled = ~fooled4
    assert (loss4[unfooled] >= loss1[unfooled] - 1e-6).all()
    assert fooled4.sum() >= fooled1.sum()


def test_same_generator_seed_same_examples(tiny_model, batch):
    x, y = batch
    a = PGD(steps=3).perturb(tiny_model, x, y, generator=torch.Generator().manual_seed(3))
    b = PGD(steps=3).perturb(tiny_model, x, y, generator=torch.Generator().manual_seed(3))
    c = PGD(steps=3).perturb(tiny_model, x, y, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_attack_uses_eval_mode_and_restores_each_module(tiny_model, batch):
    x, y = batch
    tiny_model.train()
    tiny_model.features[1].eval()  # e.g. a frozen backbone part kept in eval inside a training model
    seen = []
    bn = tiny_model.features[1]
    hook = tiny_model.fc.register_forward_hook(lambda m, i, o: seen.append(m.training or bn.training))
    stats = tiny_model.features[1].running_mean.clone()
    PGD(steps=2).perturb(tiny_model, x, y)
    hook.remove()
    assert seen and not any(seen), "the attack must run the model in eval mode"
    assert tiny_model.training and tiny_model.fc.training and not tiny_model.features[1].training
    assert torch.equal(stats, tiny_model.features[1].running_mean), "BN statistics must not move during an attack"


def test_attack_leaves_no_parameter_grads(tiny_model, batch):
    x, y = batch
    PGD(steps=2).perturb(tiny_model, x, y)
    assert all(p.grad is None for p in tiny_model.parameters())


def test_fgsm_is_one_full_step(tiny_model, batch):
    x, y = batch
    x = x * 0.5 + 0.25  # away from the box so no clipping
    x_adv = fgsm(eps=4 / 255).perturb(tiny_model, x, y)
    delta = (x_adv - x).abs()
    assert torch.allclose(delta[delta > 0], torch.full_like(delta[delta > 0], 4 / 255), atol=1e-6)


def test_default_step_size():
    assert PGD(eps=8 / 255, steps=10).step_size == pytest.approx(2 / 255)
    assert PGD(eps=8 / 255, steps=20).step_size == pytest.approx(2 / 255)
    assert PGD(eps=8 / 255, steps=3).step_size == pytest.approx(2.5 * 8 / 255 / 3)


def test_eval_mode_context_restores_on_error(tiny_model):
    tiny_model.train()
    with pytest.raises(RuntimeError):
        with eval_mode(tiny_model):
            assert not tiny_model.training
            raise RuntimeError("boom")
    assert tiny_model.training


@pytest.mark.parametrize("text,value", [("8/255", 8 / 255), ("0.5", 0.5), (0.25, 0.25), (" 4/255 ", 4 / 255)])
def test_parse_eps(text, value):
    assert parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["8//255", "abc", "1/0", "-0.1"])
def test_parse_eps_rejects(bad):
    with pytest.raises(UserError):
        parse_eps(bad)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError):
        PGD(norm="l1")
    with pytest.raises(UserError):
        PGD(loss="hinge")
    with pytest.raises(UserError):
        PGD(steps=0)
