"""train.report_to: TensorBoard and W&B (offline) get per-step rows (train/loss, train/acc, lr) and per-epoch rows
(val/clean, val/robust, ...) on the optimizer-step axis; a run killed mid-epoch and resumed shows every step once,
with the values of an uninterrupted run. Read back from the real writers' files: TensorBoard's event files (as
TensorBoard shows them, purged events hidden) and W&B's offline ``run-<id>.wandb`` record log.

Needs the ``tensorboard`` and ``wandb`` extras (scripts/test.sh installs both); the error-path test hides each package.
"""

import json
import struct
import sys

import pytest

import robustft.engine.train as train_module
from robustft.cli import main
from robustft.engine import load_config
from support import error_line, finetune_args

TRACKED = ("--epochs", "2", "--set", "train.report_to=[tensorboard,wandb]", "--set", "train.log_every=4")
ITERS = 9  # 288 training images / batch 32
STEP_ROWS = [4, 8, 9, 13, 17, 18]  # every 4th step of each epoch and its last


def _tensorboard(logdir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag's (step, value) events, as TensorBoard shows them (purged events hidden)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _wandb_rows(path) -> list[dict]:
    """The history rows of a W&B offline run file: a LevelDB-style log (7-byte ':W&B' header, 32 KiB blocks of
    records with a 7-byte crc/length/type header, long records split FIRST/MIDDLE/LAST) of protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunks, rows = 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is zero padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                rows.append({k: v for k, v in items.items() if not k.startswith("_")} | {"_step": items["_step"]})
    return rows


def _wandb_history(wandb_dir, run_dir) -> list[dict]:
    """Every row logged to the run's W&B run (id from <run>/wandb.json), over all attempts, in order."""
    run_id = json.loads((run_dir / "wandb.json").read_text())["id"]
    files = sorted(wandb_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert files, f"no offline W&B run {run_id} under {wandb_dir}"
    return [row for f in files for row in _wandb_rows(f)]


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_files"))
    (tmp_path / "wandb_files").mkdir()
    return tmp_path / "wandb_files"


def test_step_and_epoch_rows_and_a_killed_run_resumes_without_duplicates(tiny_task, tmp_path, offline_wandb,
                                                                          monkeypatch):
    data, ckpt = tiny_task
    assert main(finetune_args(data, ckpt, tmp_path, "whole", *TRACKED)) == 0
    whole = tmp_path / "whole"
    history = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    board = _tensorboard(whole / "tensorboard")
    assert {"train/loss", "train/acc", "lr", "val/clean", "val/robust", "train/epoch_loss", "time/epoch_s",
            "epoch"} <= set(board)
    assert [s for s, _ in board["train/loss"]] == STEP_ROWS
    assert board["val/robust"] == [(ITERS * h["epoch"], pytest.approx(h["val_robust_acc"])) for h in history]
    assert board["epoch"] == [(9, 1.0), (18, 2.0)]
    # step rows are the means since the previous row: weighted by their step counts they give the epoch's mean
    losses = dict(board["train/loss"])
    assert (4 * losses[4] + 4 * losses[8] + losses[9]) / 9 == pytest.approx(history[0]["train_loss"], rel=1e-5)
    rows = _wandb_history(offline_wandb, whole)
    assert [r["_step"] for r in rows] == STEP_ROWS
    assert rows[2]["val/clean"] == pytest.approx(history[0]["val_clean_acc"])
    assert rows[2]["train/loss"] == pytest.approx(losses[9])

    # kill in epoch 2 after its step-13 row was written, then resume
    step, calls = train_module._step, []

    def dying_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == ITERS + 6:
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    monkeypatch.setattr(train_module, "_step", dying_step)
    args = finetune_args(data, ckpt, tmp_path, "killed", *TRACKED)
    assert main(args) == 130
    killed = tmp_path / "killed"
    assert [s for s, _ in _tensorboard(killed / "tensorboard")["train/loss"]] == [4, 8, 9, 13]
    monkeypatch.setattr(train_module, "_step", step)
    assert main([*args, "--resume"]) == 0
    again = _tensorboard(killed / "tensorboard")
    assert {tag: [s for s, _ in v] for tag, v in again.items()} == {tag: [s for s, _ in v] for tag, v in board.items()}
    assert {t: v for t, v in again.items() if not t.startswith("time/")} == {
        t: v for t, v in board.items() if not t.startswith("time/")}, "every step once, the uninterrupted run's values"
    resumed = _wandb_history(offline_wandb, killed)
    assert [r["_step"] for r in resumed] == STEP_ROWS, "W&B: the resumed attempt continues after the last row"
    for a, b in zip(rows, resumed, strict=True):
        assert set(a) == set(b)
        for key in a:
            if not key.startswith("time/"):
                assert b[key] == pytest.approx(a[key], rel=1e-6), (a["_step"], key)
    state = json.loads((killed / "wandb.json").read_text())
    assert state["step"] == 18 and len(list(offline_wandb.glob(f"wandb/offline-run-*-{state['id']}"))) == 2


def test_deprecated_tensorboard_key_moves_into_report_to(capsys):
    pytest.importorskip("tensorboard")
    cfg = load_config(None, ["data.name=x", "train.tensorboard=true", "train.report_to=[tensorboard]"])
    assert cfg.train.report_to == ["tensorboard"] and cfg.train.tensorboard is False
    assert "train.tensorboard is deprecated: use train.report_to=[tensorboard]" in capsys.readouterr().err


@pytest.mark.parametrize(("tracker", "modules"), [("tensorboard", ("tensorboard", "torch.utils.tensorboard")),
                                                  ("wandb", ("wandb",))])
def test_without_the_package_the_run_stops_in_one_line_before_writing(tracker, modules, tiny_task, tmp_path, capsys,
                                                                       monkeypatch):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # `import <module>` now raises ImportError
    data, ckpt = tiny_task
    assert main(finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1", "--set",
                              f"train.report_to=[{tracker}]")) == 2
    line = error_line(capsys.readouterr().err)
    assert f"train.report_to names {tracker} but" in line and "cannot be imported" in line
    assert f"pip install 'robustft[{tracker}]'" in line and "remove it from train.report_to" in line
    assert not (tmp_path / "r").exists(), "nothing is written"
