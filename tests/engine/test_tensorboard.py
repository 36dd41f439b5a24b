"""train.tensorboard: the per-epoch scalars of metrics.jsonl as TensorBoard events under <run>/tensorboard/, restated
(not repeated) on resume; without the optional package, one error line before anything is written.

The real-writer test needs the ``tensorboard`` extra (pip install 'robustft[tensorboard]') and is skipped, with that
reason, where it is missing; the error-path test always runs (it hides the package when it is installed)."""

import json
import sys

import pytest

from robustft.cli import main
from support import error_line, finetune_args

TENSORBOARD = ("--set", "train.tensorboard=true")


def _scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag's (step, value) events, as TensorBoard shows them (purged events hidden)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_the_events_hold_the_metrics_jsonl_scalars_and_a_resume_restates_them(tiny_task, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install "
                        "'robustft[tensorboard]'): the real writer is not tested here")
    data, ckpt = tiny_task
    args = finetune_args(data, ckpt, tmp_path, "r", "--epochs", "2", *TENSORBOARD)
    assert main(args) == 0
    run = tmp_path / "r"
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = {k for h in history for k, v in h.items() if k != "epoch" and isinstance(v, (int, float))}
    assert {"lr", "train_loss", "train_acc", "val_clean_acc", "val_robust_acc", "epoch_s"} <= keys
    scalars = _scalars(run / "tensorboard")
    assert set(scalars) == keys
    for key in keys:
        assert scalars[key] == [(h["epoch"], pytest.approx(h[key], rel=1e-6)) for h in history], key

    (run / "results.json").unlink()  # as if killed after the last epoch: the resume rewrites the events
    assert main([*args, "--resume"]) == 0
    assert _scalars(run / "tensorboard") == scalars, "each epoch once, with its logged values"


def test_without_the_package_the_run_stops_in_one_line_before_writing(tiny_task, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now raises ImportError
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    data, ckpt = tiny_task
    assert main(finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1", *TENSORBOARD)) == 2
    line = error_line(capsys.readouterr().err)
    assert "train.tensorboard is true but TensorBoard cannot be imported" in line
    assert "pip install 'robustft[tensorboard]'" in line and "train.tensorboard=false" in line
    assert not (tmp_path / "r").exists(), "nothing is written"
