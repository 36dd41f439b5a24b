"""Experiment trackers (``train.report_to``): TensorBoard and Weights & Biases, both optional extras.

Every tracker gets the same rows on one step axis, the optimizer step counted from the stage's start:
- every ``train.log_every`` iterations, the means over the steps since the last row: ``train/loss``, ``train/acc``,
  ``lr`` (and ``train/grad_norm`` with ``train.diagnostics``), from rank 0's share of the batches;
- at each epoch's last step, in the same row, the epoch's ``metrics.jsonl`` numbers under grouped tags
  (``val/clean``, ``val/robust``, ``train/epoch_loss``, ``time/epoch_s``, ``epoch``, ...; see ``epoch_tags``).

Resume-safe: a row is written before the checkpoint that covers it, so a killed run has logged at least what its
``last.pt`` holds. TensorBoard then hides every event after the checkpoint's step (``purge_step``) and the resumed run
writes them again; W&B cannot take points back, so the run's id and the last step it logged are kept in
``<run>/wandb.json`` and the resumed run continues that W&B run (``resume="allow"``) from the next step (resuming is
bit-exact, so the points in between are the ones it would write).
"""

import importlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from .._io import atomic_write_json
from ..errors import UserError
from ..layout import RunLayout

__all__ = ["TRACKERS", "check_trackers", "open_trackers", "epoch_tags", "Trackers"]

TRACKERS = ("tensorboard", "wandb")
_EXTRA = {"tensorboard": "TensorBoard", "wandb": "Weights & Biases (wandb)"}
# metrics.jsonl keys -> tags; ``lr`` is left out (the step rows carry it), other keys go under ``epoch/``
_EPOCH_TAGS = {"epoch": "epoch", "val_clean_acc": "val/clean", "val_robust_acc": "val/robust",
               "train_loss": "train/epoch_loss", "train_acc": "train/epoch_acc", "epoch_s": "time/epoch_s",
               "train_s": "time/train_s", "train_images_per_s": "time/images_per_s", "lr": None}


def _import(name: str) -> Any:
    """The tracker's writer module (``torch.utils.tensorboard`` or ``wandb``); one UserError line when missing."""
    try:
        return importlib.import_module("torch.utils.tensorboard" if name == "tensorboard" else name)
    except ImportError as e:
        raise UserError(f"train.report_to names {name} but {_EXTRA[name]} cannot be imported ({e}): pip install "
                        f"'robustft[{name}]' (or {name}), or remove it from train.report_to") from None


def check_trackers(names: list[str]) -> None:
    """Every named tracker can be imported: a missing package is one line at config load, before anything runs."""
    for name in names:
        _import(name)


def epoch_tags(metrics: dict[str, Any]) -> dict[str, float]:
    """One epoch's numeric ``metrics.jsonl`` fields under their grouped tags."""
    out = {}
    for key, value in metrics.items():
        tag = _EPOCH_TAGS.get(key, f"epoch/{key}")
        if tag is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[tag] = float(value)
    return out


class _TensorBoard:
    """``SummaryWriter`` under ``<run>/tensorboard/``; events after ``start_step`` from an earlier attempt hidden."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        self.writer = _import("tensorboard").SummaryWriter(str(RunLayout(run_dir).tensorboard),
                                                           purge_step=start_step + 1)

    def log(self, row: dict[str, float], step: int) -> None:
        for tag, value in row.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    """One W&B run per run (stage) directory: its id and last logged step kept in ``<run>/wandb.json``."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        wandb = _import("wandb")
        self.state_path = RunLayout(run_dir).wandb
        state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.state = {"id": state.get("id") or secrets.token_hex(4), "step": state.get("step", 0)}
        self.logged_before = self.state["step"]  # steps up to here were logged by an earlier, interrupted attempt
        atomic_write_json(self.state, self.state_path)
        parent = run_dir.parent
        is_stage = RunLayout(parent).config.is_file()  # a multi-stage run's stage: grouped under the run's name
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "robustft"), id=self.state["id"],
                              resume="allow", dir=os.environ.get("WANDB_DIR", str(run_dir)), config=config,
                              name=f"{parent.name}/{run_dir.name}" if is_stage else run_dir.name,
                              group=parent.name if is_stage else None)

    def log(self, row: dict[str, float], step: int) -> None:
        if step <= self.logged_before:
            return
        self.run.log(row, step=step)
        self.state["step"] = step
        atomic_write_json(self.state, self.state_path)

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """The trackers ``train.report_to`` names, fed step rows and epoch rows (rank 0 only)."""

    def __init__(self, writers: list[Any], grad_norm: bool) -> None:
        self.writers, self.grad_norm = writers, grad_norm
        self.previous: list[float] | None = None  # the step sums at the last row (this epoch)
        self.pending: dict[str, float] = {}

    def start_epoch(self) -> None:
        """The step sums restart with each epoch."""
        self.previous = None

    def train_step(self, sums: list[float], step: int, last: bool) -> None:
        """A row of the means since the last row from ``StepSums`` (loss, acc, batches, grad_norm, lr); an epoch's
        ``last`` row waits for its epoch numbers (``end_epoch``)."""
        base = self.previous or [0.0] * len(sums)
        loss, acc, batches, grad_norm, lr = (a - b for a, b in zip(sums, base, strict=True))
        self.previous = list(sums)
        row = {"train/loss": loss / batches, "train/acc": acc / batches, "lr": lr / batches}
        if self.grad_norm:
            row["train/grad_norm"] = grad_norm / batches
        if last:
            self.pending = row
        else:
            self._log(row, step)

    def end_epoch(self, metrics: dict[str, Any], step: int) -> None:
        """The epoch's last step row with its ``metrics.jsonl`` numbers."""
        self._log({**self.pending, **epoch_tags(metrics)}, step)
        self.pending = {}

    def _log(self, row: dict[str, float], step: int) -> None:
        for writer in self.writers:
            writer.log(row, step)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def open_trackers(names: list[str], run_dir: Path, start_step: int, config: dict[str, Any], *,
                  grad_norm: bool = False) -> Trackers | None:
    """The trackers of ``train.report_to`` for a stage that (re)starts after optimizer step ``start_step``
    (``grad_norm``: rows also carry ``train/grad_norm``, measured with ``train.diagnostics``)."""
    if not names:
        return None
    return Trackers([_TensorBoard(run_dir, start_step) if name == "tensorboard" else _WandB(run_dir, config)
                     for name in names], grad_norm)
