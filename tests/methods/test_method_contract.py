"""The behaviour every registered method owes the engine, tested for each name in the registry — a method added
from one file (``register_method``) gets these cases without writing them: prepare leaves parameters to train, one
loss step is finite and moves only those, finalize gives the plain architecture that evaluates, and the method's
checkpoint state round-trips."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustft.attacks import PGD
from robustft.data import ArrayDataset
from robustft.engine import load_config
from robustft.eval import evaluate
from robustft.methods import RunContext, create_method, list_methods
from robustft.models import create_model
from support import run_env

# cheap settings for methods whose defaults are sized for real runs (a new method needs none)
OPTIONS = {"rift": {"mrc_n": 8, "mrc_steps": 1, "mrc_attack_steps": 1, "alphas": [0.0, 1.0]},
           "autolora": {"acc_n": 8}}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("cifar_resnet20", num_classes=4, width=4)


def _data(n: int = 16) -> ArrayDataset:
    g = torch.Generator().manual_seed(1)
    return ArrayDataset(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                        torch.arange(n) % 4, classes=list("abcd"), name="contract")


def _trained(name: str, tmp_path: Path):
    """Method ``name`` set up on a tiny model, one SGD step per stage; returns (method, model, ctx, checks)."""
    method = create_method(name, PGD(steps=1), **OPTIONS.get(name, {}))
    model, data = _model(), _data()
    cfg = load_config(None, ["train.channels_last=false", "eval.val_steps=1", "data.eval_batch_size=8"])
    ctx = RunContext(train=data, val=data, cfg=cfg, run_dir=tmp_path, device=torch.device("cpu"), log=lambda s: None,
                     source_state={k: v.detach().clone() for k, v in model.state_dict().items()})
    method.setup(model, ctx)
    x, y = data.x[:8].float() / 255, data.y[:8]
    for stage in method.stages():
        model = stage.method.prepare(model)
        trainable = dict(stage.method.trainable_parameters(model))
        assert trainable, f"{name} stage {stage.name}: nothing to train"
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        stage.method.epoch_start(model, 0)
        stage.method.train_mode(model)
        loss, stats = stage.method.loss(model, x, y, torch.Generator().manual_seed(0))
        assert torch.isfinite(loss) and all(torch.isfinite(v).all() for v in stats.values()), (name, stage.name)
        loss.backward()
        torch.optim.SGD(trainable.values(), lr=0.1).step()
        moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
        assert moved and moved <= set(trainable), f"{name} stage {stage.name}: moved {sorted(moved - set(trainable))}"
        model.zero_grad(set_to_none=True)
    return method, model, ctx


@pytest.mark.parametrize("name", list_methods())
def test_a_step_trains_only_the_trainable_parameters_and_finalize_exports_the_plain_architecture(name, tmp_path):
    method, model, ctx = _trained(name, tmp_path)
    final = method.finalize(model, ctx)
    plain = method.export_architecture(_model())
    assert set(final.state_dict()) == set(plain.state_dict()), f"{name}: finalize left extra structure"
    result = evaluate(final, ctx.val, batch_size=8, progress=False)
    assert 0 <= result.clean_acc <= 1


@pytest.mark.parametrize("name", list_methods())
def test_the_method_state_round_trips(name, tmp_path):
    method, _, _ = _trained(name, tmp_path)
    fresh = create_method(name, PGD(steps=1), **OPTIONS.get(name, {}))
    fresh.load_state_dict(method.state_dict())
    assert fresh.state_dict() == method.state_dict()


SCRATCH = '''
"""A method from one file (only to show that the contract cases reach it)."""
from robustft.methods import Method, register_method


class Scratch(Method):
    """The base method under another name."""


register_method("scratch_contract", Scratch, objective="clean")
'''


def test_a_method_registered_from_one_file_gets_the_contract_cases(tmp_path):
    (tmp_path / "scratch_method.py").write_text(SCRATCH)
    env = run_env()
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "scratch_method", "-k", "scratch_contract",
                           "-p", "no:cacheprovider", str(Path(__file__))], capture_output=True, text=True, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0 and "2 passed" in proc.stdout, proc.stdout + proc.stderr
