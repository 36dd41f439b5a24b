"""MRC: the norm bound holds, MRC ≥ 0, the fast (downstream-subgraph) path equals the reference procedure."""

import json

import pytest
import torch
from torch import nn

from robustft.cli import main
from robustft.data import ArrayDataset
from robustft.errors import UserError
from robustft.eval.mrc import candidate_modules, mrc_examples, mrc_profile, project_relative
from robustft.models import create_model, save_state_dict
from support import robustft_cmd, run_ok, tiny_resnet, with_source_bn_stats


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    """A tiny CIFAR ResNet-20 (residual shortcuts, 1x1 downsample convs, a linear head) with non-trivial BN stats."""
    return tiny_resnet().eval()


@pytest.fixture(scope="module")
def examples() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(40, 3, 16, 16, generator=g), torch.randint(0, 4, (40,), generator=g)


@pytest.fixture(scope="module")
def profiles(resnet, examples):
    """Fast and reference profiles on the same examples and iterations; chunks of 16 (40 = 16 + 16 + 8)."""
    x, y = examples
    kw = dict(steps=3, lr=5.0, batch_size=16, keep_delta=True)
    return mrc_profile(resnet, x, y, impl="fast", **kw), mrc_profile(resnet, x, y, impl="reference", **kw)


def test_every_conv_and_linear_in_call_order(resnet, examples):
    names = candidate_modules(resnet, examples[0][:1])
    expected = [n for n, m in resnet.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert sorted(names) == sorted(expected) and len(names) == 22
    assert names[0] == "conv1" and names[-1] == "fc"
    assert names.index("layer2.0.downsample.0") > names.index("layer2.0.conv1")


def test_delta_respects_the_relative_norm_bound(resnet, profiles):
    fast, ref = profiles
    named = dict(resnet.named_modules())
    on_boundary = 0
    for prof in (fast, ref):
        for m in prof.modules:
            w = named[m.name].weight
            assert m.delta is not None and m.delta.shape == w.shape
            radius = prof.eps * w.norm().item()
            assert m.delta.norm().item() <= radius * (1 + 1e-5), m.name
            assert m.delta_norm == pytest.approx(m.delta.norm().item())
            on_boundary += m.delta.norm().item() > 0.99 * radius
    assert on_boundary > 10, "lr 5 should push most modules to the boundary, so the projection is exercised"


def test_mrc_is_the_best_iterate_gain(profiles):
    fast, _ = profiles
    for m in fast.modules:
        assert m.mrc == pytest.approx(m.max_loss - fast.origin_loss, abs=1e-6) or m.best_step == 0
        assert 0 <= m.best_step <= fast.steps
        if m.best_step == 0:
            assert m.mrc == 0 and m.delta_norm == 0
    assert max(fast.scores.values()) > 0


def test_fast_matches_reference(profiles):
    fast, ref = profiles
    assert all(m.impl == "fast" for m in fast.modules), [m.note for m in fast.modules if m.impl != "fast"]
    assert all(m.impl == "reference" for m in ref.modules)
    assert fast.origin_loss == ref.origin_loss
    for a, b in zip(fast.modules, ref.modules, strict=True):
        assert a.name == b.name
        assert a.mrc == pytest.approx(b.mrc, rel=1e-4, abs=1e-5), a.name
        assert a.acc_at_max == pytest.approx(b.acc_at_max)
        assert torch.allclose(a.delta, b.delta, rtol=1e-3, atol=1e-6), a.name
    assert fast.ranking() == ref.ranking()
    assert fast.lowest() == ref.lowest()


def _official_regime(model: nn.Module, name: str, x: torch.Tensor, y: torch.Tensor, *, eps: float, epochs: int,
                     lr: float, batch: int, seed: int) -> float:
    """The official ``layer_sharpness`` regime written out plainly: a copy of the model in eval mode, only ``name``'s
    weight trainable, ``torch.optim.SGD(lr)`` on −CE over shuffled mini-batches of ``batch``, the relative projection
    after each epoch, the loss evaluated after it; MRC = max loss (Δw = 0 included) − the unperturbed loss."""
    import copy

    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    weight = model.get_submodule(name).weight
    weight.requires_grad_(True)
    init = weight.detach().clone()
    opt = torch.optim.SGD([weight], lr=lr)
    criterion = nn.CrossEntropyLoss()
    with torch.no_grad():
        origin = criterion(model(x), y).item()
    best = origin
    g = torch.Generator().manual_seed(seed)  # the same shuffles as robustft's (the official is unseeded)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            (-criterion(model(x[idx]), y[idx])).backward()
            opt.step()
        with torch.no_grad():
            diff = weight - init
            times = diff.norm() / init.norm()
            if times > eps:
                weight.copy_(init + diff / times * eps)
            best = max(best, criterion(model(x), y).item())
    return best - origin


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_official_minibatch_regime_equals_a_hand_written_reference(resnet, examples, impl):
    """40 examples in mini-batches of 16 (16 + 16 + 8 SGD steps per projection), memory chunks of 8, the official
    lr 1 (at lr 5 the ascent is chaotic enough that float rounding of 8- vs 16-example forwards shows at 1e-3)."""
    x, y = examples
    names = ["conv1", "layer1.0.conv2", "layer2.0.downsample.0", "layer3.2.conv1", "fc"]
    prof = mrc_profile(resnet, x, y, modules=names, eps=0.1, steps=3, lr=1.0, batch_size=8, impl=impl,
                       minibatch=16, seed=3)
    assert prof.minibatch == 16 and prof.to_dict()["minibatch"] == 16
    for m in prof.modules:
        expected = _official_regime(resnet, m.name, x, y, eps=0.1, epochs=3, lr=1.0, batch=16, seed=3)
        assert m.mrc == pytest.approx(expected, rel=1e-4, abs=1e-6), m.name
    full = mrc_profile(resnet, x, y, modules=names, eps=0.1, steps=3, lr=1.0, batch_size=8, impl=impl)
    assert any(abs(a.mrc - b.mrc) > 1e-3 for a, b in zip(prof.modules, full.modules, strict=True)), \
        "with more examples than one mini-batch the two regimes differ"
    one_batch = mrc_profile(resnet, x, y, modules=names, eps=0.1, steps=3, lr=1.0, batch_size=8, impl=impl,
                            minibatch=40)
    assert [m.mrc for m in one_batch.modules] == pytest.approx([m.mrc for m in full.modules], rel=1e-5, abs=1e-7), \
        "one mini-batch holding every example is the full-batch regime"


def test_weights_untouched_and_modes_restored(resnet, examples):
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    resnet.train()
    try:
        mrc_profile(resnet, *examples, modules=["layer1.0.conv1", "fc"], steps=2)
        assert resnet.training, "the model's mode is restored"
        assert all(torch.equal(before[k], v) for k, v in resnet.state_dict().items())
    finally:
        resnet.eval()


def test_projection():
    w = torch.ones(10)  # ‖w‖ = √10
    inside = torch.full((10,), 0.01)
    assert torch.equal(project_relative(inside, w, 0.1), inside)
    out = project_relative(torch.ones(10), w, 0.1)
    assert out.norm().item() == pytest.approx(0.1 * w.norm().item())


class _Shared(nn.Module):
    """Calls one conv twice (the fast path cannot cut there) and branches on data (cannot be traced at all)."""

    def __init__(self, branch: bool) -> None:
        super().__init__()
        self.branch = branch
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.conv(x)).relu()
        if self.branch and x.sum() > 0:  # data-dependent control flow
            x = x * 2
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("branch", [False, True], ids=["shared-module", "untraceable"])
def test_fallback_to_reference(branch, examples):
    torch.manual_seed(0)
    model = _Shared(branch).eval()
    x, y = examples
    fast = mrc_profile(model, x, y, steps=2, impl="fast")
    ref = mrc_profile(model, x, y, steps=2, impl="reference")
    conv = next(m for m in fast.modules if m.name == "conv")
    assert conv.impl == "reference" and "reference" in conv.note
    head = next(m for m in fast.modules if m.name == "head")
    assert head.impl == ("reference" if branch else "fast")
    assert fast.scores == pytest.approx(ref.scores, rel=1e-4, abs=1e-6)


def test_fast_path_traces_the_pooled_cell_head_of_rifts_64_px_nets():
    """RiFT's Tiny-ImageNet nets (img_size 64: the head reads 2x2 pooled cells) take the fast path for every module,
    with the reference procedure's MRC."""
    torch.manual_seed(0)
    model = with_source_bn_stats(create_model("cifar_resnet18", num_classes=4, img_size=64, widths=(4, 4, 4, 4)))
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(12, 3, 32, 32, generator=g), torch.randint(0, 4, (12,), generator=g)
    fast = mrc_profile(model.eval(), x, y, steps=2, lr=5.0, impl="fast")
    ref = mrc_profile(model, x, y, steps=2, lr=5.0, impl="reference")
    assert {m.impl for m in fast.modules} == {"fast"} and len(fast.modules) == 21
    assert fast.scores == pytest.approx(ref.scores, rel=1e-4, abs=1e-6)


def test_examples_from_data_are_deterministic_and_in_the_ball(resnet):
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randint(0, 256, (30, 3, 16, 16), generator=g, dtype=torch.uint8),
                        torch.randint(0, 4, (30,), generator=g), list("abcd"), "rand")
    x1, y1 = mrc_examples(resnet, data, 12, steps=2, seed=3, batch_size=5)
    x2, _ = mrc_examples(resnet, data, 12, steps=2, seed=3, batch_size=5)
    assert x1.shape == (12, 3, 16, 16) and torch.equal(x1, x2)
    clean = data.x[torch.round(torch.arange(12) * 30 / 12).long()].float() / 255
    assert (x1 - clean).abs().max() <= 8 / 255 + 1e-6 and x1.min() >= 0 and x1.max() <= 1
    assert torch.equal(y1, data.y[torch.round(torch.arange(12) * 30 / 12).long()])


def test_bad_arguments(resnet, examples):
    with pytest.raises(UserError, match="not Conv2d/Linear"):
        mrc_profile(resnet, *examples, modules=["layer1.0.bn1"])
    with pytest.raises(UserError, match="implementation"):
        mrc_profile(resnet, *examples, impl="faster")


def test_cli_mrc_writes_profile(tiny_task, tmp_path, capsys):
    data, _ = tiny_task
    ckpt = tmp_path / "model.pt"  # `robustft mrc` builds the default width
    torch.manual_seed(0)
    save_state_dict(create_model("cifar_resnet20", num_classes=4), ckpt)
    out = tmp_path / "mrc"
    args = ["mrc", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(data), "--n", "8",
            "--steps", "1", "--attack-steps", "1", "--out-dir", str(out)]
    proc = run_ok(robustft_cmd(*args))
    record = json.loads((out / "mrc.json").read_text())
    assert len(record["modules"]) == 22 and record["n"] == 8 and record["examples"]["split"] == "train"
    assert record["chosen"] == record["lowest"] == record["ranking"][0]
    assert f"lowest MRC: {record['lowest']}" in proc.stdout and (out / "mrc.txt").is_file()
    assert main([*args, "--split", "test"]) == 2
    assert "never from the test split" in capsys.readouterr().err


def test_rift_the_mrc_command_and_the_measurement_share_one_set_of_defaults():
    import dataclasses
    import inspect

    from robustft.cli import build_parser
    from robustft.methods.base import method_config
    from robustft.methods.rift import RiftConfig
    from robustft.mrc_config import MRC_DEFAULTS

    defaults = dataclasses.asdict(MRC_DEFAULTS)
    rift = RiftConfig()
    assert {k: getattr(rift, f"mrc_{k}") for k in defaults} == defaults
    args = build_parser().parse_args(["mrc", "--arch", "cifar_resnet20", "--data", "cifar10"])
    assert {k: getattr(args, k) for k in defaults} == defaults
    profile = {k: p.default for k, p in inspect.signature(mrc_profile).parameters.items()}
    examples = {k: p.default for k, p in inspect.signature(mrc_examples).parameters.items()}
    assert {k: profile[k] for k in ("eps", "steps", "lr", "minibatch", "batch_size", "impl")} == {
        k: defaults[k] for k in ("eps", "steps", "lr", "minibatch", "batch_size", "impl")}
    assert (examples["n"], examples["eps"], examples["steps"], examples["step_size"]) == (
        defaults["n"], defaults["attack_eps"], defaults["attack_steps"], defaults["attack_step_size"])
    assert (defaults["attack_eps"], defaults["attack_step_size"]) == (8 / 255, 2 / 255), "budgets are numbers"
    given = method_config("rift", {"mrc_attack_eps": "4/255"})
    assert given.mrc_attack_eps == 4 / 255, "RiFT's option takes a fraction and holds the number"
    args = build_parser().parse_args(["mrc", "--arch", "a", "--data", "d", "--attack-eps", "4/255"])
    assert args.attack_eps == 4 / 255
