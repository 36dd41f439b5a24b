"""Helpers shared by tests: running the robustft CLI in child processes, small models, test images."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from robustft.models import create_model

SRC = Path(__file__).resolve().parents[1] / "src"


def robustft_cmd(*args: str, launcher: tuple[str, ...] = ()) -> list[str]:
    """argv running the robustft CLI from this source tree with the current interpreter."""
    return [sys.executable, *launcher, "-m", "robustft.cli", *args]


def run_env() -> dict[str, str]:
    """Environment for child runs: this source tree, one thread per process (fixed, so results are reproducible)."""
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1"}


def finetune_args(data: Path, ckpt: Path, out: Path, name: str, *extra: str) -> list[str]:
    """A small adversarial fine-tuning run (a few seconds per epoch on one core)."""
    return ["finetune", "--data", str(data), "--arch", "cifar_resnet20", "--checkpoint", str(ckpt),
            "--out-dir", str(out), "--name", name, "--set", "model.options.width=4", "--set", "attack.steps=2",
            "--set", "data.batch_size=32", "--set", "optim.lr=0.05", "--set", "eval.val_steps=2",
            "--set", "eval.test_steps=2", *extra]


def run_ok(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a child and fail the test with its output if it fails."""
    proc = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, **kw)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def with_source_bn_stats(model: nn.Module) -> nn.Module:
    """``model`` with non-trivial, pre-trained-looking BN statistics (in place), so moved statistics are visible."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model


def tiny_resnet(num_classes: int = 4) -> nn.Module:
    """A width-4 CIFAR ResNet-20 (seeded) whose BN layers carry non-trivial, pre-trained-looking statistics."""
    torch.manual_seed(0)
    return with_source_bn_stats(create_model("cifar_resnet20", num_classes=num_classes, width=4))


def smooth_images(sizes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    """Smooth random uint8 H×W×3 images (a random 8×8 image upscaled) plus noise, of the given (height, width)."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in sizes:
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        noise = rng.integers(-20, 21, (h, w, 3))
        out.append(np.clip(np.asarray(coarse, dtype=np.int64) + noise, 0, 255).astype(np.uint8))
    return out


def pil_crop_resize(image: np.ndarray, box: tuple[int, int, int, int], out: int) -> np.ndarray:
    """PIL's ``crop`` of ``box`` (top, left, height, width) then bilinear ``resize`` to out×out, as int64 H×W×3."""
    top, left, h, w = box
    crop = Image.fromarray(image).crop((left, top, left + w, top + h))
    return np.asarray(crop.resize((out, out), Image.BILINEAR), dtype=np.int64)


def error_line(err: str) -> str:
    """The one ``robustft: error:`` line of a user error's stderr; any other line must be a warning, no traceback."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if not line.startswith("robustft: warning: ")]
    assert "Traceback" not in err
    assert len(errors) == 1 and errors[0].startswith("robustft: error: "), err
    return errors[0]


class Payload:
    """Unpickling this runs a shell command that creates ``marker``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)
