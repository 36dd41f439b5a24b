"""A run that cannot start leaves nothing behind; a run directory has one owner at a time; runs say what they do."""

import subprocess
import time

import numpy as np
import pytest
import torch

from robustft.cli import main
from support import error_line, finetune_args, robustft_cmd, run_env


def _error_line(capsys) -> str:
    return error_line(capsys.readouterr().err)


@pytest.mark.parametrize("bad,match", [
    (["--method", "twins", "--set", "method_args.lamb=1"], "method_args.lamb"),
    (["--set", "attack.norm=l7"], "l7"),
    (["--set", "attack.eps=8"], "8/255"),
    (["--set", "data.val_n=0"], "data.val_n"),
    (["--set", "data.batch_size=-5"], "data.batch_size"),
    (["--set", "data.eval_batch_size=0"], "data.eval_batch_size"),
    (["--set", "train.log_every=0"], "train.log_every"),
    (["--set", "data.crop_padding=-4"], "data.crop_padding"),
    (["--set", "optim.momentum=5"], "optim.momentum"),
    (["--set", "model.options.widht=4"], "widht"),
    (["--set", "eval.test_attacks=[cw]"], "cw"),
    (["--set", "data.test_fraction=0.2"], "has a test split of its own; remove data.test_fraction"),
    (["--set", "data.classes=[0, 1]", "--set", "eval.corruption_dir=c10c"], "eval.corruption_dir holds"),
    (["--set", "data.classes=[1, 1]"], "distinct classes"),
])
def test_a_failed_start_writes_nothing(tiny_task, tmp_path, capsys, bad, match):
    data, ckpt = tiny_task
    assert main(finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1", *bad)) == 2
    assert match in _error_line(capsys)
    assert not (tmp_path / "r").exists(), "nothing is written before every value is checked"


def test_a_bad_data_path_writes_nothing_and_the_corrected_command_runs(tiny_task, tmp_path, capsys):
    data, ckpt = tiny_task
    args = finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1")
    bad = [a if a != str(data) else str(data / "missing") for a in args]
    assert main(bad) == 2
    assert "does not exist" in _error_line(capsys)
    assert not (tmp_path / "r").exists()
    assert main(args) == 0
    assert (tmp_path / "r" / "results.json").exists()


def test_a_config_without_a_finished_epoch_is_reused(tiny_task, tmp_path, capsys):
    """What an earlier failed start left (a config.yaml and nothing else) does not block the corrected command,
    with or without --resume, even though that config differs."""
    data, ckpt = tiny_task
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("method: twins\nmethod_args: {lamb: 1}\n")
    assert main(finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1", "--resume")) == 0
    out = capsys.readouterr().out
    assert "no finished epoch" in out and "starting it anew" in out
    assert (run_dir / "results.json").exists() and "lamb" not in (run_dir / "config.yaml").read_text()


def test_missing_test_split_is_found_before_training(tiny_task, tmp_path, capsys):
    data, ckpt = tiny_task
    only_train = tmp_path / "only_train"
    only_train.mkdir()
    (only_train / "train.npz").write_bytes((data / "train.npz").read_bytes())
    assert main(finetune_args(only_train, ckpt, tmp_path, "r", "--epochs", "1")) == 2
    assert "no test split" in _error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_a_second_process_on_the_same_run_is_refused(tiny_task, tmp_path, capsys):
    data, ckpt = tiny_task
    args = finetune_args(data, ckpt, tmp_path, "r", "--epochs", "50")
    holder = subprocess.Popen(robustft_cmd(*args), env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "r" / "config.yaml").exists() and holder.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert holder.poll() is None, holder.stderr.read().decode()
        for extra in ([], ["--resume"]):
            assert main(args + extra) == 2
            line = _error_line(capsys)
            assert "in use by another robustft process" in line and f"pid {holder.pid}" in line
        assert holder.poll() is None, "the refused processes must not disturb the running one"
    finally:
        holder.kill()
        holder.wait()


def test_resume_removes_what_a_killed_write_left(tiny_task, tmp_path, capsys):
    data, ckpt = tiny_task
    args = finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1")
    assert main(args) == 0
    run_dir = tmp_path / "r"
    (run_dir / "results.json").unlink()  # as if killed between the last epoch and the end of the run
    stale = run_dir / ".last.pt.k3j2_x9a.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert main(args + ["--resume"]) == 0
    assert not stale.exists() and f"removed {stale}" in capsys.readouterr().out
    assert (run_dir / "results.json").exists()


def test_disk_full_during_training_is_one_line_and_does_not_block(tiny_task, tmp_path, capsys, monkeypatch):
    data, ckpt = tiny_task
    args = finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1")

    def full_disk(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 9856 vs 9744")

    with monkeypatch.context() as m:
        m.setattr(torch, "save", full_disk)
        assert main(args) == 2
    line = _error_line(capsys)
    assert "cannot write" in line and "disk full" in line
    assert not list((tmp_path / "r").rglob("*.tmp")), "no temporary file is left behind"
    assert main(args) == 0, "the same command runs once the disk has space again"


def test_unwritable_output_is_refused_before_the_work(tiny_task, tmp_path, capsys):
    data, ckpt = tiny_task
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(finetune_args(data, ckpt, blocker, "r", "--epochs", "1")) == 2
    assert "not a directory" in _error_line(capsys)


def test_yaml_syntax_error_is_one_line(tiny_task, tmp_path, capsys):
    data, ckpt = tiny_task
    config = tmp_path / "bad.yaml"
    config.write_text("method: pgd_at\noptim:\n  lr: [0.1\n  momentum: 0.9\n")
    assert main(["finetune", "--config", str(config), *finetune_args(data, ckpt, tmp_path, "r")[1:]]) == 2
    line = _error_line(capsys)
    assert "is not valid YAML" in line and "line 4, column 11" in line


@pytest.fixture
def two_class_task(tmp_path, tiny_task):
    """The tiny task's images relabelled into 2 classes: a label set the 4-class source model's head does not fit."""
    data, _ = tiny_task
    root = tmp_path / "two"
    root.mkdir()
    for split in ("train", "test"):
        arrays = np.load(data / f"{split}.npz")
        np.savez(root / f"{split}.npz", x=arrays["x"], y=arrays["y"] % 2)
    return root


def test_rift_with_a_head_that_does_not_fit_is_refused(tiny_task, two_class_task, tmp_path, capsys):
    _, ckpt = tiny_task
    assert main(finetune_args(two_class_task, ckpt, tmp_path, "r", "--method", "rift", "--epochs", "1")) == 2
    line = _error_line(capsys)
    assert "rift does not train the classifier" in line and "--init-head" in line and "4-class" in line
    assert not (tmp_path / "r").exists()


def test_rift_runs_with_a_probed_head(tiny_task, two_class_task, tmp_path, capsys):
    """The fix the refusal names: probe a head first, then RiFT starts from it."""
    _, ckpt = tiny_task
    assert main(finetune_args(two_class_task, ckpt, tmp_path, "probe", "--method", "adv_linear_probe",
                              "--epochs", "1")) == 0
    assert main(finetune_args(two_class_task, ckpt, tmp_path, "rift", "--method", "rift", "--epochs", "1",
                              "--init-head", str(tmp_path / "probe"), "--set", "method_args.mrc_n=16",
                              "--set", "method_args.mrc_steps=1", "--set", "method_args.alphas=[1.0]")) == 0
    assert f"initialized from {tmp_path / 'probe'}" in capsys.readouterr().out


def test_console_names_threat_model_head_image_size_and_small_validation(tiny_task, two_class_task, tmp_path,
                                                                         capsys):
    _, ckpt = tiny_task
    assert main(finetune_args(two_class_task, ckpt, tmp_path, "r", "--epochs", "1")) == 0
    out = capsys.readouterr()
    assert "threat model: linf eps 8/255 (0.0314); train PGD-2" in out.out
    assert "a new 2-class head replaces the source's 4-class head (random init)" in out.out
    assert "of 32x32 pixels" in out.out
    assert "robustft: warning: the validation split has only 32 images" in out.err


def test_each_stage_says_which_key_sets_its_budget(tiny_task, tmp_path, capsys):
    data, ckpt = tiny_task
    assert main(finetune_args(data, ckpt, tmp_path, "r", "--method", "roli", "--epochs", "1",
                              "--set", "method_args.lp_epochs=2")) == 0
    out = capsys.readouterr().out
    assert "budget: stage lp 2 epochs (method_args.lp_epochs), stage ft 1 epochs (train.epochs)" in out
