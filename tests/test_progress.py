"""Progress reports: plain lines on a time interval off a terminal (count, elapsed, rate, ETA), a bar on one, items
passed through unchanged; evaluate, AutoAttack, corruptions and MRC report through the CLI."""

import io
import re
from types import SimpleNamespace

import pytest
import torch

from robustft import progress
from robustft.attacks import AutoAttack
from robustft.cli import main
from robustft.errors import UserError
from robustft.models import create_model, save_state_dict
from robustft.progress import duration, track


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """A fake clock for robustft.progress: each step the caller takes lasts 10 s."""
    now = [0.0]
    monkeypatch.setattr(progress, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    return now


def _steps(items, now):
    """Consume ``items`` like a caller whose work on each takes 10 s; returns what was yielded."""
    out = []
    for item in items:
        now[0] += 10
        out.append(item)
    return out


def test_every_step_reports_count_rate_and_eta_at_interval_zero(clock):
    stream = io.StringIO()
    items = [object() for _ in range(10)]
    bar = track(items, desc="evaluate", interval_s=0, stream=stream)
    assert _steps(bar, clock) == items  # the very objects, in order
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[2] == "evaluate: 3/10 batches in 30 s, 10.0 s/batch, ETA 0:01:10"
    assert lines[-1] == "evaluate: 10/10 batches in 0:01:40, 10.0 s/batch, ETA 0 s"


def test_lines_come_on_the_interval_with_the_postfix(clock):
    stream = io.StringIO()
    bar = track(range(10), desc="epoch 1/2", interval_s=25, stream=stream)
    for i in bar:
        clock[0] += 10
        bar.set_postfix(f"loss {i:.2f}")
    assert stream.getvalue().splitlines() == [
        "epoch 1/2: 3/10 batches in 30 s, 10.0 s/batch, ETA 0:01:10, loss 2.00",
        "epoch 1/2: 6/10 batches in 0:01:00, 10.0 s/batch, ETA 40 s, loss 5.00",
        "epoch 1/2: 9/10 batches in 0:01:30, 10.0 s/batch, ETA 10 s, loss 8.00"]


def test_a_short_phase_prints_nothing():
    stream = io.StringIO()
    assert list(track(range(100), desc="quick", interval_s=3600, stream=stream)) == list(range(100))
    assert stream.getvalue() == ""


def test_unknown_total_has_no_eta(clock):
    stream = io.StringIO()
    _steps(track((i for i in range(3)), desc="mrc", unit="module", interval_s=0, stream=stream), clock)
    assert stream.getvalue().splitlines()[-1] == "mrc: 3 modules in 30 s, 10.0 s/module"


def test_fast_steps_report_a_rate_per_second():
    line = track([], total=40, desc="evaluate").line(12, 4.0)
    assert line == "evaluate: 12/40 batches in 4 s, 3.0 batch/s, ETA 9 s"


def test_a_terminal_gets_a_bar_and_disabled_gets_nothing():
    items = [object() for _ in range(5)]
    tty = _Terminal()
    bar = track(items, desc="epoch 1/1", interval_s=0, stream=tty)
    seen = []
    for item in bar:
        bar.set_postfix("loss 1.0")
        seen.append(item)
    assert seen == items
    assert "epoch 1/1" in tty.getvalue() and "ETA" not in tty.getvalue()  # tqdm's own format, not the lines
    quiet = io.StringIO()
    assert list(track(items, interval_s=0, stream=quiet, enabled=False)) == items
    assert quiet.getvalue() == ""


def test_interval_comes_from_the_environment_at_call_time(monkeypatch, capsys):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    list(track(range(2), desc="env"))
    assert capsys.readouterr().err.splitlines()[0].startswith("env: 1/2 batches in ")
    monkeypatch.setenv(progress.INTERVAL_ENV, "soon")
    with pytest.raises(UserError, match=progress.INTERVAL_ENV):
        track(range(2))


@pytest.mark.parametrize("seconds, text", [(0.2, "0 s"), (42, "42 s"), (59.4, "59 s"), (59.6, "0:01:00"),
                                           (70, "0:01:10"), (3723, "1:02:03"), (90000, "25:00:00")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_autoattack_per_attack_runs_match_one_pyautoattack_call(tiny_model, batch, monkeypatch, capsys):
    """AutoAttack reports per attack by calling pyautoattack once per attack; x_adv is unchanged by that."""
    from pyautoattack import AutoAttack as _AA

    from robustft.attacks.autoattack import _ContiguousInput
    from robustft.attacks.fold import folded_view

    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    x, y = batch
    tiny_model.features[1].reset_running_stats()  # unit statistics: predictions vary, so some points are attacked
    ours = AutoAttack(eps=8 / 255, version="custom", attacks=["apgd-ce", "apgd-dlr"], batch_size=10).perturb(
        tiny_model, x, y)
    reference = _AA(_ContiguousInput(folded_view(tiny_model)), norm="Linf", eps=8 / 255, version="custom",
                    attacks=["apgd-ce", "apgd-dlr"], seed=0)
    theirs, _ = reference.run_standard_evaluation(x, y, batch_size=10)
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, x), "the attack should fool this tiny model on some points"
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" in ")[0] for line in lines] == ["autoattack: 1/2 attacks", "autoattack: 2/2 attacks"]


# -- through the CLI --------------------------------------------------------------------------------------------
_LINE = r"{}: (\d+)/(\d+) {} in [\d:]+( s)?, [\d.]+ (\w+/s|s/\w+), ETA [\d:]+( s)?$"


@pytest.fixture
def ckpt(tmp_path):
    """A default-width CIFAR ResNet-20 for the 4 classes of ``tiny_task``'s data (this seed calls every image class 0,
    so the evenly spaced subsets below, all class 0, are clean-correct and get attacked)."""
    torch.manual_seed(1)
    path = tmp_path / "m.pt"
    save_state_dict(create_model("cifar_resnet20", num_classes=4), path)
    return path


def _lines(err: str, desc: str, unit: str) -> list[tuple[int, int]]:
    """(done, total) of every progress line of ``desc``."""
    found = [re.match(_LINE.format(re.escape(desc), unit), line) for line in err.splitlines()]
    return [(int(m.group(1)), int(m.group(2))) for m in found if m]


def test_evaluate_reports_batches_and_corruptions(tiny_task, ckpt, monkeypatch, capsys):
    """(AutoAttack through the CLI takes ~10 s per 4 images with this model: its reports are tested above.)"""
    data, _ = tiny_task
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    assert main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(data),
                 "--n", "12", "--batch-size", "4", "--attack", "pgd", "--attack", "fgsm", "--steps", "2",
                 "--corruptions", "gaussian_noise,brightness", "--severity", "1,2"]) == 0
    out, err = capsys.readouterr()
    assert "clean 1.0000" in out
    assert _lines(err, "evaluate clean+pgd2+fgsm", "batches") == [(1, 3), (2, 3), (3, 3)]
    assert _lines(err, "corruptions", "sets") == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert "ETA" not in out, "progress goes to stderr"


def test_mrc_reports_examples_and_modules(tiny_task, ckpt, tmp_path, monkeypatch, capsys):
    data, _ = tiny_task
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    assert main(["mrc", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(data), "--n", "8",
                 "--batch-size", "4", "--steps", "1", "--attack-steps", "1",
                 "--out-dir", str(tmp_path / "mrc")]) == 0
    err = capsys.readouterr().err
    assert _lines(err, "mrc examples (pgd1)", "batches") == [(1, 2), (2, 2)]
    modules = _lines(err, "mrc", "modules")
    assert len(modules) == 22 and modules[-1] == (22, 22)  # every conv and the classifier of a ResNet-20
