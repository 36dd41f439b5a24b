"""A run that cannot start leaves nothing behind; a run directory has one owner at a time; runs say what they do."""

import fcntl
import hashlib
import json
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch

from robustft.cli import main
from support import Payload, error_line, finetune_args, robustft_cmd, run_env, tiny_resnet


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


# ---------------------------------------------------------------------------------------------------------------
# round 2 (#25): the run directory's own files, names, YAML and numbers
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad,match", [
    (["--set", "attack.eps=1e400"], "'attack.eps' must be a finite number"),
    (["--set", "train.seed=100000000000000000000"], "'train.seed' must be >= 0 and <= 4294967295"),
    (["--set", "optim.lr=.inf"], "'optim.lr' must be a finite number, got inf"),
    (["--set", "optim={lr: 0.01, lr: 50}"], "duplicate key 'lr'"),
    (["--set", "data.classes=[&a [0, 1], *a]"], "aliases (*a) are not supported"),
    (["--set", "model.options={width: &w 4, depth: *w}"], "aliases (*w) are not supported"),
    (["--set", "train.name=../x"], "train.name must be one directory name"),
    (["--set", "train.name=/tmp/elsewhere"], "train.name must be one directory name"),
    (["--set", "train.name=.."], "train.name must be one directory name"),
    (["--set", "train.name=."], "train.name must be one directory name"),
    (["--set", "train.name=''"], "train.name must be one directory name"),
])
def test_values_that_escape_or_explode_are_refused_at_load(tiny_task, tmp_path, capsys, bad, match):
    data, ckpt = tiny_task
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert main(finetune_args(data, ckpt, out, "r", "--epochs", "1", *bad)) == 2
    assert match in _error_line(capsys)
    assert time.perf_counter() - t0 < 10
    assert not out.exists() and not (tmp_path / "x").exists(), "nothing is written, inside or outside out_dir"


def _alias_bomb(levels: int = 8) -> str:
    """Under 1 KB of YAML that expands to 9**levels items when aliases are followed."""
    lines = ["a0: &a0 [0, 1, 2, 3, 4, 5, 6, 7, 8]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\ndata:\n  classes: [*a{levels - 1}]\n"


def test_a_yaml_alias_bomb_in_a_config_file_is_one_line_at_once(tiny_task, tmp_path, capsys):
    data, ckpt = tiny_task
    config = tmp_path / "bomb.yaml"
    config.write_text(_alias_bomb())
    assert len(config.read_bytes()) < 1024
    t0 = time.perf_counter()
    assert main(["finetune", "--config", str(config), *finetune_args(data, ckpt, tmp_path, "r")[1:]]) == 2
    assert "aliases (*a0) are not supported" in _error_line(capsys) and time.perf_counter() - t0 < 10


def test_a_long_value_is_quoted_short(tiny_task, tmp_path, capsys):
    data, ckpt = tiny_task
    assert main(finetune_args(data, ckpt, tmp_path, "r", "--set", f"train.epochs={list(range(100000))}")) == 2
    line = _error_line(capsys)
    assert "'train.epochs' must be int" in line and len(line) < 400


@pytest.mark.parametrize("content,match", [
    ("optim:\n  lr: 0.01\n  lr: 50\n".encode(), "duplicate key 'lr' at line 3"),
    ("method: pgd_at\ndata: {name: caf\xe9}\n".encode("latin-1"), "is not UTF-8 text"),
])
def test_a_config_file_with_duplicate_keys_or_not_utf8_is_one_line(tiny_task, tmp_path, capsys, content, match):
    data, ckpt = tiny_task
    config = tmp_path / "c.yaml"
    config.write_bytes(content)
    assert main(["finetune", "--config", str(config), *finetune_args(data, ckpt, tmp_path, "r")[1:]]) == 2
    assert match in _error_line(capsys)
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def finished_run(tiny_task, tmp_path_factory):
    """A finished one-epoch run directory and the arguments that made it (copy it before changing it)."""
    data, ckpt = tiny_task
    out = tmp_path_factory.mktemp("finished")
    args = finetune_args(data, ckpt, out, "r", "--epochs", "1")
    assert main(args) == 0
    return out / "r", args


def _copy_run(finished_run, tmp_path) -> tuple:
    """A copy of the finished run, its results removed (as if killed before testing), and its --resume arguments."""
    run_dir, args = finished_run
    copy = tmp_path / "r"
    shutil.copytree(run_dir, copy)
    (copy / "results.json").unlink()
    return copy, args + ["--run-dir", str(copy), "--resume"]


def _tamper(key: str, value):
    def change(path):
        state = torch.load(path, weights_only=True)
        if value is _DELETE:
            del state[key]
        else:
            state[key] = value
        torch.save(state, path)
    return change


_DELETE = object()


@pytest.mark.parametrize("damage,match", [
    (lambda p: p.write_bytes(b""), "last.pt is damaged: "),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "last.pt is damaged: "),
    (lambda p: p.write_bytes(p.read_bytes()[:5000]), "last.pt is damaged: "),
    (_tamper("epoch", "1"), "epoch is '1', not an int"),
    (_tamper("epoch", 1000000), "epoch 1000000 is outside 1..1"),
    (_tamper("optimizer", _DELETE), "it has no optimizer entry"),
    (_tamper("history", [{"epoch": 7}]), "its history does not list epochs 1..1"),
    (_tamper("model", {"conv1.weight": torch.zeros(1)}), "it does not fit this run"),
])
def test_a_damaged_last_pt_on_resume_is_one_line(finished_run, tmp_path, capsys, damage, match):
    run_dir, args = _copy_run(finished_run, tmp_path)
    damage(run_dir / "last.pt")
    t0 = time.perf_counter()
    assert main(args) == 2
    line = _error_line(capsys)
    assert "last.pt is damaged" in line and match in line and "delete it to restart" in line
    assert time.perf_counter() - t0 < 10 and not (run_dir / "results.json").exists()


def test_a_pickle_payload_in_last_pt_runs_no_code(finished_run, tmp_path, capsys):
    run_dir, args = _copy_run(finished_run, tmp_path)
    marker = tmp_path / "pwned"
    state = torch.load(run_dir / "last.pt", weights_only=True)
    state["history"][0]["note"] = Payload(marker)
    torch.save(state, run_dir / "last.pt")
    assert main(args) == 2
    line = _error_line(capsys)
    assert "last.pt is damaged" in line and "arbitrary code execution" in line and "weights_only" not in line
    assert not marker.exists()


def test_a_damaged_best_pt_is_one_line(finished_run, tmp_path, capsys):
    run_dir, args = _copy_run(finished_run, tmp_path)
    torch.save([1, 2], run_dir / "best.pt")
    assert main(args) == 2
    line = _error_line(capsys)
    assert "best.pt is damaged" in line and "holds a list" in line and "last.pt to retrain" in line


@pytest.mark.parametrize("config,match", [
    ("method: pgd_at\noptim: {lr: [0.1\n", "is not valid YAML"),
    (_alias_bomb(), "aliases (*a0) are not supported"),
])
def test_a_damaged_run_config_on_resume_is_one_line(finished_run, tmp_path, capsys, config, match):
    run_dir, args = _copy_run(finished_run, tmp_path)
    (run_dir / "config.yaml").write_text(config)
    t0 = time.perf_counter()
    assert main(args) == 2
    line = _error_line(capsys)
    assert "cannot resume" in line and match in line and time.perf_counter() - t0 < 10


def test_a_truncated_results_json_of_a_finished_run_is_one_line(finished_run, tmp_path, capsys):
    run_dir, args = _copy_run(finished_run, tmp_path)
    shutil.copy(finished_run[0] / "results.json", run_dir / "results.json")
    (run_dir / "results.json").write_text((run_dir / "results.json").read_text()[:100])
    assert main(args) == 2
    assert "results.json is damaged" in _error_line(capsys)


def test_run_dir_refuses_a_directory_that_is_not_a_run(tiny_task, tmp_path, capsys):
    """--run-dir on the user's own directory: refused, nothing of theirs deleted or overwritten."""
    data, ckpt = tiny_task
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    files = {mine / "results.json": "{\"mine\": 1}", mine / ".notes.swp.tmp": "swap",
             mine / "sub" / ".model.pt.abcd1234.tmp": "in flight"}
    for path, text in files.items():
        path.write_text(text)
    assert main(finetune_args(data, ckpt, tmp_path, "r", "--epochs", "1", "--run-dir", str(mine))) == 2
    line = _error_line(capsys)
    assert "not empty and not a robustft run directory" in line and "new or empty directory" in line
    assert all(path.read_text() == text for path, text in files.items())


def test_resume_removes_only_its_own_temporaries_where_it_writes(finished_run, tmp_path, capsys):
    run_dir, args = _copy_run(finished_run, tmp_path)
    own = run_dir / ".last.pt.k3j2_x9a.tmp"
    kept = [run_dir / ".notes.tmp", run_dir / "notes" / ".draft.md.abcd1234.tmp", run_dir / "tensorboard" / ".x.tmp"]
    for path in [own, *kept]:
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
    assert main(args) == 0
    assert not own.exists() and all(path.exists() for path in kept)


def test_the_lock_message_when_the_holder_has_not_written_its_pid(tmp_path):
    from robustft._io import locked
    from robustft.errors import UserError

    lock = tmp_path / ".lock"
    lock.touch()
    with open(lock) as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError) as err, locked(lock, "run directory"):
            pass
    assert "pid unknown" not in str(err.value) and "its pid is not written yet" in str(err.value)


def test_exports_and_checkpoints_are_byte_reproducible(tmp_path):
    from robustft._io import atomic_save
    from robustft.models import save_state_dict

    model = tiny_resnet()
    paths = [tmp_path / "a" / "model.pt", tmp_path / "b" / "other.pt"]
    for path in paths:
        save_state_dict(model, path)
    atomic_save({"model": model.state_dict(), "epoch": 1}, tmp_path / "last1.pt")
    atomic_save({"model": model.state_dict(), "epoch": 1}, tmp_path / "last2.pt")
    files = [*paths, tmp_path / "last1.pt", tmp_path / "last2.pt"]
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    assert digest[0] == digest[1] and digest[2] == digest[3]


def test_evaluate_json_never_overwrites_its_inputs(finished_run, tmp_path, capsys):
    run_dir, _ = finished_run
    data = finished_run[1][finished_run[1].index("--data") + 1]
    before = {p: p.read_bytes() for p in (run_dir / "model.pt", run_dir / "model.json")}
    for out in (run_dir / "model.pt", run_dir / "model.json"):
        assert main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(run_dir / "model.pt"),
                     "--data", data, "--steps", "1", "--json", str(out)]) == 2
        line = _error_line(capsys)
        assert f"--json {out} would overwrite" in line and "an input of this command" in line
    assert all(p.read_bytes() == b for p, b in before.items())


def test_a_finite_but_exploded_epoch_is_flagged_in_the_log_and_the_card(tiny_task, tmp_path, capsys, monkeypatch):
    """Epoch 2's training loss is 1e9 times epoch 1's and its validation at chance: warned, recorded, and the card of
    the model that keeps it (eval.select=last) says so."""
    from robustft.engine import train
    from robustft.methods import Method

    loss, validate = Method.loss, train._validate

    def exploding_loss(self, model, x, y, generator=None):
        value, stats = loss(self, model, x, y, generator)
        return value, {**stats, "loss": stats["loss"] * (1e9 if train_calls[-1] >= 2 else 1)}

    def chance_after_the_first(model, val, attack, cfg, info, epoch):
        return validate(model, val, attack, cfg, info, epoch) if epoch == 0 else {"val_clean_acc": 0.25,
                                                                                  "val_robust_acc": 0.25}

    train_calls = [0]
    train_mode = Method.train_mode
    monkeypatch.setattr(Method, "train_mode", lambda self, model: (train_calls.append(train_calls[-1] + 1),
                                                                    train_mode(self, model)))
    monkeypatch.setattr(Method, "loss", exploding_loss)
    monkeypatch.setattr(train, "_validate", chance_after_the_first)
    data, ckpt = tiny_task
    assert main(finetune_args(data, ckpt, tmp_path, "r", "--method", "standard", "--epochs", "2",
                              "--set", "eval.select=last")) == 0
    err = capsys.readouterr().err
    assert "robustft: warning: epoch 2 exploded (train loss" in err and "validation clean accuracy 0.250, chance is " \
        "0.250); lower optim.lr" in err and "epoch 1 exploded" not in err
    metrics = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [m.get("exploded", False) for m in metrics] == [False, True]
    card = json.loads((tmp_path / "r" / "model.json").read_text())
    assert card["warning"].startswith("the selected epoch 2 exploded")
