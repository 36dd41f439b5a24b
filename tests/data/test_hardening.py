"""Hostile or odd data: planted CIFAR pickles, decompression bombs, 16-bit PNGs and channels-first npz arrays."""

import hashlib
import io
import json
import os
import pickle
import shlex
import struct
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from robustft.cli import main
from robustft.data import load_dataset, named
from robustft.errors import UserError
from support import error_line

CIFAR10_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]


def _evaluate(ckpt: Path, *data: str) -> int:
    return main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--steps", "1", "--n", "8",
                 "--data", *data])


def _one_error(rc: int, err: str) -> str:
    """The single ``robustft: error:`` line of a failed run (anything else on stderr must be a warning line)."""
    assert rc == 2, err
    return error_line(err)


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("robustft: warning: ")]


# ---------------------------------------------------------------- CIFAR pickles: restricted unpickling, md5s


class _Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _write_cifar10(root: Path, n: int = 8, payload: dict[str, object] | None = None) -> Path:
    """The official ``cifar-10-batches-py`` layout (Python 3 protocol-2 re-pickles); ``payload`` adds keys per file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in CIFAR10_FILES:
        if name == "batches.meta":
            obj = {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": n, b"num_vis": 3072}
        else:
            obj = {b"batch_label": name.encode(), b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                   b"labels": [j % 10 for j in range(n)], b"filenames": [f"{j}.png".encode() for j in range(n)]}
        if payload and name in payload:
            obj[b"payload"] = payload[name]
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    return folder


@pytest.mark.parametrize("planted", [CIFAR10_FILES, ["test_batch"]], ids=["every-file", "test-batch-only"])
def test_planted_cifar_pickle_payload_never_runs(tmp_path, ckpt, capsys, planted):
    marker = tmp_path / "MARKER"
    _write_cifar10(tmp_path / "root", payload={name: _Payload(marker) for name in planted})
    rc = _evaluate(ckpt, "cifar10", "--data-root", str(tmp_path / "root"))
    error = _one_error(rc, capsys.readouterr().err)
    assert not marker.exists()
    assert "posix.system" in error and ("batches.meta" if len(planted) > 1 else "test_batch") in error


def test_legit_synthetic_cifar_loads_and_warns_once_per_file(tmp_path, ckpt, capsys):
    folder = _write_cifar10(tmp_path)
    assert _evaluate(ckpt, "cifar10", "--data-root", str(tmp_path)) == 0
    warned = _warnings(capsys.readouterr().err)
    assert [w.split()[2] for w in warned] == [str(folder / "batches.meta"), str(folder / "test_batch")]
    assert all("is not the official release (md5 " in w and "not comparable with published numbers" in w
               for w in warned)
    assert len(load_dataset("cifar10", "train_full", root=tmp_path)) == 40
    again = _warnings(capsys.readouterr().err)  # the five train batches are new; meta is not warned about twice
    assert [w.split()[2] for w in again] == [str(folder / f"data_batch_{i}") for i in range(1, 6)]


def test_official_md5_is_silent(tmp_path, monkeypatch, capsys):
    folder = _write_cifar10(tmp_path)
    for name in CIFAR10_FILES:
        digest = hashlib.md5((folder / name).read_bytes()).hexdigest()
        monkeypatch.setitem(named.OFFICIAL_MD5, f"cifar-10-batches-py/{name}", digest)
    assert len(load_dataset("cifar10", "test", root=tmp_path)) == 8
    assert capsys.readouterr().err == ""


def test_python2_style_pickle_with_numpy_core_name_loads(tmp_path):
    # The official files name numpy 1's numpy.core.multiarray._reconstruct, whatever numpy reads them.
    folder = _write_cifar10(tmp_path)
    data = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    expected = pickle.loads(data, encoding="bytes")[b"data"]
    assert torch.equal(load_dataset("cifar10", "test", root=tmp_path).x.reshape(8, -1), torch.from_numpy(expected))


def test_every_named_cifar_file_has_an_official_md5():
    for spec in (named.CIFAR10, named.CIFAR100):
        assert {f"{spec.folder}/{f}" for f in (*spec.train, spec.test, spec.meta)} <= named.OFFICIAL_MD5.keys()


# ---------------------------------------------------------------- decompression limits


def _png(size: tuple[int, int] = (4, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, "PNG")
    return buffer.getvalue()


def _png_file(width: int, height: int, bit_depth: int, color_type: int, rows: Iterable[bytes]) -> bytes:
    """A PNG written by hand (PIL cannot write 16-bit RGB), its unfiltered rows compressed one at a time."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    deflate = zlib.compressobj()
    idat = b"".join(deflate.compress(b"\0" + row) for row in rows) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _huge_black_png(side: int) -> bytes:
    """A valid side×side 1-bit grayscale PNG, built without ever holding its pixels (a few KB per 10⁸ pixels)."""
    return _png_file(side, side, 1, 0, (bytes((side + 7) // 8) for _ in range(side)))


def _zip_with_zero_member(path: Path, member: str, megabytes: int) -> Path:
    """An image-folder zip (train/c/0.png, test/c/0.png) plus ``member``: ``megabytes`` MiB of zeros, deflated."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for split in ("train", "test"):
            archive.writestr(f"{split}/c/0.png", _png())
        with archive.open(member, "w") as f:
            for _ in range(megabytes):
                f.write(bytes(1 << 20))
    return path


def _refuse_reading(monkeypatch: pytest.MonkeyPatch, word: str) -> None:
    """Make opening any zip member whose name contains ``word`` fail the test."""
    original = zipfile.ZipFile.open

    def guarded(self, name, mode="r", *args, **kwargs):
        filename = name.filename if isinstance(name, zipfile.ZipInfo) else name
        assert word not in filename, f"{filename} was read"
        return original(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", guarded)


def test_zip_member_over_max_file_mb_is_refused_before_reading(tmp_path, monkeypatch):
    archive = _zip_with_zero_member(tmp_path / "data.zip", "test/c/bomb.png", megabytes=5)
    assert archive.stat().st_size < 100_000
    _refuse_reading(monkeypatch, "bomb")
    with pytest.raises(UserError) as err:
        load_dataset(str(archive), "test", max_file_mb=1)
    message = str(err.value)
    assert "test/c/bomb.png inside" in message and "5.0 MB decompressed, over data.max_file_mb=1 " in message
    assert "--set data.max_file_mb=N" in message and "--max-file-mb N" in message


def test_cli_zip_bomb_is_refused_at_the_default_limit_without_reading_it(tmp_path, ckpt, capsys, monkeypatch):
    archive = _zip_with_zero_member(tmp_path / "data.zip", "test/c/bomb.png", megabytes=70)
    assert archive.stat().st_size < 1_000_000
    _refuse_reading(monkeypatch, "bomb")
    error = _one_error(_evaluate(ckpt, str(archive)), capsys.readouterr().err)
    assert "bomb.png" in error and "70.0 MB decompressed, over data.max_file_mb=64 " in error


def test_directory_image_over_max_file_mb_is_refused_before_reading(tmp_path, monkeypatch):
    (tmp_path / "test" / "c").mkdir(parents=True)
    (tmp_path / "test" / "c" / "big.png").write_bytes(bytes(3 << 20))
    original = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda p: pytest.fail("read") if p.name == "big.png" else original(p))
    with pytest.raises(UserError, match=r"big.png is 3.0 MB, over data.max_file_mb=2 "):
        load_dataset(str(tmp_path), "test", max_file_mb=2)


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_cli_png_header_over_max_image_pixels_is_refused_before_decoding(tmp_path, ckpt, capsys, monkeypatch):
    for split in ("train", "test"):
        (tmp_path / "data" / split / "c").mkdir(parents=True)
    (tmp_path / "data" / "train" / "c" / "0.png").write_bytes(_png())
    (tmp_path / "data" / "test" / "c" / "big.png").write_bytes(_huge_black_png(13000))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    error = _one_error(_evaluate(ckpt, str(tmp_path / "data")), capsys.readouterr().err)
    assert "big.png is 13000x13000 = 169000000 pixels, over data.max_image_pixels=40000000 " in error
    assert "--max-image-pixels N" in error


def test_image_pixels_at_the_limit_load(tmp_path):
    (tmp_path / "test" / "c").mkdir(parents=True)
    (tmp_path / "test" / "c" / "0.png").write_bytes(_png((10, 10)))
    assert len(load_dataset(str(tmp_path), "test", max_image_pixels=100)) == 1
    with pytest.raises(UserError, match="max_image_pixels=99 "):
        load_dataset(str(tmp_path), "test", cache=False, max_image_pixels=99)


def test_decode_cache_does_not_bypass_the_limits_for_a_new_file(tmp_path):
    (tmp_path / "test" / "c").mkdir(parents=True)
    (tmp_path / "test" / "c" / "0.png").write_bytes(_png((4, 4)))
    assert len(load_dataset(str(tmp_path), "test", max_image_pixels=16)) == 1  # decoded and cached
    assert len(load_dataset(str(tmp_path), "test", max_image_pixels=16)) == 1  # a cache hit
    (tmp_path / "test" / "c" / "1.png").write_bytes(_png((5, 4)))
    with pytest.raises(UserError, match="1.png is 5x4 = 20 pixels"):
        load_dataset(str(tmp_path), "test", max_image_pixels=16)


def test_npz_member_over_max_array_mb_is_refused_before_reading(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "test.npz", x=np.zeros((700, 32, 32, 3), np.uint8), y=np.zeros(700, np.int64))
    original = np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__",
                        lambda self, key: pytest.fail("x was read") if key == "x" else original(self, key))
    with pytest.raises(UserError, match=r"test.npz: array 'x' is 2.1 MB decompressed, over data.max_array_mb=2 "):
        load_dataset(str(tmp_path), "test", max_array_mb=2)


# ---------------------------------------------------------------- data that decodes wrong


def _expected_8bit(values: np.ndarray) -> np.ndarray:
    return np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def test_16bit_grayscale_png_is_scaled_not_saturated(tmp_path):
    values = np.array([[0, 1, 128, 129], [257, 32767, 32768, 40000], [65024, 65280, 65534, 65535]], np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    (tmp_path / "test" / "c").mkdir(parents=True)
    image.save(tmp_path / "test" / "c" / "0.png")
    with Image.open(tmp_path / "test" / "c" / "0.png") as reopened:
        assert reopened.mode == "I;16" and np.array_equal(np.asarray(reopened), values)  # a real 16-bit PNG
    x = load_dataset(str(tmp_path), "test").x
    assert x.shape == (1, 3, 3, 4)
    for channel in x[0]:
        assert np.array_equal(channel.numpy(), _expected_8bit(values))


def test_16bit_rgb_png_is_within_one_level_of_rounding(tmp_path):
    # PIL keeps the high byte of 16-bit RGB(A) itself: not saturated, at most one level below round(v*255/65535).
    values = np.random.default_rng(0).integers(0, 65536, (3, 5, 3)).astype(np.uint16)
    (tmp_path / "test" / "c").mkdir(parents=True)
    rows = (row.astype(">u2").tobytes() for row in values)  # color type 2: RGB
    (tmp_path / "test" / "c" / "0.png").write_bytes(_png_file(5, 3, 16, 2, rows))
    x = load_dataset(str(tmp_path), "test").x[0].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(x - _expected_8bit(values)).max() <= 1


def _npz_dir(root: Path, x: np.ndarray) -> Path:
    root.mkdir()
    np.savez(root / "test.npz", x=x, y=np.arange(len(x)) % 10)
    return root


def test_cli_channels_first_npz_gives_the_channels_last_result(tmp_path, ckpt, capsys):
    x = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    last, first = _npz_dir(tmp_path / "last", x), _npz_dir(tmp_path / "first", x.transpose(0, 3, 1, 2))
    results = {}
    for name, root in (("last", last), ("first", first)):
        assert _evaluate(ckpt, str(root), "--json", str(tmp_path / f"{name}.json")) == 0
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
        results[name + "_warnings"] = _warnings(capsys.readouterr().err)
    assert results["last"]["clean_acc"] == results["first"]["clean_acc"]
    assert results["last"]["robust_acc"] == results["first"]["robust_acc"]
    assert results["last_warnings"] == []
    assert len(results["first_warnings"]) == 1 and "looks channels-first (N×C×H×W)" in results["first_warnings"][0]
    assert torch.equal(load_dataset(str(first), "test").x, load_dataset(str(last), "test").x)


def test_cli_npz_with_neither_layout_is_one_error(tmp_path, ckpt, capsys):
    root = _npz_dir(tmp_path / "bad", np.zeros((10, 32, 32, 5), np.uint8))
    error = _one_error(_evaluate(ckpt, str(root)), capsys.readouterr().err)
    assert "(10, 32, 32, 5)" in error and "N×H×W×C" in error
