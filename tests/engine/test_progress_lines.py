"""What a training run and a benchmark print off a terminal: per-epoch progress lines with rate, ETA and the loss,
the stage's ETA after each epoch, which cell of how many a benchmark is on, and a divergence message that names the
checkpoint actually on disk."""

import math
import re

import pytest
import torch
import yaml

from robustft import progress
from robustft.bench import load_protocol, run_protocol
from robustft.cli import main
from robustft.methods.base import Method
from support import finetune_args

_EPOCH_LINE = re.compile(r"epoch (\d)/2: (\d+)/(\d+) batches in [\d:]+( s)?, [\d.]+ (batch/s|s/batch), "
                         r"ETA [\d:]+( s)?(, loss \d+\.\d{3})?$")


def test_finetune_prints_progress_lines_with_eta_and_loss(tiny_task, tmp_path, monkeypatch, capsys):
    data, ckpt = tiny_task
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    assert main(finetune_args(data, ckpt, tmp_path, "r", "--method", "pgd_at", "--epochs", "2",
                              "--set", "train.log_every=4", "--set", "attack.steps=1")) == 0
    out, err = capsys.readouterr()
    lines = [m for m in map(_EPOCH_LINE.match, err.splitlines()) if m]
    iters = int(lines[0].group(3))
    assert [(int(m.group(1)), int(m.group(2))) for m in lines] == [(e, i) for e in (1, 2) for i in
                                                                     range(1, iters + 1)]
    # the loss appears from the first loss check (every train.log_every iterations) on
    assert [m.group(7) is not None for m in lines[:iters]] == [i >= 4 for i in range(1, iters + 1)]
    summaries = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(summaries) == 2 and "img/s, ETA " in summaries[0] and "ETA" not in summaries[1]
    assert "ETA" not in out.replace(summaries[0], ""), "progress lines go to stderr"


@pytest.fixture
def diverge_in_epoch(monkeypatch):
    """Make the training loss non-finite from a given epoch on (counted by the loop's train_mode calls)."""
    epochs, bad_from = [], []
    train_mode, loss = Method.train_mode, Method.loss

    def counting_train_mode(self, model):
        epochs.append(1)
        train_mode(self, model)

    def nan_loss(self, model, x, y, generator=None):
        value, stats = loss(self, model, x, y, generator)
        if len(epochs) >= bad_from[0]:
            value, stats = value * math.nan, {**stats, "loss": stats["loss"] * math.nan}
        return value, stats

    monkeypatch.setattr(Method, "train_mode", counting_train_mode)
    monkeypatch.setattr(Method, "loss", nan_loss)
    return bad_from.append


def test_divergence_names_the_last_saved_epoch_and_its_loss(tiny_task, tmp_path, diverge_in_epoch, capsys):
    data, ckpt = tiny_task
    diverge_in_epoch(2)
    assert main(finetune_args(data, ckpt, tmp_path, "r", "--method", "standard", "--epochs", "3")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    assert re.fullmatch(r"robustft: error: training diverged: loss is nan at epoch 2, iteration \d+; lower optim.lr "
                        r"or check the data \(epoch 2 was not saved; the last saved epoch is 1 \(train loss "
                        rf"{state['history'][-1]['train_loss']:.3g}\) in {re.escape(str(tmp_path / 'r' / 'last.pt'))}"
                        r"\)", err), err


def test_divergence_in_the_first_epoch_says_nothing_was_saved(tiny_task, tmp_path, diverge_in_epoch, capsys):
    data, ckpt = tiny_task
    diverge_in_epoch(1)
    assert main(finetune_args(data, ckpt, tmp_path, "r", "--method", "standard", "--epochs", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"at epoch 1, iteration \d+; lower optim.lr or check the data \(no epoch was saved\)$", err), err
    assert not (tmp_path / "r" / "last.pt").exists()


def test_bench_says_which_cell_of_how_many_with_eta(tiny_task, tmp_path):
    data, ckpt = tiny_task
    spec = {"name": "two", "description": "two tiny cells", "seeds": [0],
            "tasks": {"t": {"title": "tiny", "config": {
                "data": {"name": "{data}", "batch_size": 32, "test_n": 8},
                "model": {"arch": "cifar_resnet20", "checkpoint": str(ckpt), "options": {"width": 4}},
                "eval": {"val_steps": 1, "test_steps": 1}, "train": {"epochs": 1}},
                "cells": {"a": {"method": "standard"}, "b": {"method": "standard", "set": {"optim.lr": 0.01}}}}}}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(spec))
    protocol, roots = load_protocol(path), {"data": str(data), "models": str(data)}
    lines: list[str] = []
    run_protocol(protocol, tmp_path / "out", roots, log=lines.append)
    cells = [line for line in lines if line.startswith("[two] cell ")]
    assert re.fullmatch(r"\[two\] cell 1/2 t / a / seed 0: running \(0 s so far\)", cells[0]), cells
    assert re.fullmatch(r"\[two\] cell 2/2 t / b / seed 0: running \(\d+ s so far, ETA \d+ s\)", cells[1]), cells
    lines.clear()
    run_protocol(protocol, tmp_path / "out", roots, log=lines.append)
    cells = [line.split(" (")[0] for line in lines if line.startswith("[two] cell ")]
    assert cells == [f"[two] cell {i}/2 t / {label} / seed 0: finished, reused" for i, label in ((1, "a"), (2, "b"))]
