"""RiFT: only the chosen weight trains (BN frozen unless official_bn), interpolation endpoints are exact, α* follows
the rule, MRC in setup picks the lowest module, and a whole run through the CLI records module, α* and the curve."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import robustft.methods.rift  # noqa: F401  (registers "rift" until robustft.methods imports it)
from robustft.attacks import PGD
from robustft.data import ArrayDataset
from robustft.engine import from_dict
from robustft.engine.config import RunConfig
from robustft.errors import UserError
from robustft.methods import RunContext, create_method
from robustft.methods.rift import choose_alpha, interpolate_state
from robustft.models import create_model
from support import finetune_args, robustft_cmd, run_ok, tiny_resnet

MODULE = "layer2.0.conv1"


@pytest.fixture
def source() -> nn.Module:
    return tiny_resnet()


def _data(n: int, seed: int) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    return ArrayDataset(torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8),
                        torch.arange(n) % 4, list("abcd"), "rand")


def _train(method, model, steps=3):
    """A few optimizer steps as the engine takes them (SGD with momentum and weight decay, the paper's)."""
    model = method.prepare(model)
    opt = torch.optim.SGD([p for _, p in method.trainable_parameters(model)], lr=0.05, momentum=0.9,
                          weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = torch.rand(16, 3, 16, 16, generator=g), torch.randint(0, 4, (16,), generator=g)
        method.train_mode(model)
        loss, _ = method.loss(model, x, y, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("official_bn", [False, True], ids=["frozen-bn", "official-bn"])
def test_only_the_chosen_tensor_changes(source, official_bn):
    before = {k: v.clone() for k, v in source.state_dict().items()}
    method = create_method("rift", PGD(), module=MODULE, official_bn=official_bn)
    assert method.cfg.objective == "clean"
    model = _train(method, source)
    assert [n for n, _ in method.trainable_parameters(model)] == [f"{MODULE}.weight"]
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    bn_buffers = {k for k in changed if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert f"{MODULE}.weight" in changed
    if official_bn:
        assert changed - bn_buffers == {f"{MODULE}.weight"}
        assert len(bn_buffers) == 3 * sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()), \
            "train-mode BN: every running statistic drifts"
    else:
        assert changed == {f"{MODULE}.weight"}, "frozen BN: nothing but the chosen weight moves"


def test_interpolation_endpoints_reproduce_logits(source):
    at = {k: v.clone() for k, v in source.state_dict().items()}
    method = create_method("rift", PGD(), module=MODULE, official_bn=True)
    model = _train(method, source).eval()
    ft = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(6, 3, 16, 16)
    reference = create_model("cifar_resnet20", num_classes=4, width=4).eval()
    logits = {}
    for name, state in (("at", at), ("ft", ft)):
        reference.load_state_dict(state)
        with torch.no_grad():
            logits[name] = reference(x)
    with torch.no_grad():
        model.load_state_dict(interpolate_state(at, ft, 0.0))
        assert torch.equal(model(x), logits["at"])
        model.load_state_dict(interpolate_state(at, ft, 1.0))
        assert torch.equal(model(x), logits["ft"])
        half = interpolate_state(at, ft, 0.5)
        assert torch.allclose(half[f"{MODULE}.weight"], (at[f"{MODULE}.weight"] + ft[f"{MODULE}.weight"]) / 2)
        assert torch.equal(half["conv1.weight"], at["conv1.weight"])
        assert half["bn1.num_batches_tracked"].dtype == torch.int64


def _curve(*rows):
    return [{"alpha": a, "val_clean_acc": c, "val_robust_acc": r} for a, c, r in rows]


def test_alpha_rule():
    # clean rises with α, robust falls; tolerance 0.001 = 0.1 points below α=0's 0.500
    curve = _curve((0.0, 0.80, 0.500), (0.2, 0.81, 0.5005), (0.4, 0.82, 0.499), (0.6, 0.83, 0.4989),
                   (0.8, 0.84, 0.47), (1.0, 0.85, 0.45))
    assert choose_alpha(curve, 0.001) == 0.4, "0.499 is exactly at the floor (admissible); 0.4989 is below"
    assert choose_alpha(curve, 0.0) == 0.2
    assert choose_alpha(curve, 0.05) == 1.0
    # nothing beats α=0 robustly and clean-wise: α=0
    assert choose_alpha(_curve((0.0, 0.9, 0.5), (0.5, 0.95, 0.3), (1.0, 0.99, 0.2)), 0.001) == 0.0
    # clean ties: the higher robust accuracy, then the smaller α
    assert choose_alpha(_curve((0.0, 0.8, 0.5), (0.3, 0.85, 0.50), (0.6, 0.85, 0.51), (0.9, 0.85, 0.51)),
                        0.001) == 0.6
    # accuracies are k/n fractions: 0.499 arrives as 499/1000 and must still count as at the floor
    assert choose_alpha(_curve((0.0, 0.5, 500 / 1000), (0.5, 0.6, 499 / 1000)), 0.001) == 0.5
    with pytest.raises(ValueError, match="α = 0"):
        choose_alpha(_curve((0.5, 0.6, 0.4)), 0.001)


def test_config_validation():
    method = create_method("rift", PGD(), alphas=[1.0, 0.5])
    assert method.cfg.alphas == [0.0, 0.5, 1.0], "α = 0 (the baseline of the rule) is always evaluated"
    with pytest.raises(UserError, match="alphas"):
        create_method("rift", PGD(), alphas=[1.5])
    with pytest.raises(UserError, match="mrc_impl"):
        create_method("rift", PGD(), mrc_impl="slow")
    with pytest.raises(UserError, match="not a Conv2d/Linear"):
        create_method("rift", PGD(), module="layer1.0.bn1").prepare(
            create_model("cifar_resnet20", num_classes=4, width=4))


def _ctx(tmp_path: Path) -> RunContext:
    cfg = from_dict(RunConfig, {"method": "rift", "data": {"eval_batch_size": 16},
                                "eval": {"val_steps": 1}, "train": {"channels_last": False}})
    return RunContext(train=_data(24, 0), val=_data(12, 1), cfg=cfg, run_dir=tmp_path, source_state={},
                      device=torch.device("cpu"), log=lambda s: None)


def test_setup_picks_lowest_mrc_and_finalize_interpolates(source, tmp_path):
    ctx = _ctx(tmp_path)
    ctx.source_state = {k: v.clone() for k, v in source.state_dict().items()}
    method = create_method("rift", PGD(steps=1), mrc_n=8, mrc_steps=2, mrc_attack_steps=1, alphas=[0.5, 1.0])
    method.setup(source, ctx)
    record = json.loads((tmp_path / "mrc.json").read_text())
    assert method.module == record["chosen"] == record["lowest"] == min(record["modules"], key=lambda m: m["mrc"])[
        "name"]
    assert record["n"] == 8 and len(record["modules"]) == 22 and (tmp_path / "mrc.txt").is_file()
    model = method.prepare(source)
    with torch.no_grad():  # stand-in for fine-tuning: move the chosen weight
        dict(model.named_modules())[method.module].weight.mul_(1.5)
    ft = {k: v.clone() for k, v in model.state_dict().items()}
    out = method.finalize(model, ctx)
    curve = json.loads((tmp_path / "alpha_curve.json").read_text())
    assert [r["alpha"] for r in curve["curve"]] == [0.0, 0.5, 1.0]
    assert curve["interpolated"] == [f"{method.module}.weight"]
    alpha = curve["alpha"]
    assert alpha == choose_alpha(curve["curve"], 0.001)
    expected = interpolate_state(ctx.source_state, ft, alpha)
    assert all(torch.equal(v, expected[k]) for k, v in out.state_dict().items())
    rift = method.results()["rift"]
    assert rift["module"] == method.module and rift["alpha"] == alpha and len(rift["alpha_curve"]) == 3
    assert rift["module_from"] == "mrc" and set(rift["mrc"]["scores"]) == {m["name"] for m in record["modules"]}


def test_plots(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    from robustft.report import plot_alpha_curves, plot_mrc

    curve = _curve((0.0, 0.8, 0.5), (0.5, 0.82, 0.5), (1.0, 0.85, 0.45))
    profile = {"eps": 0.1, "steps": 10, "n": 8, "lowest": "b",
               "modules": [{"name": "a", "mrc": 1.0}, {"name": "b", "mrc": 0.1}]}
    for path in (plot_alpha_curves(curve, tmp_path / "a.png", chosen=0.5, tolerance=0.001),
                 plot_mrc(profile, tmp_path / "m.png")):
        pixels = matplotlib.image.imread(path)[..., :3]
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100, "a readable PNG of a real figure size"
        assert (pixels < 0.5).mean() > 0.005, "something is drawn (not a blank canvas)"


def test_end_to_end_cli(tiny_task, tmp_path):
    data, ckpt = tiny_task
    run_ok(robustft_cmd(*finetune_args(data, ckpt, tmp_path, "rift", "--method", "rift", "--epochs", "1",
                                    "--set", "method_args.mrc_n=16", "--set", "method_args.mrc_steps=2",
                                    "--set", "method_args.mrc_attack_steps=2",
                                    "--set", "method_args.alphas=[0.0, 0.5, 1.0]", "--set", "eval.select=clean_acc",
                                    "--set", "optim.lr=0.001", "--set", "eval.corruptions=[gaussian_noise,contrast]",
                                    "--set", "eval.corruption_severities=[1]", "--set", "eval.test_source=true")))
    run_dir = tmp_path / "rift"
    mrc = json.loads((run_dir / "mrc.json").read_text())
    curve = json.loads((run_dir / "alpha_curve.json").read_text())
    assert curve["module"] == mrc["chosen"] and [r["alpha"] for r in curve["curve"]] == [0.0, 0.5, 1.0]
    results = json.loads((run_dir / "results.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(h["rift_rel_change"] > 0 for h in history), "the chosen weight moves every epoch"
    for record in (results, results["test_source"]):
        assert {"clean_acc", "robust_acc"} <= set(record["test"])
        assert set(record["test_corruptions"]["accuracy"]) == {"gaussian_noise", "contrast"}
    rift = results["rift"]
    assert rift["module"] == mrc["chosen"] and rift["alpha"] == curve["alpha"]
    assert rift["alpha_curve"] == curve["curve"]


class _Killed(BaseException):
    """Stands for a kill between two epochs."""


def test_a_resumed_run_keeps_its_mrc_choice_and_does_not_measure_again(tiny_task, tmp_path, monkeypatch):
    from robustft.cli import main
    from robustft.methods import rift

    data, ckpt = tiny_task
    calls = []
    profile = rift.mrc_profile
    monkeypatch.setattr(rift, "mrc_profile", lambda *a, **kw: calls.append(1) or profile(*a, **kw))

    def args(name: str) -> list[str]:
        return finetune_args(data, ckpt, tmp_path, name, "--method", "rift", "--epochs", "2",
                             "--set", "method_args.mrc_n=16", "--set", "method_args.mrc_steps=2",
                             "--set", "method_args.mrc_attack_steps=2", "--set", "method_args.alphas=[0.0, 1.0]",
                             "--set", "optim.lr=0.001")

    assert main(args("straight")) == 0 and len(calls) == 1
    epoch_end = rift.Rift.epoch_end

    def killed_in_epoch_2(self, model, history):
        if len(history) == 2:
            raise _Killed
        return epoch_end(self, model, history)

    monkeypatch.setattr(rift.Rift, "epoch_end", killed_in_epoch_2)
    with pytest.raises(_Killed):
        main(args("killed"))
    saved = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert len(calls) == 2 and saved["epoch"] == 1
    monkeypatch.setattr(rift.Rift, "epoch_end", epoch_end)
    assert main([*args("killed"), "--resume"]) == 0
    assert len(calls) == 2, "the resumed run took its module from the checkpoint, not from MRC measured again"
    straight, resumed = (json.loads((tmp_path / n / "results.json").read_text())["rift"]
                         for n in ("straight", "killed"))
    assert resumed["mrc"] == saved["method"]["record"]["mrc"], "the MRC record (wall time too) is the first one's"
    for record in (straight, resumed):
        record["mrc"].pop("wall_s")
    assert resumed == straight and resumed["module_from"] == "mrc"
    w_a, w_b = (torch.load(tmp_path / n / "model.pt", weights_only=True) for n in ("straight", "killed"))
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a), "weights must be bit-identical"
