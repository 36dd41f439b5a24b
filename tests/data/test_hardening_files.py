"""Hostile data folders, round 2 (issue #25): non-regular files, a tampered decode cache, non-UTF-8 file names,
npz headers and labels sized to exhaust memory, and training data with too few classes."""

import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustft.cli import main
from robustft.data import load_dataset
from robustft.errors import UserError
from support import error_line, finetune_args, run_env

# Runs the CLI with 1 GiB of address space beyond what importing robustft took: a refusal must come before any
# large allocation (set after the imports, so a CUDA build of torch, which maps gigabytes, still starts).
LIMITED_CLI = """\
import resource, sys
import robustft.cli, robustft.data, robustft.eval, robustft.models
size = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) * 1024
soft, hard = size + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]
resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
sys.exit(robustft.cli.main(sys.argv[1:]))
"""


def _evaluate_args(ckpt: Path, data: Path, *extra: str) -> list[str]:
    return ["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--steps", "1", "--n", "2",
            "--data", str(data), *extra]


def _limited_error(ckpt: Path, data: Path, *extra: str) -> str:
    """The one error line of ``evaluate`` run in a child process under the memory limit above, within 60 s."""
    proc = subprocess.run([sys.executable, "-c", LIMITED_CLI, *_evaluate_args(ckpt, data, *extra)], env=run_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr[-3000:]
    return error_line(proc.stderr)


class _Hung(BaseException):
    """Raised by the deadline below (a BaseException, so no ``except Exception`` in robustft can swallow it)."""


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: interrupts a blocked system call (an open() of a FIFO) after ``seconds``."""
    def expire(*_) -> None:
        raise _Hung(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """The one error line of an in-process CLI run that must fail, within 20 s."""
    with _deadline(20):
        rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    return error_line(err)


def _image_folder(root: Path, classes: int = 2, per_class: int = 3, fmt: str = "png", seed: int = 0) -> Path:
    """``root/{train,test}/c<i>/<j>.<fmt>`` of seeded random 8×8 images (BMP: every file the same size)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / f"c{c}" / f"{j}.{fmt}")
    return root


def _npz(root: Path, x: np.ndarray, y: np.ndarray, splits: tuple[str, ...] = ("test",)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split in splits:
        np.savez(root / f"{split}.npz", x=x, y=y)
    return root


# ---------------------------------------------------------------- non-regular files


def _fifo_image(tmp: Path) -> tuple[Path, Path]:
    data = _image_folder(tmp / "data")
    os.mkfifo(data / "test" / "c0" / "zz.png")
    return data, data / "test" / "c0" / "zz.png"


def _fifo_npz(tmp: Path) -> tuple[Path, Path]:
    data = _npz(tmp / "data", np.zeros((4, 8, 8, 3), np.uint8), np.arange(4) % 2, ("train",))
    os.mkfifo(data / "test.npz")
    return data, data / "test.npz"


def _fifo_zip(tmp: Path) -> tuple[Path, Path]:
    os.mkfifo(tmp / "data.zip")
    return tmp / "data.zip", tmp / "data.zip"


def _fifo_class_list(tmp: Path) -> tuple[Path, Path]:
    data = _npz(tmp / "data", np.zeros((4, 8, 8, 3), np.uint8), np.arange(4) % 2)
    os.mkfifo(data / "classes.txt")
    return data, data / "classes.txt"


@pytest.mark.parametrize("make", [_fifo_image, _fifo_npz, _fifo_zip, _fifo_class_list],
                         ids=["image", "npz", "zip", "classes.txt"])
def test_cli_fifo_in_a_data_folder_is_refused_without_waiting(tmp_path, ckpt, capsys, make):
    data, fifo = make(tmp_path)
    error = _cli_error(_evaluate_args(ckpt, data), capsys)
    assert f"{fifo} is a named pipe (FIFO), not a regular file" in error


def test_cli_link_to_dev_zero_is_refused_before_reading_it(tmp_path, ckpt):
    data = _image_folder(tmp_path / "data")
    (data / "test" / "c0" / "zz.png").symlink_to("/dev/zero")
    error = _limited_error(ckpt, data)
    assert "zz.png (a link to /dev/zero) is a character device, not a regular file" in error


class _SizeZero:
    """A stat result that states 0 bytes, as a device, a FIFO or a /proc file does."""

    def __init__(self, result: os.stat_result) -> None:
        self.result = result

    def __getattr__(self, name: str) -> object:
        return 0 if name == "st_size" else getattr(self.result, name)


def test_a_size_on_disk_that_lies_does_not_lift_the_file_limit(tmp_path, monkeypatch):
    (tmp_path / "test" / "c").mkdir(parents=True)
    (tmp_path / "test" / "c" / "big.png").write_bytes(bytes(3 << 20))
    stat, fstat = os.stat, os.fstat
    monkeypatch.setattr(os, "stat", lambda path, *a, **kw: _SizeZero(stat(path, *a, **kw)))
    monkeypatch.setattr(os, "fstat", lambda fd: _SizeZero(fstat(fd)))
    with pytest.raises(UserError, match=r"big.png is 2.0 MB, over data.max_file_mb=2 "):
        load_dataset(str(tmp_path), "test", cache=False, max_file_mb=2)


# ---------------------------------------------------------------- the decode cache


def _split_entry(cache: Path) -> Path:
    """The one decoded split in the decode cache (its largest file)."""
    return max((cache / "decoded").glob("*.pt"), key=lambda p: p.stat().st_size)


def _tampered(entry: object, key: str, change: Callable[[torch.Tensor], torch.Tensor]) -> object:
    """``entry`` with the tensor under ``key`` (at any depth) replaced by ``change(tensor)``, the rest kept."""
    if isinstance(entry, dict):
        return {k: change(v) if k == key else _tampered(v, key, change) for k, v in entry.items()}
    return entry


TAMPERED: dict[str, Callable[[object], object] | None] = {
    "labels-flipped": lambda e: _tampered(e, "y", lambda y: 1 - y),
    "label-dropped": lambda e: _tampered(e, "y", lambda y: y[:-1].clone()),
    "images-grey": lambda e: _tampered(e, "x", lambda x: torch.full_like(x, 128)),
    "images-float": lambda e: _tampered(e, "x", lambda x: x.float()),
    "stride-0-images": lambda e: _tampered(e, "x", lambda x: torch.zeros(1, dtype=torch.uint8).expand(x.shape)),
    "digest-wrong": lambda e: {**e, "digest": "0" * 64},
    "float": lambda e: 1.5,
    "list": lambda e: [e],
    "truncated": None,
}


@pytest.mark.parametrize("tamper", TAMPERED, ids=list(TAMPERED))
def test_tampered_cache_entry_is_a_miss_with_one_warning(tmp_path, isolated_cache, capsys, tamper):
    data = _image_folder(tmp_path / "data")
    fresh = load_dataset(str(data), "test")
    entry_path = _split_entry(isolated_cache)
    if TAMPERED[tamper] is None:
        entry_path.write_bytes(entry_path.read_bytes()[:100])
    else:
        torch.save(TAMPERED[tamper](torch.load(entry_path, weights_only=True)), entry_path)
    capsys.readouterr()
    again = load_dataset(str(data), "test")
    warned = capsys.readouterr().err.splitlines()
    assert torch.equal(again.x, fresh.x) and torch.equal(again.y, fresh.y) and again.classes == fresh.classes
    assert len(warned) == 1 and warned[0].startswith(f"robustft: warning: ignoring decode cache file {entry_path}: ")
    load_dataset(str(data), "test")  # the entry was written again: a clean hit
    assert capsys.readouterr().err == ""


def test_cli_cached_split_missing_a_label_is_decoded_again(tmp_path, ckpt, isolated_cache, capsys):
    data = _image_folder(tmp_path / "data", classes=10, per_class=1)
    assert main(_evaluate_args(ckpt, data, "--n", "10")) == 0
    entry_path = _split_entry(isolated_cache)
    entry = torch.load(entry_path, weights_only=True)
    torch.save(_tampered(entry, "y", lambda y: y[1:].clone()), entry_path)  # x and y misaligned
    capsys.readouterr()
    assert main(_evaluate_args(ckpt, data, "--n", "10")) == 0
    out, err = capsys.readouterr()
    assert "data: 10 test images" in out
    assert err.startswith(f"robustft: warning: ignoring decode cache file {entry_path}: its labels are not the "
                          f"folder's; decoding again")


def _same_size_replacement(tmp: Path, zipped: bool) -> Path:
    """An image folder (or its zip) loaded once, then replaced by different images of the same size, mtime kept
    (what ``cp -p`` or ``rsync -a`` leave)."""
    def write(seed: int) -> Path:
        folder = _image_folder(tmp / "data", fmt="bmp", seed=seed)
        if not zipped:
            return folder
        with zipfile.ZipFile(tmp / "data.zip", "w") as archive:
            for path in sorted(folder.rglob("*.bmp")):
                archive.write(path, path.relative_to(folder).as_posix())
        return tmp / "data.zip"

    target = write(seed=1)
    files = sorted(p for p in ([target] if zipped else target.rglob("*.bmp")))
    stats = {p: p.stat() for p in files}
    load_dataset(str(target), "test")
    write(seed=2)
    for p, st in stats.items():
        assert p.stat().st_size == st.st_size
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    return target


@pytest.mark.parametrize("zipped", [False, True], ids=["directory", "zip"])
def test_same_size_replacement_with_mtime_kept_is_not_served_stale(tmp_path, zipped):
    target = _same_size_replacement(tmp_path, zipped)
    assert torch.equal(load_dataset(str(target), "test").x, load_dataset(str(target), "test", cache=False).x)


# ---------------------------------------------------------------- file names that are not UTF-8


def test_cli_non_utf8_name_of_a_stray_file_is_skipped(tmp_path, ckpt, capsys):
    data = _image_folder(tmp_path / "data")
    (data / os.fsdecode(b"READ\xff.txt")).write_text("notes")
    (data / "test" / "c0" / os.fsdecode(b"notes\xff.txt")).write_text("notes")
    assert main(_evaluate_args(ckpt, data, "--num-classes", "10")) == 0
    assert capsys.readouterr().err == ""


def test_cli_image_with_a_non_utf8_name_is_skipped_with_a_warning(tmp_path, ckpt, capsys):
    data = _image_folder(tmp_path / "data")
    (data / "test" / "c1" / "0.png").rename(data / "test" / "c1" / os.fsdecode(b"caf\xe9.png"))
    assert main(_evaluate_args(ckpt, data, "--num-classes", "10", "--n", "5")) == 0
    assert capsys.readouterr().err == (f"robustft: warning: skipping 1 image(s) whose names are not valid UTF-8, e.g. "
                                       f"{data}/test/c1/caf\\xe9.png; rename them to use them\n")
    assert len(load_dataset(str(data), "test")) == 5


def test_cli_zip_member_name_flagged_utf8_but_not_is_one_error(tmp_path, ckpt, capsys):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for split in ("train", "test"):
            z.writestr(f"{split}/c\u00e9/0.png", b"")  # non-ASCII: zipfile sets the UTF-8 flag
    archive.write_bytes(archive.read_bytes().replace("\u00e9".encode(), b"\xff\xfe"))
    error = _cli_error(_evaluate_args(ckpt, archive), capsys)
    assert f"cannot open {archive} as a zip archive (" in error and "utf-8" in error


# ---------------------------------------------------------------- npz arrays and labels sized to exhaust memory


def _npz_with_header(path: Path, shape: tuple[int, ...], labels: np.ndarray) -> Path:
    """An npz whose ``x.npy`` header announces ``shape`` (uint8) but holds no pixels: a few hundred bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("x.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        with archive.open("y.npy", "w") as f:
            np.save(f, labels)
    return path


def test_cli_npz_images_over_max_image_pixels_are_refused_from_the_header(tmp_path, ckpt):
    data = _npz_with_header(tmp_path / "data" / "test.npz", (2, 20000, 20000, 3), np.array([0, 1]))
    error = _limited_error(ckpt, data.parent)
    assert error.endswith("test.npz: each image of 'x' is 20000x20000 = 400000000 pixels, over "
                          "data.max_image_pixels=40000000 (raise it with --set data.max_image_pixels=N, or "
                          "--max-image-pixels N for evaluate)")


def test_npz_header_announcing_more_than_max_array_mb_is_refused_before_reading(tmp_path):
    data = _npz_with_header(tmp_path / "data" / "test.npz", (10 ** 6, 1000, 1000), np.arange(10 ** 6) % 2)
    with pytest.raises(UserError, match=r"array 'x' is 953674.3 MB decompressed, over data.max_array_mb=16384 "):
        load_dataset(str(data.parent), "test")


def test_cli_labels_implying_a_billion_classes_are_refused_before_naming_them(tmp_path, ckpt):
    data = _npz(tmp_path / "data", np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 10 ** 9]))
    error = _limited_error(ckpt, data)
    assert error.endswith("the class count its labels 'y' imply (largest label 1000000000 + 1) is 1000000001, over "
                          "data.max_classes=100000 (raise it with --set data.max_classes=N, or --max-classes N for "
                          "evaluate)")


def test_cli_uint64_labels_past_int64_are_reported_as_they_are(tmp_path, ckpt, capsys):
    data = _npz(tmp_path / "data", np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 2 ** 63], np.uint64))
    error = _cli_error(_evaluate_args(ckpt, data), capsys)
    assert "(largest label 9223372036854775808 + 1) is 9223372036854775809, over data.max_classes=100000" in error


def test_max_classes_is_a_limit_the_user_can_raise(tmp_path, ckpt, capsys):
    data = _npz(tmp_path / "data", np.zeros((10, 8, 8, 3), np.uint8), np.arange(10))
    assert "is 10, over data.max_classes=9 " in _cli_error(_evaluate_args(ckpt, data, "--max-classes", "9"), capsys)
    assert main(_evaluate_args(ckpt, data, "--max-classes", "10")) == 0
    (data / "classes.txt").write_text("\n".join(f"class {i}" for i in range(12)))
    with pytest.raises(UserError, match=r"classes.txt: the number of lines is 12, over data.max_classes=11 "):
        load_dataset(str(data), "test", max_classes=11)
    image_folder = _image_folder(tmp_path / "folder", classes=3, per_class=1)
    with pytest.raises(UserError, match=r"the number of class directories is 3, over data.max_classes=2 "):
        load_dataset(str(image_folder), "test", max_classes=2)


def test_cli_npz_images_of_zero_pixels_are_refused(tmp_path, ckpt, capsys):
    data = _npz(tmp_path / "data", np.zeros((10, 0, 0, 3), np.uint8), np.arange(10))
    error = _cli_error(_evaluate_args(ckpt, data), capsys)
    assert "test.npz: 'x' (10, 0, 0, 3) holds images of 0x0 pixels; save images of at least 1x1 pixel" in error


# ---------------------------------------------------------------- degenerate class sets


def _relabelled(tiny_task: tuple[Path, Path], root: Path, relabel: Callable[[np.ndarray], np.ndarray]) -> Path:
    """The tiny task's npz data with every split's labels mapped through ``relabel``."""
    data, _ = tiny_task
    root.mkdir()
    for split in ("train", "test"):
        with np.load(data / f"{split}.npz") as f:
            np.savez(root / f"{split}.npz", x=f["x"], y=relabel(f["y"]))
    return root


def test_cli_one_class_training_data_is_refused_before_training(tiny_task, tmp_path, capsys):
    data = _relabelled(tiny_task, tmp_path / "one", np.zeros_like)
    error = _cli_error(finetune_args(data, tiny_task[1], tmp_path, "r", "--epochs", "1"), capsys)
    assert "the training data of one has 1 class (0): a classifier needs at least 2" in error
    assert not (tmp_path / "r").exists()


def test_cli_empty_classes_train_with_a_warning(tiny_task, tmp_path, capsys):
    data = _relabelled(tiny_task, tmp_path / "gaps", lambda y: np.where(y % 2, 3, 0))  # classes 0..3, 1 and 2 empty
    assert main(finetune_args(data, tiny_task[1], tmp_path, "r", "--epochs", "1", "--set", "data.train_n=64",
                              "--set", "data.test_n=16")) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "no training image" in line]
    assert warned == ["robustft: warning: 2 of the 4 classes of gaps have no training image (1, 2): the head still "
                      "gets an output for each; check the labels, or keep only the others with data.classes"]
