"""`model.init_head`: a RoLI run's probed head initializes another method (e.g. TWINS with a RoLI head)."""

import pytest
import torch

from robustft.engine import build_source_model, load_config
from robustft.errors import UserError
from support import finetune_args, robustft_cmd, run_ok


def test_roli_head_initializes_another_run(tiny_task, tmp_path):
    data, ckpt = tiny_task
    run_ok(robustft_cmd(*finetune_args(data, ckpt, tmp_path, "roli", "--method", "roli", "--epochs", "1",
                                       "--set", "method_args.lp_epochs=1", "--set", "model.head=new")))
    probed = torch.load(tmp_path / "roli" / "stage1_lp" / "best.pt", weights_only=True)
    base = ["data.name=x", "model.arch=cifar_resnet20", f"model.checkpoint={ckpt}", "model.options.width=4",
            "model.head=new"]
    cfg = load_config(None, [*base, f"model.init_head=roli:{tmp_path / 'roli'}"])
    model = build_source_model(cfg, num_classes=4)
    assert torch.equal(model.fc.weight, probed["fc.weight"]) and torch.equal(model.fc.bias, probed["fc.bias"])
    fresh = build_source_model(load_config(None, base), num_classes=4)
    assert not torch.equal(fresh.fc.weight, probed["fc.weight"])
    with pytest.raises(UserError, match="stage1_lp"):
        build_source_model(load_config(None, [*base, f"model.init_head=roli:{tmp_path}"]), num_classes=4)
