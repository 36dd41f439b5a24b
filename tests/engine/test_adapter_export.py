"""`robustft export --adapter-only`: a RoLI run's LoRA factors or adapters and head alone, loaded back onto the base
checkpoint with `robustft evaluate --adapter`, computing what the run's exported model computes."""

import json

import pytest
import safetensors.torch
import torch

from robustft.cli import main
from robustft.engine import load_run_model
from robustft.models import load_checkpoint
from support import error_line, finetune_args

SMALL = ("--method", "roli", "--epochs", "1", "--set", "method_args.lp_epochs=1", "--set", "data.train_n=64",
         "--set", "data.test_n=16")


@pytest.mark.parametrize("peft", ["lora", "adapter"])
def test_adapter_only_export_round_trips_onto_the_base_through_the_cli(peft, tiny_task, tmp_path, capsys):
    data, base = tiny_task
    assert main(finetune_args(data, base, tmp_path, peft, *SMALL, "--peft", peft,
                              "--set", "model.normalization=cifar10")) == 0, capsys.readouterr().err
    out = tmp_path / f"{peft}.safetensors"
    assert main(["export", str(tmp_path / peft), "--out", str(out), "--adapter-only"]) == 0, capsys.readouterr().err
    assert "--adapter" in capsys.readouterr().out

    state = safetensors.torch.load_file(out)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["robustft_adapter"] == 1 and card["base_checkpoint"] == str(base) and card["method"] == "roli"
    assert {"fc.weight", "fc.bias"} <= state.keys() and {k: list(v.shape) for k, v in state.items()} == card[
        "state_dict_keys"]
    kind = "lora_" if peft == "lora" else ".adapter."
    assert all(kind in k for k in state if not k.startswith("fc.")) and len(state) > 2
    base_keys = load_checkpoint("cifar_resnet20", base, width=4).state_dict().keys()
    assert not state.keys() & (base_keys - {"fc.weight", "fc.bias"}), "no backbone weights in the adapter file"

    from robustft.adapters import load_adapters

    run_model = load_run_model(tmp_path / peft).eval()
    attached = load_adapters(load_checkpoint("cifar_resnet20", base, width=4), out).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():  # LoRA merged in model.pt vs applied as factors: the same function up to rounding
        torch.testing.assert_close(attached(x), run_model(x), rtol=1e-4, atol=1e-5)

    report = tmp_path / f"{peft}.json"
    assert main(["evaluate", "--arch", "cifar_resnet20", "--model-arg", "width=4", "--checkpoint", str(base),
                 "--adapter", str(out), "--data", str(data), "--n", "16", "--steps", "1", "--json",
                 str(report)]) == 0, capsys.readouterr().err
    exported = tmp_path / f"{peft}_model.json"
    assert main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(tmp_path / peft / "model.pt"), "--data",
                 str(data), "--n", "16", "--steps", "1", "--json", str(exported)]) == 0, capsys.readouterr().err
    assert json.loads(report.read_text())["clean_acc"] == json.loads(exported.read_text())["clean_acc"]


def test_a_run_without_adapters_or_a_foreign_adapter_file_is_one_line(tiny_task, tmp_path, capsys):
    data, base = tiny_task
    assert main(finetune_args(data, base, tmp_path, "full", "--epochs", "1", "--set", "data.train_n=64",
                              "--set", "data.test_n=16")) == 0, capsys.readouterr().err
    rc = main(["export", str(tmp_path / "full"), "--out", str(tmp_path / "a.safetensors"), "--adapter-only"])
    assert rc == 2 and "trains no LoRA or adapters; export the whole model" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "a.safetensors").exists()
    rc = main(["evaluate", "--arch", "cifar_resnet20", "--model-arg", "width=4", "--checkpoint", str(base),
               "--adapter", str(base), "--data", str(data)])
    assert rc == 2 and "no adapter card source.json beside it" in error_line(capsys.readouterr().err)
