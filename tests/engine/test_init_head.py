"""`model.init_head`: a checkpoint, a finished run or one stage of it initializes the classifier of any method."""

import pytest
import torch

from robustft.engine import build_source_model, load_config
from robustft.errors import UserError
from support import finetune_args, robustft_cmd, run_ok


@pytest.fixture(scope="module")
def roli_run(tiny_task, tmp_path_factory):
    """A finished two-stage RoLI run (probe ``lp``, then ``ft``)."""
    data, ckpt = tiny_task
    out = tmp_path_factory.mktemp("runs")
    run_ok(robustft_cmd(*finetune_args(data, ckpt, out, "roli", "--method", "roli", "--epochs", "1",
                                       "--set", "method_args.lp_epochs=1", "--set", "model.head=new")))
    return out / "roli"


def _config(ckpt, init_head=None):
    base = ["data.name=x", "model.arch=cifar_resnet20", f"model.checkpoint={ckpt}", "model.options.width=4",
            "model.head=new"]
    return load_config(None, base + ([f"model.init_head={init_head}"] if init_head else []))


@pytest.mark.parametrize("suffix,weights", [(":lp", "stage1_lp/best.pt"), ("", "model.pt")])
def test_a_run_or_one_of_its_stages_gives_the_head(tiny_task, roli_run, suffix, weights):
    _, ckpt = tiny_task
    expected = torch.load(roli_run / weights, weights_only=True)
    model = build_source_model(_config(ckpt, f"{roli_run}{suffix}"), num_classes=4)
    assert torch.equal(model.fc.weight, expected["fc.weight"]) and torch.equal(model.fc.bias, expected["fc.bias"])
    fresh = build_source_model(_config(ckpt), num_classes=4)
    assert not torch.equal(fresh.fc.weight, expected["fc.weight"])


def test_a_checkpoint_file_gives_the_head(tiny_task, roli_run):
    _, ckpt = tiny_task
    model = build_source_model(_config(ckpt, roli_run / "stage1_lp" / "best.pt"), num_classes=4)
    assert torch.equal(model.fc.weight, torch.load(roli_run / "stage1_lp" / "best.pt")["fc.weight"])


@pytest.mark.parametrize("suffix,match", [(":ft2", "no stage 'ft2'"), ("/nowhere", "neither a checkpoint file")])
def test_a_wrong_stage_or_path_is_named(tiny_task, roli_run, suffix, match):
    _, ckpt = tiny_task
    with pytest.raises(UserError, match=match):
        build_source_model(_config(ckpt, f"{roli_run}{suffix}"), num_classes=4)


def test_an_unfinished_run_is_refused(tiny_task, tmp_path):
    _, ckpt = tiny_task
    (tmp_path / "config.yaml").write_text("method: roli\n")
    with pytest.raises(UserError, match="not a finished run"):
        build_source_model(_config(ckpt, tmp_path), num_classes=4)


def test_roli_with_a_given_head_skips_its_probe(tiny_task, roli_run, tmp_path):
    data, ckpt = tiny_task
    proc = run_ok(robustft_cmd(*finetune_args(data, ckpt, tmp_path, "again", "--method", "roli", "--epochs", "1",
                                              "--set", "model.head=new", "--init-head", f"{roli_run}:lp")))
    assert "no probe stage" in proc.stdout and "stage lp" not in proc.stdout
    assert not (tmp_path / "again" / "stage1_lp").exists() and (tmp_path / "again" / "results.json").exists()
