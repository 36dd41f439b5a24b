"""Checkpoints that load but compute garbage are refused, and no refusal passes on torch's `weights_only` advice."""

import io
import os
import pickle
import resource
import shutil
import subprocess
import tarfile
import tempfile
import zipfile

import pytest
import safetensors.torch
import torch

from robustft.cli import main
from robustft.models import create_model, load_state_dict_into, read_state_dict
from support import error_line, robustft_cmd, run_env


@pytest.fixture
def state():
    """A CIFAR ResNet-20's state dict (float weights, int64 ``num_batches_tracked``)."""
    torch.manual_seed(0)
    return create_model("cifar_resnet20", num_classes=10).state_dict()


def _evaluate_error(path, npz_data, capsys) -> str:
    """Run ``robustft evaluate`` on ``path``; assert it fails with one error line and no traceback; return that line."""
    rc = main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(path), "--data", str(npz_data),
               "--steps", "1"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("robustft: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- garbage weights


def test_nan_weight_in_pt_is_refused(tmp_path, npz_data, state, capsys):
    state["conv1.weight"].view(-1)[:3] = float("nan")
    torch.save(state, tmp_path / "m.pt")
    line = _evaluate_error(tmp_path / "m.pt", npz_data, capsys)
    assert "m.pt has non-finite values in conv1.weight (3 NaN, 0 Inf)" in line and "diverge" in line


def test_inf_weight_in_safetensors_is_refused(tmp_path, npz_data, state, capsys):
    state["fc.bias"][:2] = float("-inf")
    state["layer1.0.bn1.running_var"][0] = float("nan")
    safetensors.torch.save_file(state, tmp_path / "m.safetensors")
    line = _evaluate_error(tmp_path / "m.safetensors", npz_data, capsys)
    assert "layer1.0.bn1.running_var (1 NaN, 0 Inf)" in line and "fc.bias (0 NaN, 2 Inf)" in line


def test_int32_weights_in_safetensors_are_refused(tmp_path, npz_data, state, capsys):
    ints = {k: (v * 100).to(torch.int32) if v.is_floating_point() else v for k, v in state.items()}
    safetensors.torch.save_file(ints, tmp_path / "m.safetensors")
    line = _evaluate_error(tmp_path / "m.safetensors", npz_data, capsys)
    assert "conv1.weight torch.int32 vs torch.float32" in line
    assert "num_batches_tracked" not in line  # int64 in the model too


def test_int64_buffers_and_half_weights_still_load(tmp_path, state):
    state = {k: v.half() if v.is_floating_point() else v.fill_(7) for k, v in state.items()}
    safetensors.torch.save_file(state, tmp_path / "half.safetensors")
    model = create_model("cifar_resnet20", num_classes=10)
    assert load_state_dict_into(model, read_state_dict(tmp_path / "half.safetensors")) == ([], [])
    assert model.conv1.weight.dtype == torch.float32 and torch.equal(model.conv1.weight, state["conv1.weight"].float())
    assert model.bn1.num_batches_tracked.dtype == torch.int64 and model.bn1.num_batches_tracked.item() == 7


# ----------------------------------------------------------------------------- refusals without weights_only advice


def _no_weights_only_advice(line: str) -> None:
    """torch's advice is to retry with ``weights_only=False``, i.e. to run the file's code; we never repeat it."""
    assert "weights_only" not in line and "=False" not in line and "trusted source" not in line, line


def test_legacy_tar_checkpoint_is_refused_with_our_own_fix(tmp_path, npz_data, capsys):
    # torch < 0.4 wrote a tar archive of pickles; torch refuses any tar under weights_only before reading a member.
    path = tmp_path / "old.tar"
    with tarfile.open(path, "w:", format=tarfile.PAX_FORMAT) as tar:
        for name in ("sys_info", "pickle", "storages", "tensors"):
            data = pickle.dumps(0, protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    line = _evaluate_error(path, npz_data, capsys)
    _no_weights_only_advice(line)
    assert "legacy .tar format" in line and "torch.save(model.state_dict(), path)" in line


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.filterwarnings("error:'torch.load' received")  # torch's TorchScript warning: a second stderr line
def test_torchscript_archive_is_refused_with_our_own_fix(tmp_path, npz_data, capsys):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ts.pt")
    line = _evaluate_error(tmp_path / "ts.pt", npz_data, capsys)
    _no_weights_only_advice(line)
    assert "TorchScript" in line and "torch.save(model.state_dict(), path)" in line


def test_torch_unpickler_advice_is_not_copied(tmp_path, npz_data, capsys, monkeypatch):
    # torch's wording when a module must be imported first (DTensor, NJT): its reason, then its unsafe advice.
    reason = "``torch.distributed.tensor`` must be imported to load DTensors"
    docs = "Check the documentation of torch.load to learn more about types accepted by default with weights_only."
    message = f"Weights only load failed. {reason}\n {torch.serialization.UNSAFE_MESSAGE}\n\n\n{docs}"

    def fake_load(*args, **kwargs):
        raise pickle.UnpicklingError(message)

    monkeypatch.setattr(torch, "load", fake_load)
    path = tmp_path / "dtensor.pt"
    path.write_bytes(b"")
    line = _evaluate_error(path, npz_data, capsys)
    _no_weights_only_advice(line)
    assert line.endswith(f"dtensor.pt is not a PyTorch checkpoint ({reason})")


class TrainConfig:
    """A project's own config class, pickled beside the weights (argparse.Namespace is the one class admitted)."""

    def __init__(self) -> None:
        self.lr = 0.1


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy_pickle"])
def test_checkpoint_with_a_custom_class_is_refused_without_advice(tmp_path, npz_data, state, capsys, zipfile):
    torch.save({"state_dict": state, "cfg": TrainConfig()}, tmp_path / "m.pt", _use_new_zipfile_serialization=zipfile)
    line = _evaluate_error(tmp_path / "m.pt", npz_data, capsys)
    _no_weights_only_advice(line)
    assert "refusing to load" in line and "TrainConfig" in line


def test_legacy_pickle_format_state_dict_still_loads(tmp_path, state):
    model = create_model("cifar_resnet20", num_classes=10)
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert load_state_dict_into(model, read_state_dict(tmp_path / "legacy.pt")) == ([], [])
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


# ----------------------------------------------------------------------------- inputs sized to exhaust memory


def _evaluate_limited(path, npz_data, **env) -> tuple[subprocess.CompletedProcess, float]:
    """``robustft evaluate`` of ``path`` in a child whose address space is capped at 3 GB; (result, its peak RSS MB)."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    args = robustft_cmd("evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(path), "--data", str(npz_data),
                        "--steps", "1")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(args, env={**run_env(), **env}, stdout=out, stderr=err, text=True, preexec_fn=cap)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not the largest of every earlier child
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        proc = subprocess.CompletedProcess(args, child.returncode, out.read(), err.read())
    return proc, usage.ru_maxrss / 1024


def test_a_stride_zero_tensor_is_refused_before_it_is_materialised(tmp_path, npz_data, state):
    state["extra"] = torch.zeros(1).expand(200000, 200000)  # 160 GB as float32, 4 bytes stored
    torch.save(state, tmp_path / "m.pt")
    assert (tmp_path / "m.pt").stat().st_size < 2 << 20
    proc, peak_mb = _evaluate_limited(tmp_path / "m.pt", npz_data)
    assert proc.returncode == 2 and error_line(proc.stderr).endswith(
        "has tensors larger than their stored data (overlapping strides) in extra (200000, 200000) from 4 bytes; a "
        "saved state dict never has them: it is damaged or crafted")
    assert peak_mb < 1024


def _deflated(src, dst) -> None:
    """``src`` (a torch.save zip) rewritten with every member deflated, streamed: a small file with large members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
        for info in zin.infolist():
            with zin.open(info) as fin, zout.open(info.filename, "w", force_zip64=True) as fout:
                shutil.copyfileobj(fin, fout, 1 << 22)


def test_a_deflated_storage_beyond_the_model_size_is_refused_unread(tmp_path, npz_data, state):
    state["extra"] = torch.zeros(64 << 20)  # 256 MB of zeros: deflated to a few hundred kB
    torch.save(state, tmp_path / "raw.pt")
    del state["extra"]
    _deflated(tmp_path / "raw.pt", tmp_path / "m.pt")
    (tmp_path / "raw.pt").unlink()
    assert (tmp_path / "m.pt").stat().st_size < 4 << 20
    proc, peak_mb = _evaluate_limited(tmp_path / "m.pt", npz_data)
    line = error_line(proc.stderr)
    assert proc.returncode == 2 and "m.pt holds 257 MB of data (uncompressed), more than the 72 MB limit" in line
    assert "ROBUSTFT_MAX_CHECKPOINT_MB=259" in line and peak_mb < 1024


def test_the_checkpoint_limit_is_checked_for_safetensors_and_can_be_raised(tmp_path, npz_data, state, capsys):
    state["extra"] = torch.zeros(20 << 20)  # 80 MB
    safetensors.torch.save_file(state, tmp_path / "m.safetensors")
    line = _evaluate_error(tmp_path / "m.safetensors", npz_data, capsys)
    assert "m.safetensors holds 81 MB of data (uncompressed), more than the 72 MB limit" in line
    with pytest.MonkeyPatch.context() as m:
        m.setenv("ROBUSTFT_MAX_CHECKPOINT_MB", "100")
        line = _evaluate_error(tmp_path / "m.safetensors", npz_data, capsys)
    assert "unexpected keys: extra" in line, "raised, the limit lets the file be read (and its keys checked)"


def test_keys_are_checked_before_any_per_tensor_work(tmp_path, npz_data, state, capsys, monkeypatch):
    """A tensor the model does not have is reported as unexpected; the finiteness check never touches it."""
    state["extra"] = torch.full((4,), float("nan"))
    torch.save(state, tmp_path / "m.pt")
    checked = []
    isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: checked.append(t.shape) or isfinite(t))
    line = _evaluate_error(tmp_path / "m.pt", npz_data, capsys)
    assert "unexpected keys: extra" in line and "non-finite" not in line and not checked
