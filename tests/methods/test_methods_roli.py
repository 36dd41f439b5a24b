"""RoLI / RanLI: the probe leaves the backbone untouched, stage 2 starts from the probed function, each PEFT variant
trains exactly its parameters (all of which learn) in the official modes, LoRA is q/v-only and merges exactly, the
official head init is available, and whole runs work."""

import json
import math
import re
import sys
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from robustft.attacks import PGD
from robustft.errors import UserError
from robustft.methods import LinearProbe, create_method
from robustft.methods.peft import LoRAConv2d, LoRALinear, adapter_modules, lora_layers
from robustft.methods.roli import RoLI, official_head_init
from robustft.models import create_model, load_state_dict_into, save_state_dict
from support import finetune_args, run_ok

VARIANTS = ("full", "bias", "lora", "adapter")
ARCHS = {"cnn": ("cifar_resnet20", dict(width=4)), "vit": ("vit", dict(depth=2, embed_dim=48, num_heads=3)),
         "swin": ("swin", {})}


def _model(kind: str, seed: int = 0) -> nn.Module:
    arch, options = ARCHS[kind]
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=5, **options)
    with torch.no_grad():  # pre-trained-looking BN statistics, so frozen vs adapting statistics is visible
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 5, (n,), generator=g)


def _steps(method, model: nn.Module, n: int = 2, lr: float = 0.05, weight_decay: float = 0.0) -> list[float]:
    """``n`` SGD steps of ``method`` on ``model`` (already prepared); returns the losses."""
    opt = torch.optim.SGD([p for _, p in method.trainable_parameters(model)], lr=lr, momentum=0.9,
                          weight_decay=weight_decay)
    g, losses = torch.Generator().manual_seed(0), []
    for i in range(n):
        method.train_mode(model)
        loss, _ = method.loss(model, *_batch(seed=i), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _peft_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """LoRA A/B and adapter parameters, by module type."""
    ids = {id(p) for m in lora_layers(model) for p in [*m.lora_A.parameters(), *m.lora_B.parameters()]}
    ids |= {id(p) for m in adapter_modules(model) for p in m.parameters()}
    return [(n, p) for n, p in model.named_parameters() if id(p) in ids]


# ---------------------------------------------------------------------------------------------------------------
# config and stages
# ---------------------------------------------------------------------------------------------------------------
def test_registered_stages_and_overrides():
    roli = create_method("roli", PGD(steps=1), peft="lora", lp_epochs=3, lp_lr=0.1, lp_weight_decay=1e-3)
    lp, ft = roli.stages()
    assert (lp.name, ft.name) == ("lp", "ft") and ft.method is roli
    assert isinstance(lp.method, LinearProbe) and lp.method.cfg.objective == "pgd"
    assert lp.overrides == {"optim.name": "sgd", "optim.lr": 0.1, "optim.weight_decay": 1e-3, "train.epochs": 3,
                            "optim.no_decay_norm_bias": True}
    ranli = create_method("ranli", PGD(steps=1), peft="bias")
    assert isinstance(ranli, RoLI) and ranli.cfg.init == "random"
    assert [s.name for s in ranli.stages()] == ["ft"]


@pytest.mark.parametrize(("options", "match"), [
    (dict(peft="prompt"), "peft"), (dict(init="zero"), "init"), (dict(lp_optimizer="adam"), "lp_optimizer"),
    (dict(lp_epochs=0), "lp_epochs"), (dict(lora_rank=0), "lora_rank"), (dict(head_init="kaiming"), "head_init"),
    (dict(adapter_reduction=0), "adapter_reduction"), (dict(stage1_from="/x"), "method_args.stage1_from"),
    (dict(lora_dropout=0.1), "method_args.lora_dropout")])  # gone: the official LoRA dropout never acts
def test_bad_options(options, match):
    with pytest.raises(UserError, match=match):
        create_method("roli", PGD(), **options)


# ---------------------------------------------------------------------------------------------------------------
# stage 1: adversarial linear probing
# ---------------------------------------------------------------------------------------------------------------
def test_stage1_changes_only_the_head():
    model = _model("cnn")
    probe = create_method("roli", PGD(steps=2)).stages()[0].method
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model = probe.prepare(model)
    assert {n for n, _ in probe.trainable_parameters(model)} == {"fc.weight", "fc.bias"}
    _steps(probe, model, n=3, weight_decay=1e-2)
    after = model.state_dict()
    for k, v in before.items():
        if k.startswith("fc."):
            assert not torch.equal(v, after[k]), f"{k} must train"
        else:  # weights, BN statistics and num_batches_tracked: bit-identical
            assert torch.equal(v, after[k]), f"{k} changed in stage 1"


# ---------------------------------------------------------------------------------------------------------------
# stage 2: which parameters train, identity start, gradients, LoRA q/v, merge
# ---------------------------------------------------------------------------------------------------------------
def _expected_trainable(kind: str, peft: str, names: list[str], head: str) -> set[str]:
    """What each variant trains, spelled out by name (the method finds them by module type)."""
    if peft == "full":
        return set(names)
    heads = {f"{head}.weight", f"{head}.bias"}
    if peft == "bias":
        return {n for n in names if n.rpartition(".")[2] == "bias"} | heads
    marker = (".lora_A.", ".lora_B.") if peft == "lora" else (".adapter.",)
    return {n for n in names if any(s in n for s in marker)} | heads


@pytest.mark.parametrize("peft", VARIANTS)
@pytest.mark.parametrize("kind", list(ARCHS))
def test_trainable_parameter_sets(kind, peft):
    model = _model(kind)
    method = create_method("roli", PGD(steps=1), peft=peft)
    model = method.prepare(model)
    names = [n for n, _ in model.named_parameters()]
    trained = {n for n, _ in method.trainable_parameters(model)}
    head = model.pretrained_cfg.classifier
    assert trained == _expected_trainable(kind, peft, names, head)
    if peft == "bias" and kind == "swin":
        assert not any(n.endswith("relative_position_bias_table") for n in trained), "a position table, not a bias"
    if peft == "lora":
        layers = lora_layers(model)
        if kind == "cnn":  # every conv of the backbone: stem, 18 block convs, 2 projection shortcuts
            assert len(layers) == 21 and all(isinstance(m, LoRAConv2d) for m in layers)
        else:
            assert all(isinstance(m, LoRALinear) for m in layers)
            assert len(layers) == (2 if kind == "vit" else 6)  # one fused qkv per block
            assert all(m.slices == ((0, m.base_layer.out_features // 3), (2 * m.base_layer.out_features // 3,
                                                                            m.base_layer.out_features))
                       for m in layers)
    if peft == "adapter":
        assert len(adapter_modules(model)) == {"cnn": 9, "vit": 2, "swin": 6}[kind]
    assert method.prepare(model) is model and {n for n, _ in method.trainable_parameters(model)} == trained, \
        "preparing twice must not wrap the wrappers"


@pytest.mark.parametrize("peft", VARIANTS)
@pytest.mark.parametrize("kind", list(ARCHS))
def test_stage2_starts_from_the_stage1_function(kind, peft):
    """Stage 1 trains a head; stage 2's prepare keeps that head and, with PEFT layers at identity, the same logits."""
    model = _model(kind)
    method = create_method("roli", PGD(steps=1), peft=peft)
    probe = method.stages()[0].method
    _steps(probe, probe.prepare(model), n=2)
    head = {k: v.clone() for k, v in model.get_classifier().state_dict().items()}
    x = _batch(4, seed=5)[0]
    model.eval()
    with torch.no_grad():
        stage1_logits = model(x)
    model = method.prepare(model)
    assert all(torch.equal(v, model.get_classifier().state_dict()[k]) for k, v in head.items())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), stage1_logits)
    losses = _steps(method, model, n=2)  # and stage 2 trains (PGD through the PEFT layers, BN modes, ...)
    assert all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("peft", ["lora", "adapter"])
@pytest.mark.parametrize("kind", list(ARCHS))
def test_every_peft_parameter_learns(kind, peft):
    """The official code zero-initializes both LoRA matrices (and the adapter's down-projection), so their gradients
    stay zero forever. Here B / up get gradients at once, and A / down as soon as B / up have moved."""
    model = _model(kind)
    method = create_method("roli", PGD(steps=1), peft=peft)
    model = method.prepare(model)
    params = _peft_params(model)
    assert params
    method.train_mode(model)
    first = "lora_B" if peft == "lora" else "adapter.up"
    loss, _ = method.loss(model, *_batch(), torch.Generator().manual_seed(0))
    loss.backward()
    for n, p in params:
        if first in n:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{n}: no gradient at step 0"
    torch.optim.SGD([p for _, p in method.trainable_parameters(model)], lr=0.1).step()
    model.zero_grad()
    loss, _ = method.loss(model, *_batch(seed=1), torch.Generator().manual_seed(1))
    loss.backward()
    dead = [n for n, p in params if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, f"PEFT parameters without gradient after one update: {dead}"


def _randomize_lora(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in lora_layers(model):
            for p in [*m.lora_A.parameters(), *m.lora_B.parameters()]:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("kind", ["vit", "swin"])
def test_lora_acts_on_q_and_v_not_k(kind):
    model = _model(kind).eval()
    create_method("roli", PGD(), peft="lora").prepare(model)
    _randomize_lora(model)
    layer = lora_layers(model)[0]
    d = layer.base_layer.out_features // 3
    tokens = torch.randn(2, 7, layer.base_layer.in_features)
    with torch.no_grad():
        out, base = layer(tokens), layer.base_layer(tokens)
    assert torch.equal(out[..., d:2 * d], base[..., d:2 * d]), "k must be untouched"
    assert not torch.allclose(out[..., :d], base[..., :d]) and not torch.allclose(out[..., 2 * d:], base[..., 2 * d:])


@pytest.mark.parametrize("kind", list(ARCHS))
def test_lora_merge_gives_a_plain_model_with_the_same_logits(kind):
    model = _model(kind)
    method = create_method("roli", PGD(), peft="lora")
    model = method.prepare(model)
    _randomize_lora(model)
    x = _batch(4, seed=2)[0]
    model.eval()
    with torch.no_grad():
        expected = model(x)
    merged = method.finalize(model, None).eval()
    assert not lora_layers(merged)
    plain = _model(kind, seed=9).eval()
    load_state_dict_into(plain, merged.state_dict())  # strict: the source architecture's keys exactly
    with torch.no_grad():
        assert torch.allclose(plain(x), expected, atol=1e-5)


@pytest.mark.parametrize("kind", list(ARCHS))
def test_adapter_export_reloads_into_rebuilt_architecture(kind):
    model = _model(kind)
    method = create_method("roli", PGD(), peft="adapter")
    model = method.prepare(model)
    with torch.no_grad():
        for m in adapter_modules(model):
            m.up.weight.normal_(0, 0.1)
    exported = method.finalize(model, None).eval()
    rebuilt = method.export_architecture(_model(kind, seed=9)).eval()
    load_state_dict_into(rebuilt, exported.state_dict())
    x = _batch(4)[0]
    with torch.no_grad():
        assert torch.equal(rebuilt(x), exported(x))


@pytest.mark.parametrize("peft", VARIANTS)
def test_stage2_modes_are_the_official_ones(peft):
    """Official: ``enc.eval()`` for every transfer type but end-to-end; the head trains in train mode."""
    model = _model("cnn")
    method = create_method("roli", PGD(), peft=peft)
    method.train_mode(method.prepare(model))
    head = set(model.fc.modules())
    assert all(m.training == (peft == "full") for m in model.modules() if m not in head)
    assert model.fc.training


@pytest.mark.parametrize("peft", VARIANTS)
def test_frozen_encoder_variants_keep_bn_statistics_and_drop_no_path(peft):
    """bias / lora / adapter: after a training step every BN statistic is bit-identical, and with stochastic depth 0.5
    (and LoRA updates) two forwards in training mode agree; full (end-to-end, train mode) changes both."""
    frozen = peft != "full"
    cnn = create_method("roli", PGD(steps=1), peft=peft).prepare(_model("cnn"))
    before = {k: v.clone() for k, v in cnn.state_dict().items() if "running_" in k or "num_batches" in k}
    _steps(create_method("roli", PGD(steps=1), peft=peft), cnn, n=1)
    after = cnn.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items()) == frozen
    torch.manual_seed(0)
    method = create_method("roli", PGD(steps=1), peft=peft)
    swin = method.prepare(create_model("swin", num_classes=5, drop_path_rate=0.5))
    _randomize_lora(swin)  # LoRA active, so a LoRA dropout would show
    _steps(method, swin, n=1)
    method.train_mode(swin)
    x = _batch(4, seed=3)[0]
    with torch.no_grad():
        torch.manual_seed(1)
        first = swin(x)
        torch.manual_seed(2)
        assert torch.equal(first, swin(x)) == frozen


def _context(init_head: str | None) -> SimpleNamespace:
    """What ``setup`` reads of a run: its config's ``model.init_head`` and a logger."""
    return SimpleNamespace(cfg=SimpleNamespace(model=SimpleNamespace(init_head=init_head)), log=lambda s: None)


def test_official_head_init_on_a_swin_b_sized_head():
    """Kaiming-normal fan-out weight (std sqrt(2 / 10) on a 1024→10 head) and bias exactly −log 99."""
    torch.manual_seed(0)
    head = nn.Linear(1024, 10)
    official_head_init(head)
    assert torch.equal(head.bias, torch.full((10,), -math.log(99)))
    assert head.weight.mean().abs() < 0.02 and head.weight.std().item() == pytest.approx(math.sqrt(2 / 10), rel=0.03)


@pytest.mark.parametrize("name", ["roli", "ranli"])
def test_head_init_official_reinitializes_the_engines_head(name):
    model = _model("cnn")
    create_method(name, PGD(), head_init="official").setup(model, _context(None))
    assert torch.equal(model.fc.bias, torch.full((5,), -math.log(99)))
    untouched = _model("cnn")
    create_method(name, PGD()).setup(untouched, _context(None))
    assert torch.equal(untouched.fc.weight, _model("cnn").fc.weight), "head_init: default keeps the engine's head"
    with pytest.raises(UserError, match="head_init=official.*init_head"):
        create_method("roli", PGD(), head_init="official").setup(_model("cnn"), _context("runs/probe"))


def test_a_given_head_replaces_the_probe_stage():
    method = create_method("roli", PGD())
    method.setup(_model("cnn"), _context(None))
    assert [s.name for s in method.stages()] == ["lp", "ft"]
    method.setup(_model("cnn"), _context("runs/probe"))
    assert [s.name for s in method.stages()] == ["ft"]
    with pytest.raises(UserError, match="ranli.*random head"):
        create_method("ranli", PGD()).setup(_model("cnn"), _context("runs/probe"))


def test_lp_ft_is_roli_full_with_its_own_probe_defaults():
    lp, ft = create_method("lp_ft", PGD(steps=1)).stages()
    assert isinstance(ft.method, RoLI) and ft.method.cfg.peft == "full"
    assert lp.overrides == {"optim.lr": 0.01, "train.epochs": 5, "optim.no_decay_norm_bias": True}, \
        "the probe keeps the run's optimizer and weight decay"


# ---------------------------------------------------------------------------------------------------------------
# whole runs through the CLI
# ---------------------------------------------------------------------------------------------------------------
# Every run in one child process (one interpreter start for many small runs).
_CLI = ("import json, sys; from robustft.cli import main; "
        "sys.exit(max(main(args) for args in json.loads(sys.argv[1])))")
_SMALL = ("--epochs", "1", "--set", "method_args.lp_epochs=1", "--set", "data.train_n=64", "--set", "data.test_n=16")
TINY_LR = "1.0e-30"  # (YAML needs the dot) stage 2 moves nothing: its exported head must be the head it started from


@pytest.fixture(scope="module")
def runs(tiny_task, tmp_path_factory):
    data, ckpt = tiny_task
    out = tmp_path_factory.mktemp("roli_runs")
    argv = [finetune_args(data, ckpt, out, peft, "--method", "roli", "--peft", peft, *_SMALL) for peft in VARIANTS]
    argv[0] += ["--set", f"optim.lr={TINY_LR}"]  # full: check the hand-over of the head through the engine
    argv[1] += ["--set", "optim.lr_scale_batch=64"]  # bias: both stages' lr given for batch 64, run at batch 32
    argv.append(finetune_args(data, ckpt, out, "ranli", "--method", "ranli", "--peft", "bias", *_SMALL))
    argv.append(finetune_args(data, ckpt, out, "reuse", "--method", "roli", "--peft", "lora", *_SMALL,
                              "--init-head", f"{out / 'lora'}:lp", "--set", f"optim.lr={TINY_LR}"))
    argv.append(finetune_args(data, ckpt, out, "adapter_official", "--method", "roli", "--peft", "adapter", *_SMALL,
                              "--set", "method_args.adapter_init=official"))
    proc = run_ok([sys.executable, "-c", _CLI, json.dumps(argv)])
    (out / "cli.log").write_text(proc.stdout + proc.stderr)
    return out


def _head(path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    return {k: v for k, v in state.items() if k.startswith("fc.")}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-12) for k in a)


@pytest.mark.parametrize("peft", VARIANTS)
def test_cli_runs_both_stages_and_exports(runs, peft):
    run_dir = runs / peft
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["stages"]) == ["lp", "ft"]
    for stage in ("stage1_lp", "stage2_ft"):
        assert (run_dir / stage / "best.pt").is_file() and (run_dir / stage / "metrics.jsonl").is_file()
    stage1 = torch.load(run_dir / "stage1_lp" / "best.pt", weights_only=True)
    source = create_model("cifar_resnet20", num_classes=4, width=4).state_dict()
    assert stage1.keys() == source.keys()
    exported = torch.load(run_dir / "model.pt", weights_only=True)
    method = create_method("roli", PGD(), peft=peft)
    plain = method.export_architecture(create_model("cifar_resnet20", num_classes=4, width=4))
    load_state_dict_into(plain, exported)  # lora merged (plain keys), adapters rebuilt, full/bias plain
    if peft == "lora":
        assert exported.keys() == source.keys()


def test_cli_stage2_starts_from_stage1_head(runs):
    assert _same(_head(runs / "full" / "stage2_ft" / "best.pt"), _head(runs / "full" / "stage1_lp" / "best.pt"))
    assert not _same(_head(runs / "bias" / "stage2_ft" / "best.pt"), _head(runs / "bias" / "stage1_lp" / "best.pt"))


def test_cli_logs_each_stages_effective_lr(runs):
    log = (runs / "cli.log").read_text()
    for stage in ("lp", "ft"):  # lp_lr and optim.lr are both 0.05 here
        assert re.search(rf"stage {stage}: .* lr 0\.025 \(the configured 0\.05 × batch 32 / optim\.lr_scale_batch "
                         rf"64\)", log), log
    assert re.search(r"stage ft: .* epochs \(train\.epochs\), lr 1e-30\n", log), "no rule: the configured lr"


def test_cli_official_adapter_init_exports_adapters_that_learned_only_their_up_bias(runs):
    exported = torch.load(runs / "adapter_official" / "model.pt", weights_only=True)
    adapter = {k: v for k, v in exported.items() if ".adapter." in k}
    assert adapter and all(not v.any() for k, v in adapter.items() if not k.endswith("up.bias"))
    assert any(v.any() for k, v in adapter.items() if k.endswith("up.bias"))


def test_cli_ranli_has_no_probe_stage(runs):
    run_dir = runs / "ranli"
    assert not (run_dir / "stage1_lp").exists() and (run_dir / "best.pt").is_file()
    assert list(json.loads((run_dir / "results.json").read_text())["stages"]) == ["ft"]


def test_cli_init_head_reuses_the_probed_head(runs):
    run_dir = runs / "reuse"
    assert not (run_dir / "stage1_lp").exists()
    assert list(json.loads((run_dir / "results.json").read_text())["stages"]) == ["ft"]
    assert _same(_head(run_dir / "model.pt"), _head(runs / "lora" / "stage1_lp" / "best.pt"))


def test_cli_small_vit_runs_every_variant(tiny_task, tmp_path):
    """A small ViT (random init) through the whole pipeline: roli and ranli × every peft variant, exported and
    tested; LoRA merged into a plain ViT, the adapters kept."""
    data, _ = tiny_task
    torch.manual_seed(0)
    ckpt = tmp_path / "vit.pt"
    save_state_dict(create_model("vit", num_classes=4, depth=2, embed_dim=48, num_heads=3), ckpt)
    vit = ["--arch", "vit", "--set", "model.options={depth: 2, embed_dim: 48, num_heads: 3}"]
    argv = [[*finetune_args(data, ckpt, tmp_path, f"{method}-{peft}", "--method", method, "--peft", peft, *_SMALL),
             *vit] for method in ("roli", "ranli") for peft in VARIANTS]
    run_ok([sys.executable, "-c", _CLI, json.dumps(argv)])
    for method in ("roli", "ranli"):
        for peft in VARIANTS:
            results = json.loads((tmp_path / f"{method}-{peft}" / "results.json").read_text())
            assert list(results["stages"]) == (["lp", "ft"] if method == "roli" else ["ft"])
            assert 0 <= results["test"]["clean_acc"] <= 1 and results["test"]["n"] == 16
            exported = torch.load(tmp_path / f"{method}-{peft}" / "model.pt", weights_only=True)
            plain = create_model("vit", num_classes=4, depth=2, embed_dim=48, num_heads=3).state_dict()
            assert (exported.keys() == plain.keys()) == (peft != "adapter")


# ---------------------------------------------------------------------------------------------------------------
# the official initializations (lora_init / adapter_init: official), against a transcription of the official layers
# ---------------------------------------------------------------------------------------------------------------
class _OfficialLoRAQV(nn.Module):
    """Transcription of the official LoRA window attention's q/v updates with ZEROINIT: True: per target, a rank-r
    Linear A (zeroed) then a Linear B (zeroed), scaled by alpha / r and added to that slice of the qkv output."""

    def __init__(self, dim: int, rank: int = 4) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.query_lora_A, self.query_lora_B = nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim, bias=False)
        self.value_lora_A, self.value_lora_B = nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim, bias=False)
        for layer in (self.query_lora_A, self.value_lora_A, self.query_lora_B, self.value_lora_B):
            nn.init.zeros_(layer.weight)
        self.qkv.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, -1)
        return torch.cat([q + self.query_lora_B(self.query_lora_A(x)), k, v + self.value_lora_B(self.value_lora_A(x))],
                         -1)


class _OfficialAdapter(nn.Module):
    """Transcription of the official Pfeiffer adapter: down (weight and bias zeroed), GELU, up (both zeroed),
    added to its input."""

    def __init__(self, dim: int, reduction: int = 8) -> None:
        super().__init__()
        self.down, self.up = nn.Linear(dim, dim // reduction), nn.Linear(dim // reduction, dim)
        for p in self.parameters():
            nn.init.zeros_(p)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(torch.nn.functional.gelu(self.down(h)))


def _changed(module: nn.Module, step: Callable[[], None]) -> set[str]:
    """Names of ``module``'s parameters that ``step()`` changes."""
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    step()
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p)}


def _role(name: str) -> str:
    """A parameter's role: the last two parts of its name (``...adapter.up.bias`` -> ``up.bias``)."""
    return ".".join(name.split(".")[-2:])


def _adamw_steps(params, loss_of) -> Callable[[], None]:
    """Two AdamW steps (the official stage-2 optimizer, weight decay 0.01) on ``loss_of(seed)``."""
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)

    def step():
        for seed in range(2):
            opt.zero_grad()
            loss_of(seed).backward()
            opt.step()
    return step


@pytest.mark.parametrize("peft", ["lora", "adapter"])
def test_official_init_changes_what_the_official_layers_change(peft):
    """With ``lora_init`` / ``adapter_init: official``, two AdamW steps of stage ft change the head and exactly the
    PEFT parameters that the same steps change in the transcribed official layer (LoRA: none; adapter: up.bias)."""
    layer = _OfficialLoRAQV(16) if peft == "lora" else _OfficialAdapter(16)
    official = {_role(n) for n in _changed(layer, _adamw_steps(
        [p for p in layer.parameters() if p.requires_grad],
        lambda seed: layer(torch.randn(6, 16, generator=torch.Generator().manual_seed(seed))).square().sum()))}
    assert official == {"lora": set(), "adapter": {"up.bias"}}[peft]
    method = create_method("roli", PGD(steps=1), peft=peft, **{f"{peft}_init": "official"})
    model = method.prepare(_model("swin"))

    def loss_of(seed: int) -> torch.Tensor:
        method.train_mode(model)
        return method.loss(model, *_batch(seed=seed), torch.Generator().manual_seed(seed))[0]
    changed = _changed(model, _adamw_steps([p for _, p in method.trainable_parameters(model)], loss_of))
    head = {n for n, p in model.named_parameters() if any(p is q for q in model.get_classifier().parameters())}
    peft_names = {n for n, _ in _peft_params(model)}
    assert head <= changed and changed - head <= peft_names
    assert {_role(n) for n in changed - head} == official


def test_official_init_is_an_option_the_default_lora_and_adapter_learn():
    """The default stays the learning LoRA / adapter init (recommended); official is opt-in."""
    cfg = create_method("roli", PGD(), peft="lora").cfg
    assert (cfg.lora_init, cfg.adapter_init) == ("kaiming", "standard")
