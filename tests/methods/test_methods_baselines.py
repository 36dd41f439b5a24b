"""Baseline methods: which parameters train, which modes modules are in, what each objective computes."""

import pytest
import torch
import torch.nn.functional as F

from robustft.attacks import PGD
from robustft.errors import UserError
from robustft.methods import create_method, list_methods, trades_loss
from robustft.models import create_model

# one table drives the structural tests: method -> (trainable parameter names predicate, objective)
CASES = {
    "standard": (lambda n: True, "clean"),
    "pgd_at": (lambda n: True, "pgd"),
    "trades": (lambda n: True, "trades"),
    "linear_probe": (lambda n: n.startswith("fc."), "clean"),
    "adv_linear_probe": (lambda n: n.startswith("fc."), "pgd"),
}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("cifar_resnet20", num_classes=5, width=4)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 3, 32, 32, generator=g), torch.randint(0, 5, (16,), generator=g)


def test_all_baselines_registered():
    assert set(CASES) | {"lp_ft", "partial"} <= set(list_methods())


@pytest.mark.parametrize("name", list(CASES))
def test_trainable_sets_and_one_step(name, model, batch):
    should_train, objective = CASES[name]
    method = create_method(name, PGD(steps=2))
    assert method.cfg.objective == objective
    model = method.prepare(model)
    names = {n for n, _ in method.trainable_parameters(model)}
    assert names == {n for n, _ in model.named_parameters() if should_train(n)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method.train_mode(model)
    opt = torch.optim.SGD([p for _, p in method.trainable_parameters(model)], lr=0.1)
    loss, stats = method.loss(model, *batch, torch.Generator().manual_seed(0))
    loss.backward()
    opt.step()
    after = model.state_dict()
    for k in before:
        changed = not torch.equal(before[k], after[k])
        if k in names:
            assert changed, f"{k} should train"
        elif k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            # BN statistics move only where the method trains the backbone in train mode
            assert changed == (name not in ("linear_probe", "adv_linear_probe")), k
        else:
            assert not changed, f"{k} must stay frozen"
    assert torch.isfinite(loss) and set(stats) >= {"loss"}


def test_linear_probe_keeps_backbone_in_eval(model):
    method = create_method("adv_linear_probe", PGD(steps=1))
    method.train_mode(method.prepare(model))
    assert model.fc.training
    assert not any(m.training for n, m in model.named_modules() if not n.startswith("fc") and n)


def test_trades_attack_uses_kl_and_loss_matches_definition(model, batch):
    method = create_method("trades", PGD(steps=2), beta=3.0)
    assert method.attack.loss == "kl"
    x, y = batch
    model.eval()  # deterministic forward for the comparison
    x_adv = (x + 0.01).clamp(0, 1)
    loss, _ = trades_loss(model, x, x_adv, y, beta=3.0)
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y) + 3.0 * F.kl_div(F.log_softmax(model(x_adv), 1),
                                                                 F.softmax(model(x), 1), reduction="batchmean")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_partial_patterns_and_frozen_bn_stats(model, batch):
    method = create_method("partial", PGD(steps=1), patterns=["layer3.*", "fc.*"], objective="clean")
    method.prepare(model)
    trained = {n for n, _ in method.trainable_parameters(model)}
    assert trained == {n for n, _ in model.named_parameters() if n.startswith(("layer3.", "fc."))}
    method.train_mode(model)
    assert model.layer3[0].bn1.training and not model.layer1[0].bn1.training and not model.bn1.training
    with pytest.raises(UserError, match="matches no parameter"):
        create_method("partial", PGD(), patterns=["nope.*"]).prepare(model)


def test_lp_ft_has_two_stages():
    method = create_method("lp_ft", PGD(steps=1), lp_epochs=2, lp_lr=0.1, lp_objective="trades")
    lp, ft = method.stages()
    assert (lp.name, ft.name) == ("lp", "ft")
    assert lp.overrides == {"train.epochs": 2, "optim.lr": 0.1, "optim.no_decay_norm_bias": True}
    assert lp.method.attack.loss == "kl" and ft.method.attack.loss == "ce"


def test_bad_method_options():
    with pytest.raises(UserError, match="unknown method"):
        create_method("twinz", PGD())
    with pytest.raises(UserError, match="unknown config key.*method_args.lam"):
        create_method("pgd_at", PGD(), lam=1.0)
    with pytest.raises(UserError, match="objective"):
        create_method("standard", PGD(), objective="hinge")


def _official_trades_ce_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
                             steps: int, beta: float) -> torch.Tensor:
    """Transcription of the TWINS repository's AT_cifar/train-TRADES.py step with its FastGradientSignUntargeted
    (random_start off here for a deterministic comparison): the attack maximizes cross-entropy with the model in eval
    mode, then, in train mode, CE(f(x), y) + β · (1/B) · KL-sum(f(x) ‖ f(x_adv))."""
    adv = x.clone().requires_grad_(True)
    model.eval()
    for _ in range(steps):
        grad = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)[0]
        adv = adv.detach() + alpha * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1).requires_grad_(True)
    model.train()
    output = model(adv.detach())
    output_nature = model(x)
    kl = torch.nn.KLDivLoss(reduction="sum")(F.log_softmax(output, dim=1), F.softmax(output_nature, dim=1))
    return F.cross_entropy(output_nature, y) + beta * kl / len(x)


def test_trades_ce_attack_matches_the_official_twins_baseline_step(model, batch):
    """trades with ce_attack: the same loss and parameter gradients as the official TRADES baseline of TWINS."""
    import copy

    x, y = batch
    official_model = copy.deepcopy(model)
    method = create_method("trades", PGD(eps=8 / 255, steps=3, step_size=2 / 255, random_start=False), beta=6.0,
                           ce_attack=True)
    assert method.attack.loss == "ce"
    model = method.prepare(model)
    method.train_mode(model)
    loss, _ = method.loss(model, x, y)
    loss.backward()
    expected = _official_trades_ce_step(official_model, x, y, 8 / 255, 2 / 255, 3, 6.0)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    for (name, p), (_, q) in zip(model.named_parameters(), official_model.named_parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-6), name
    # the default TRADES attack (KL) computes a different step: the switch is what makes them equal
    kl_method = create_method("trades", PGD(eps=8 / 255, steps=3, step_size=2 / 255, random_start=False), beta=6.0)
    assert kl_method.attack.loss == "kl"
    assert kl_method.loss(model, x, y)[0].item() != pytest.approx(expected.item(), rel=1e-4)


def test_ce_attack_is_an_option_of_trades_only_among_the_baselines():
    with pytest.raises(UserError, match="ce_attack"):
        create_method("pgd_at", PGD(), ce_attack=True)
