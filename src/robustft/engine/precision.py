"""The training step's precision: what ``train.amp`` resolves to on a device (bf16 where the hardware computes it
natively, fp32 elsewhere), the autocast context of the step, and the precision a run states."""

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["cpu_has_native_bf16", "train_precision", "run_precision", "autocast_for"]


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX-512 BF16 or AMX-BF16, Arm BF16): where CPU autocast pays
    (about 2x fp32 for convolutions on AVX-512 BF16); elsewhere bf16 is emulated and slower than fp32."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap, dependable probe, so fp32
        return False
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def train_precision(device: torch.device, amp: str) -> str:
    """What ``train.amp`` means on ``device``: bf16, fp16 or fp32. ``auto`` = bf16 on CUDA and on CPUs with native
    bf16 (``cpu_has_native_bf16``), fp32 elsewhere."""
    if amp == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        return "bf16" if native else "fp32"
    return "fp32" if amp == "off" else amp


def run_precision(device: torch.device, amp: str) -> dict[str, str]:
    """The precision a run states (log, results.json, card): training as ``train.amp`` resolves on ``device``;
    validation and test always fp32 (``evaluate`` turns autocast off)."""
    return {"train": train_precision(device, amp), "eval": "fp32"}


def autocast_for(device: torch.device, amp: str) -> tuple[Callable[[], contextlib.AbstractContextManager], bool]:
    """(autocast context factory, needs grad scaling) of the training step for ``train.amp`` on ``device``."""
    precision = train_precision(device, amp)
    if precision == "fp32":
        return contextlib.nullcontext, False
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype)), precision == "fp16"
