"""Paper fidelity and precision (issue 13, items 4, 5 and 7): ``eval.select: last`` exports the final epoch as the
official TWINS code does; ``train.amp: auto`` trains in bf16 on CUDA and on CPUs with native bf16; evaluation attacks
run in fp32 whatever ``train.amp`` is, and every run states its precision."""

import importlib
import json

import pytest
import torch
from torch import nn

from robustft.attacks import PGD
from robustft.cli import main
from robustft.data import ArrayDataset
from robustft.engine.precision import run_precision
from robustft.eval import evaluate
from support import finetune_args

train_module = importlib.import_module("robustft.engine.train")
precision_module = importlib.import_module("robustft.engine.precision")
run_module = importlib.import_module("robustft.engine.run")  # robustft.engine.run is also the name of a function


@pytest.mark.parametrize("select,kept", [("last", 3), ("robust_acc", 1)])
def test_select_last_exports_the_final_epoch_though_validation_peaks_first(tiny_task, tmp_path, monkeypatch, select,
                                                                          kept):
    peaked = {0: 0.9, 1: 0.5, 2: 0.1}  # validation accuracy per epoch: best at epoch 1 of 3
    monkeypatch.setattr(train_module, "_validate", lambda model, val, attack, cfg, info, epoch: {
        "val_clean_acc": peaked[epoch], "val_robust_acc": peaked[epoch]})
    data, source = tiny_task
    assert main(finetune_args(data, source, tmp_path, "r", "--epochs", "3", "--set", f"eval.select={select}")) == 0
    run_dir = tmp_path / "r"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["stages"]["main"]["best_epoch"] == kept
    assert results["stages"]["main"]["best_val"]["val_robust_acc"] == peaked[kept - 1]
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["val_robust_acc"] for h in history] == [0.9, 0.5, 0.1], "validation is still measured and logged"
    best = torch.load(run_dir / "best.pt", weights_only=True)
    final = torch.load(run_dir / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(best[k], final[k]) for k in final) == (kept == 3)


@pytest.fixture
def logits_by_phase(monkeypatch):
    """(autocast on?, logits dtype) of every classifier forward, by phase: training, validation, test."""
    seen: dict[str, set[tuple[bool, torch.dtype]]] = {"train": set(), "val": set(), "test": set()}
    phase = ["train"]

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):  # the classifier: its output is the logits
            seen[phase[0]].add((torch.is_autocast_enabled("cpu"), out.dtype))

    def in_phase(name: str, fn):
        def wrapped(*args, **kwargs):
            phase[0] = name
            try:
                return fn(*args, **kwargs)
            finally:
                phase[0] = "train"
        return wrapped

    monkeypatch.setattr(train_module, "evaluate", in_phase("val", train_module.evaluate))
    monkeypatch.setattr(run_module, "evaluate", in_phase("test", run_module.evaluate))
    handle = nn.modules.module.register_module_forward_hook(hook)
    yield seen
    handle.remove()


def test_evaluation_attacks_run_in_fp32_when_training_is_bf16_and_the_run_states_it(tiny_task, tmp_path,
                                                                                   logits_by_phase, capsys):
    data, source = tiny_task
    assert main(finetune_args(data, source, tmp_path, "r", "--epochs", "1", "--set", "train.amp=bf16",
                              "--set", "train.device=cpu")) == 0
    assert logits_by_phase["train"] == {(True, torch.bfloat16)}, "the run must really train under bf16 autocast"
    assert logits_by_phase["val"] == {(False, torch.float32)}
    assert logits_by_phase["test"] == {(False, torch.float32)}
    stated = {"train": "bf16", "eval": "fp32"}
    assert json.loads((tmp_path / "r" / "results.json").read_text())["precision"] == stated
    assert json.loads((tmp_path / "r" / "model.json").read_text())["precision"] == stated
    assert "precision: training bf16 (train.amp=bf16 on cpu), validation and test fp32" in capsys.readouterr().out


def test_evaluate_is_fp32_inside_a_callers_autocast(tiny_model, batch):
    x, y = batch
    data = ArrayDataset((x * 255).to(torch.uint8), y, classes=list("abcd"), name="batch")
    dtypes = set()
    handle = tiny_model.fc.register_forward_hook(lambda m, a, out: dtypes.add(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        evaluate(tiny_model, data, [PGD(eps=8 / 255, steps=2)], progress=False)
    handle.remove()
    assert dtypes == {torch.float32}


@pytest.mark.parametrize("device,amp,native,train", [
    ("cuda", "auto", False, "bf16"), ("cpu", "auto", False, "fp32"), ("cpu", "auto", True, "bf16"),
    ("cuda", "off", True, "fp32"), ("cpu", "off", True, "fp32"), ("cpu", "bf16", False, "bf16"),
    ("cuda", "fp16", False, "fp16")])
def test_run_precision_resolves_amp_for_the_device(device, amp, native, train, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: native)
    assert run_precision(torch.device(device), amp) == {"train": train, "eval": "fp32"}


@pytest.mark.parametrize("cpuinfo,native", [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n", True),  # x86 AVX-512 BF16
    ("flags\t\t: fpu sse2 avx2 amx_bf16\n", True),  # AMX without the AVX-512 BF16 flag
    ("flags\t\t: fpu sse2 avx2 avx512f avx512bw\n", False),  # AVX-512 without BF16 (e.g. Skylake): emulated
    ("Features\t: fp asimd sve bf16 i8mm\n", True),  # Arm with FEAT_BF16
    ("Features\t: fp asimd\n", False),
    (None, False),  # no /proc/cpuinfo (macOS, Windows): fp32
])
def test_cpu_native_bf16_reads_the_processor_flags(cpuinfo, native, tmp_path, monkeypatch):
    fake = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        fake.write_text(cpuinfo)
    real_path = precision_module.Path
    monkeypatch.setattr(precision_module, "Path", lambda p: fake if p == "/proc/cpuinfo" else real_path(p))
    precision_module.cpu_has_native_bf16.cache_clear()
    try:
        assert precision_module.cpu_has_native_bf16() is native
    finally:
        precision_module.cpu_has_native_bf16.cache_clear()


def test_a_cpu_run_with_amp_auto_trains_in_bf16_where_the_cpu_has_it(tiny_task, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    data, source = tiny_task
    assert main(finetune_args(data, source, tmp_path, "r", "--epochs", "1", "--set", "train.device=cpu")) == 0
    assert json.loads((tmp_path / "r" / "results.json").read_text())["precision"] == {"train": "bf16", "eval": "fp32"}
    assert "precision: training bf16 (train.amp=auto on cpu), validation and test fp32" in capsys.readouterr().out
