"""``Method.epoch_end``: the engine scales the learning rate (and keeps it scaled through the schedule), continues
from ``best.pt``, ends the stage when asked, records each decision in the history and checkpoint, and a resumed
stage that had stopped trains no further. The base method decides nothing."""

import pytest
import torch

from robustft.attacks import PGD
from robustft.data import load_dataset
from robustft.engine import DistInfo, fit, load_config
from robustft.layout import RunLayout
from robustft.methods import EpochDecision, Method, ObjectiveConfig
from support import tiny_resnet


class Scripted(Method):
    """Clean training that returns the scripted decision after epoch n and records the weights around it."""

    def __init__(self, decisions: dict[int, EpochDecision], best_path) -> None:
        super().__init__(ObjectiveConfig(objective="clean"), PGD(steps=1))
        self.decisions, self.best_path = decisions, best_path
        self.started: list[dict[str, torch.Tensor]] = []  # weights at the start of each epoch
        self.best_then: dict[int, dict[str, torch.Tensor]] = {}  # best.pt when epoch n ended
        self.spoiled: dict[int, dict[str, torch.Tensor]] = {}

    def train_mode(self, model):
        self.started.append({k: v.clone() for k, v in model.state_dict().items()})
        model.train()

    def epoch_end(self, model, history):
        n = len(history)
        decision = self.decisions.get(n, EpochDecision())
        self.best_then[n] = torch.load(self.best_path, weights_only=True)
        if decision.reload_best:  # move the weights away from best.pt, so that the reload cannot be a no-op
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1.0)
            self.spoiled[n] = {k: v.clone() for k, v in model.state_dict().items()}
        return decision


@pytest.fixture
def task(tiny_task, tmp_path):
    data, _ = tiny_task
    cfg = load_config(None, ["data.batch_size=32", "optim.lr=0.1", "optim.schedule=constant", "eval.val_steps=1",
                             "train.channels_last=false", "attack.steps=1", "train.epochs=4"])
    train = load_dataset(data, "train", n=128)
    val = load_dataset(data, "val", n=32)
    return cfg, train, val, tmp_path / "run"


def _fit(method, cfg, train, val, run_dir, resume=False):
    model = tiny_resnet()
    return fit(method, model, train, val, cfg, run_dir, DistInfo(0, 1, torch.device("cpu")), resume=resume,
               log=lambda s: None), model


def test_scale_reload_and_stop_are_carried_out_and_recorded(task):
    cfg, train, val, run_dir = task
    layout = RunLayout(run_dir)
    method = Scripted({2: EpochDecision(lr_scale=0.5, reload_best=True), 3: EpochDecision(stop=True)}, layout.best)
    result, model = _fit(method, cfg, train, val, run_dir)

    assert [h["epoch"] for h in result.history] == [1, 2, 3], "stopped after epoch 3 of 4"
    assert [h["lr"] for h in result.history] == pytest.approx([0.1, 0.1, 0.05])
    assert result.history[1]["lr_scale"] == 0.5 and "lr_scale" not in result.history[2]
    assert result.history[2]["stopped"] is True and "stopped" not in result.history[1]
    assert not any("lr_scale" in h or "reloaded_epoch" in h for h in (result.history[0], result.history[2]))
    # epoch 3 started from the weights best.pt held when epoch 2 ended, not from the (spoiled) weights it ended with
    reloaded = result.history[1]["reloaded_epoch"]
    assert reloaded in (1, 2)
    started = method.started[2]
    assert all(torch.equal(started[k], method.best_then[2][k]) for k in started)
    assert not all(torch.equal(started[k], method.spoiled[2][k]) for k in started)

    # the checkpoint carries the scaled rate in the optimizer and the schedule, and the stop in the history
    state = torch.load(layout.last, weights_only=True)
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == pytest.approx([0.05])
    assert state["scheduler"]["base_lrs"] == pytest.approx([0.05])
    assert state["history"][-1]["stopped"] is True

    # resuming a stage that stopped trains nothing more
    again = Scripted({}, layout.best)
    resumed, _ = _fit(again, cfg, train, val, run_dir, resume=True)
    assert again.started == [] and [h["epoch"] for h in resumed.history] == [1, 2, 3]


def test_a_scaled_rate_keeps_the_schedules_shape(task):
    """With a decaying schedule the scale multiplies the schedule's rates from then on (its base rates)."""
    cfg, train, val, run_dir = task
    cfg = load_config(None, ["data.batch_size=32", "optim.lr=0.1", "optim.schedule=multistep", "optim.milestones=[3.5]",
                             "optim.gamma=0.1", "eval.val_steps=1", "train.channels_last=false", "attack.steps=1",
                             "train.epochs=4"])
    method = Scripted({1: EpochDecision(lr_scale=0.5)}, RunLayout(run_dir).best)
    result, _ = _fit(method, cfg, train, val, run_dir)
    assert [h["lr"] for h in result.history] == pytest.approx([0.1, 0.05, 0.05, 0.005])


def test_the_base_method_decides_nothing(task):
    cfg, train, val, run_dir = task
    assert not Method(ObjectiveConfig()).epoch_end(torch.nn.Linear(1, 1), [{"epoch": 1}]).acts
    with pytest.raises(ValueError, match="lr_scale"):
        EpochDecision(lr_scale=0.0)
    cfg = load_config(None, ["data.batch_size=32", "eval.val_steps=1", "train.channels_last=false", "attack.steps=1",
                             "train.epochs=2", "method=standard"])
    result, _ = _fit(Method(ObjectiveConfig(objective="clean"), PGD(steps=1)), cfg, train, val, run_dir)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert not any({"lr_scale", "reloaded_epoch", "stopped"} & set(h) for h in result.history)
