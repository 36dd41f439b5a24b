"""AutoAttack sharded over torchrun ranks (2 gloo processes on CPU): every image's flags equal one process's.

AutoAttack seeds itself at every call and each rank runs whole batches of the one-process batching, so the match is
exact, not statistical: the same adversarial example for every image. Batches of 4 over 16 images: 4 batches, so
each rank runs 2, interleaved. The model is trained for a few steps so that the attack flips some images, not all.
"""

import json
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustft.cli import main
from robustft.models import create_model, save_state_dict
from support import robustft_cmd, run_env, run_ok

TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")


@pytest.fixture(scope="module")
def trained(tiny_task, tmp_path_factory):
    """(data dir with 16 test images, checkpoint): a width-4 CIFAR ResNet-20 trained (clean, 40 Adam steps) on the
    tiny task, so most test images are right."""
    data, _ = tiny_task
    train = np.load(data / "train.npz")
    x, y = torch.tensor(train["x"]).permute(0, 3, 1, 2).float() / 255, torch.tensor(train["y"]).long()
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", num_classes=4, width=4)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(40):
        i = torch.randint(0, len(x), (64,))
        loss = F.cross_entropy(model(x[i]), y[i])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    root = tmp_path_factory.mktemp("trained")
    test = np.load(data / "test.npz")  # its first 16 images (torchrun would take evaluate's --n for its own --nnodes)
    np.savez(root / "test.npz", x=test["x"][:16], y=test["y"][:16])
    return root, save_state_dict(model, root / "model.pt")


def _evaluate(data, ckpt, out, *extra: str) -> list[str]:
    return ["evaluate", "--arch", "cifar_resnet20", "--model-arg", "width=4", "--checkpoint", str(ckpt), "--data",
            str(data), "--attack", "autoattack", "--aa-version", "custom", "--aa-attacks", "apgd-ce",
            "--eps", "2/255", "--batch-size", "4", "--json", str(out), *extra]


@pytest.mark.slow
def test_two_ranks_give_one_process_flags(trained, tmp_path):
    data, ckpt = trained
    run_ok(robustft_cmd(*_evaluate(data, ckpt, tmp_path / "one.json")))
    proc = run_ok(robustft_cmd(*_evaluate(data, ckpt, tmp_path / "two.json", "--leaderboard-json",
                                          str(tmp_path / "board.json")), launcher=TORCHRUN))
    one, two = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert one["n"] == two["n"] == 16
    clean, robust = one["samples"]["clean"], one["samples"]["autoattack"]
    assert 0 < robust.count("1") < clean.count("1"), "the attack must flip some images, not all, to mean anything"
    assert two["samples"] == one["samples"], "per-image flags identical to one process"
    assert (two["clean_acc"], two["robust_acc"]) == (one["clean_acc"], one["robust_acc"])
    assert proc.stdout.count("n=16") == 1, "only rank 0 prints"
    assert json.loads((tmp_path / "board.json").read_text())["n_ex"] == 16


def test_under_torchrun_evaluate_takes_autoattack_alone(trained, tmp_path):
    data, ckpt = trained
    cmd = robustft_cmd(*_evaluate(data, ckpt, tmp_path / "r.json", "--attack", "pgd"), launcher=TORCHRUN)
    done = subprocess.run(cmd, env=run_env(), capture_output=True, text=True)
    assert done.returncode != 0 and "evaluate shards AutoAttack only" in done.stderr
    assert not (tmp_path / "r.json").exists()


def test_the_json_record_holds_the_per_image_flags(trained, tmp_path):
    data, ckpt = trained
    assert main(_evaluate(data, ckpt, tmp_path / "r.json", "--n", "4")) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert set(record["samples"]) == {"clean", "autoattack", "worst_case"} and len(record["samples"]["clean"]) == 4
