"""`finetune` / `pretrain` flags for the keys set most often: --lr, --batch-size, --eps (as timm's train.py and the
MadryLab CLI have them), mapped onto optim.lr, data.batch_size and attack.eps; a --set of the same key wins."""

import json

import pytest
import yaml

from robustft.cli import build_parser, main
from support import error_line, robustft_cmd, run_ok


def _finetune(data, ckpt, out, *extra: str) -> list[str]:
    return ["finetune", "--data", str(data), "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--out-dir",
            str(out), "--name", "flags", "--set", "model.options.width=4", "--set", "attack.steps=2", "--set",
            "eval.val_steps=2", "--set", "eval.test_steps=2", *extra]


def test_flags_set_the_run_config(tiny_task, tmp_path):
    data, ckpt = tiny_task
    proc = run_ok(robustft_cmd(*_finetune(data, ckpt, tmp_path, "--epochs", "1", "--lr", "2e-2", "--batch-size", "16",
                                          "--eps", "4/255")))
    cfg = yaml.safe_load((tmp_path / "flags" / "config.yaml").read_text())
    assert cfg["optim"]["lr"] == 0.02 and cfg["data"]["batch_size"] == 16 and cfg["attack"]["eps"] == 4 / 255
    assert "lr 0.02" in proc.stdout, "the stage line states the learning rate it trains with"
    results = json.loads((tmp_path / "flags" / "results.json").read_text())
    assert results["test"]["eps"] == pytest.approx(4 / 255), "the test threat model follows --eps"


@pytest.mark.parametrize("command", ["finetune", "pretrain"])
@pytest.mark.parametrize(("flags", "message"), [
    (["--batch-size", "0"], "'data.batch_size' must be >= 1"),
    (["--lr", "0"], "'optim.lr' must be > 0"),
    (["--eps", "8"], "8/255"),
    (["--batch-size", "16", "--set", "data.batch_size=0"], "'data.batch_size' must be >= 1"),  # --set wins
])
def test_flags_are_validated_as_their_keys(command, flags, message, tmp_path, capsys):
    assert main([command, "--data", "cifar10", "--arch", "cifar_resnet20", "--out-dir", str(tmp_path), *flags]) == 2
    assert message in error_line(capsys.readouterr().err)
    assert not any(tmp_path.iterdir()), "nothing written before the config is valid"


@pytest.mark.parametrize("command", ["finetune", "pretrain"])
def test_help_names_the_keys_and_what_lr_applies_to(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, key in (("--lr", "optim.lr"), ("--batch-size", "data.batch_size"), ("--eps", "attack.eps")):
        assert flag in text and key in text
    assert "method_args.lp_lr" in text, "a multi-stage method's --lr: which stage it sets"
