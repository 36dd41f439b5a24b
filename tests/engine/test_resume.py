"""A run killed with SIGKILL mid-epoch and resumed ends exactly where an uninterrupted run ends."""

import json
import subprocess
import sys
import time

import pytest
import torch

from support import finetune_args, robustft_cmd, run_env, run_ok

# The CLI with deterministic algorithms on (cuBLAS needs its workspace fixed before the first call): what makes a CUDA
# run repeat bit for bit; on the CPU the same.
DETERMINISTIC = ("-c", "import sys, torch; torch.use_deterministic_algorithms(True, warn_only=True); "
                       "from robustft.cli import main; sys.exit(main(sys.argv[1:]))")


def _final(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    weights = torch.load(run_dir / "model.pt", weights_only=True)
    return results["test"], results["stages"]["main"]["best_epoch"], weights


@pytest.mark.cuda
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tiny_task, tmp_path, device, monkeypatch):
    data, ckpt = tiny_task
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    on_device = ("--set", f"train.device={device}")

    def cli(*args: str) -> list[str]:
        return [sys.executable, *DETERMINISTIC, *args]

    run_ok(cli(*finetune_args(data, ckpt, tmp_path, "straight", "--epochs", "3", *on_device)))

    args = finetune_args(data, ckpt, tmp_path, "killed", "--epochs", "3", *on_device)
    proc = subprocess.Popen(cli(*args), env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()
    time.sleep(0.2 if device.type == "cpu" else 0)  # inside epoch 2 (an epoch takes ~1 s on 2 cores, less on a GPU)
    proc.kill()
    proc.wait()
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 1, "the kill should land in epoch 2"
    assert not (tmp_path / "killed" / "results.json").exists()

    run_ok(cli(*args, "--resume"))
    test_a, best_a, w_a = _final(tmp_path / "straight")
    test_b, best_b, w_b = _final(tmp_path / "killed")
    assert best_a == best_b
    assert test_a["clean_acc"] == test_b["clean_acc"] and test_a["robust_acc"] == test_b["robust_acc"]
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a), "weights must be bit-identical"
    history = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_resume_refuses_a_changed_config(tiny_task, tmp_path):
    data, ckpt = tiny_task
    run_ok(robustft_cmd(*finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1")))
    proc = subprocess.run(robustft_cmd(*finetune_args(data, ckpt, tmp_path, "r", "--epochs", "2", "--resume")),
                          env=run_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and "config differs" in proc.stderr
    proc = subprocess.run(robustft_cmd(*finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1")),
                          env=run_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr


def test_a_run_started_before_a_key_existed_is_reused_while_that_key_is_at_its_default(tiny_task, tmp_path):
    """Upgrading robustft adds config keys; a finished run whose config.yaml lacks one (at its default) is reused,
    one that lacks a key set otherwise now, or holds a key robustft no longer has, is refused."""
    import yaml

    data, ckpt = tiny_task
    run_ok(robustft_cmd(*finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1")))
    saved = tmp_path / "r" / "config.yaml"
    config = yaml.safe_load(saved.read_text())
    del config["train"]["channels_last"], config["data"]["split_seed"]  # as if written before those keys existed
    saved.write_text(yaml.safe_dump(config))
    reused = run_ok(robustft_cmd(*finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1", "--resume")))
    assert "epoch 1/1" not in reused.stdout, "the finished run is reused, not trained again"
    changed = subprocess.run(robustft_cmd(*finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1", "--resume",
                                                         "--set", "data.split_seed=7")),
                             env=run_env(), capture_output=True, text=True)
    assert changed.returncode == 2 and "config differs" in changed.stderr
    config["train"]["retired_key"] = 1
    saved.write_text(yaml.safe_dump(config))
    retired = subprocess.run(robustft_cmd(*finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1", "--resume")),
                             env=run_env(), capture_output=True, text=True)
    assert retired.returncode == 2 and "config differs" in retired.stderr
