"""The CLI: user errors are one line on stderr with exit status 2; evaluate writes its JSON record."""

import json
import os

import numpy as np
import pytest
import torch

from robustft import cli
from robustft.cli import main
from robustft.models import create_model, save_state_dict
from support import error_line


def _error_line(capsys) -> str:
    return error_line(capsys.readouterr().err)


def test_evaluate_writes_json(tmp_path, npz_data, ckpt, capsys):
    out = tmp_path / "r.json"
    rc = main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(npz_data),
               "--attack", "pgd", "--attack", "fgsm", "--steps", "2", "--eps", "4/255", "--json", str(out)])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["n"] == 20 and set(rec["robust_acc"]) == {"pgd2", "fgsm"} and rec["eps"] == pytest.approx(4 / 255)
    for key in ("clean_acc", "worst_case_acc", "norm", "timing", "provenance"):
        assert key in rec
    assert not list(tmp_path.glob(".r.json.*")), "no temporary file left behind"


def test_missing_data_root(tmp_path, ckpt, capsys, monkeypatch):
    monkeypatch.setenv("ROBUSTFT_DATA", str(tmp_path / "nowhere"))
    assert main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", "cifar10"]) == 2
    assert "nowhere" in _error_line(capsys)


def test_wrong_arch(npz_data, ckpt, capsys):
    assert main(["evaluate", "--arch", "resnet21", "--checkpoint", str(ckpt), "--data", str(npz_data)]) == 2
    assert "resnet18" in _error_line(capsys)


def test_class_count_mismatch(tmp_path, npz_data, capsys):
    path = tmp_path / "m100.pt"
    save_state_dict(create_model("cifar_resnet20", num_classes=100), path)
    assert main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(path), "--data", str(npz_data)]) == 2
    assert "class-count mismatch" in _error_line(capsys)


class _Payload:
    """Unpickling this writes a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused(tmp_path, npz_data, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload(str(marker))}, path)
    assert main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(path), "--data", str(npz_data)]) == 2
    assert "refusing" in _error_line(capsys)
    assert not marker.exists()


def test_bad_eps_and_attack(npz_data, ckpt, capsys):
    assert _exit_code(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(npz_data),
                       "--eps", "8//255"]) == 2
    assert "--eps: cannot parse eps '8//255'" in _error_line(capsys)
    assert main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(npz_data),
                 "--attack", "cw"]) == 2
    assert "unknown attack" in _error_line(capsys)


def _exit_code(argv: list[str]) -> int:
    """main's return value, or the status of the SystemExit that argparse raises for a bad flag."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("extra,match", [
    (["--eps", "8"], "8/255"),
    (["--batch-size", "0"], "--batch-size"),
    (["--n", "-3"], "--n"),
    (["--steps", "0"], "--steps"),
    (["--norm", "l7"], "--norm"),
])
def test_out_of_range_flags_are_one_line(npz_data, ckpt, capsys, extra, match):
    assert _exit_code(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(npz_data),
                       *extra]) == 2
    assert match in _error_line(capsys)


def test_unwritable_json_is_refused_before_evaluating(tmp_path, npz_data, ckpt, capsys, monkeypatch):
    import robustft.eval.sharded

    monkeypatch.setattr(robustft.eval.sharded, "evaluate_sharded",
                        lambda *a, **k: pytest.fail("evaluated before checking --json"))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(npz_data),
                 "--json", str(blocker / "r.json")]) == 2
    assert "not a directory" in _error_line(capsys)


def _bare_checkpoint(path, num_classes: int = 10, **options):
    """A CIFAR ResNet-20 state dict without normalize.* keys, as timm, HF-hub and ARES files come."""
    torch.manual_seed(0)
    state = create_model("cifar_resnet20", num_classes=num_classes, **options).state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("normalize.")}, path)
    return path


def test_weights_without_normalization_are_evaluated_with_a_stated_assumption(tmp_path, npz_data, ckpt, capsys):
    path = _bare_checkpoint(tmp_path / "bare.pt")
    argv = ["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(path), "--data", str(npz_data), "--steps", "1"]
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"robustft: warning: {path} carries no input normalization"), err
    assert "assuming the cifar_resnet20 default, none (mean 0,0,0, std 1,1,1)" in err[0]
    assert "--normalization (model.normalization) none|cifar10|cifar100|imagenet or m1,m2,m3/s1,s2,s3" in err[0]
    for given in (["--normalization", "cifar10"], ["--normalization", "0.5,0.5,0.5/0.25,0.25,0.25"]):
        assert main(argv + given) == 0
        assert capsys.readouterr().err == "", "a given normalization assumes nothing"
    assert main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(npz_data),
                 "--steps", "1"]) == 0
    assert capsys.readouterr().err == "", "a checkpoint's own normalize buffers are not an assumption"


def test_a_bad_normalization_in_a_config_fails_as_the_config_loads(tmp_path, ckpt, capsys):
    from support import finetune_args

    # before anything is read: the data does not even exist
    argv = finetune_args(tmp_path / "no_data", ckpt, tmp_path, "r", "--set", "model.normalization=imagenette")
    assert main(argv) == 2
    assert "model.normalization: bad normalization 'imagenette'" in _error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_evaluate_builds_the_model_from_model_args_and_num_classes(tmp_path, capsys):
    # 10-class weights of a width-4 ResNet-20 on data whose labels cover only 5 classes (so 5 classes, by default)
    path = _bare_checkpoint(tmp_path / "w4.pt", width=4)
    rng = np.random.default_rng(0)
    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / "test.npz", x=rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), y=np.arange(10) % 5)
    argv = ["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(path), "--data", str(tmp_path / "d"),
            "--steps", "1", "--normalization", "none"]
    assert main(argv) == 2
    assert "shape mismatch" in _error_line(capsys), "width 16 by default"
    assert main(argv + ["--model-arg", "width=4"]) == 2
    line = _error_line(capsys)
    assert "class-count mismatch" in line and "--num-classes 10 on data with fewer" in line
    assert main(argv + ["--model-arg", "width=4", "--num-classes", "10", "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 10


def test_final_bn_false_loads_a_preact_resnet_without_a_final_bn(tmp_path, npz_data, capsys):
    torch.manual_seed(0)
    path = save_state_dict(create_model("preact_resnet18", final_bn=False), tmp_path / "pre.pt")
    argv = ["evaluate", "--arch", "preact_resnet18", "--checkpoint", str(path), "--data", str(npz_data), "--n", "4",
            "--steps", "1", "--model-arg", "projection_input=activated"]  # the keys cannot tell the block variant
    assert main(argv) == 2
    assert "has no final `bn` before pooling: set the model option final_bn=false" in _error_line(capsys), \
        "final_bn=True by default"
    assert main(argv + ["--model-arg", "final_bn=false"]) == 0


@pytest.mark.parametrize("extra,match", [
    (["--model-arg", "width=4.5"], "architecture cifar_resnet20: option width must be int, got 4.5 "
                                   "(model.options / --model-arg)"),
    (["--model-arg", "widht=4"], "architecture cifar_resnet20 does not take the option 'widht'"),
    (["--model-arg", "width=-1"], "architecture cifar_resnet20 cannot be built with width=-1"),
    (["--arch", "preact_resnet18", "--model-arg", "final_bn=maybe"], "option final_bn must be bool, got 'maybe'"),
    (["--arch", "preact_resnet18", "--model-arg", "layers=[1]"], "preact_resnet18 sets the option 'layers' itself"),
    (["--model-arg", "width"], "--model-arg: 'width' must look like KEY=VALUE"),
    (["--model-arg", "width=[4"], "--model-arg: cannot parse the value of 'width=[4'"),
    (["--model-arg", "num_classes=10"], "num_classes has its own flag: use --num-classes"),
    (["--num-classes", "3"], "--num-classes 3 is fewer than the 10 classes of the data"),
    (["--model-arg", "width=[&w 4, *w]"], "'width=[&w 4, *w]': aliases (*w) are not supported"),
    (["--seed", "100000000000000000000"], "--seed: must be >= 0 and <= 4294967295, got 100000000000000000000"),
    (["--eps", "1e400"], "eps must be a finite number >= 0, got '1e400'"),
    (["--max-file-mb", "inf"], "--max-file-mb: must be a finite number > 0, got inf"),
])
def test_bad_model_args_are_one_line(npz_data, ckpt, capsys, extra, match):
    assert _exit_code(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(npz_data),
                       *extra]) == 2
    assert match in _error_line(capsys)


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: "
                                                              "can't allocate memory: you tried to allocate 2048000000 "
                                                              "bytes.\nmore lines"),
                                   torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")])
def test_out_of_memory_is_one_line(monkeypatch, capsys, error):
    """An allocation failure anywhere in a command (e.g. 4000x4000 .npz images) ends in one line, exit 2."""
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "cmd_models", fail)
    assert cli.main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("robustft: error: out of memory (") and "batch size" in err


def test_other_runtime_errors_are_not_hidden(monkeypatch):
    """A RuntimeError that is not an allocation failure is a bug: it propagates with its traceback."""
    def fail(args):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(cli, "cmd_models", fail)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        cli.main(["models"])
