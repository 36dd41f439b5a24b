"""The CLI: user errors are one line on stderr with exit status 2; evaluate writes its JSON record."""

import json
import os

import pytest
import torch

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
    assert main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(npz_data),
                 "--eps", "8//255"]) == 2
    _error_line(capsys)
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
    import robustft.eval

    monkeypatch.setattr(robustft.eval, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking --json"))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(npz_data),
                 "--json", str(blocker / "r.json")]) == 2
    assert "not a directory" in _error_line(capsys)
