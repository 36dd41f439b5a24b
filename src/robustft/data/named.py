"""The named datasets (cifar10, cifar100, svhn) in their official on-disk layouts under a data root."""

import codecs
import functools
import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError, warn
from .download import Remote, ensure_files
from .readers import load_mat, open_regular
from .source import Arrays, Source

__all__ = ["CIFAR10", "CIFAR100", "SVHN_TRAIN", "SVHN_TEST", "cifar10", "cifar100", "svhn"]


@dataclass(frozen=True)
class _Cifar:
    """Where one CIFAR variant keeps its files and which pickle keys hold its labels and class names."""

    title: str
    folder: str
    remote: Remote
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: bytes
    names_key: bytes


_KRIZ = "https://www.cs.toronto.edu/~kriz"
CIFAR10 = _Cifar("CIFAR-10", "cifar-10-batches-py",
                 Remote(f"{_KRIZ}/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
                 tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta",
                 b"labels", b"label_names")
CIFAR100 = _Cifar("CIFAR-100", "cifar-100-python",
                  Remote(f"{_KRIZ}/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
                  ("train",), "test", "meta", b"fine_labels", b"fine_label_names")
SVHN_TRAIN = Remote("http://ufldl.stanford.edu/housenumbers/train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373")
SVHN_TEST = Remote("http://ufldl.stanford.edu/housenumbers/test_32x32.mat", "eb5a983be6a315427106f1b69d3a7b3b")


# md5 of every file of the official releases (as published with torchvision), keyed by path under the data root.
OFFICIAL_MD5 = {
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar-10-batches-py/batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
    "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "cifar-100-python/meta": "7973b15100ade9c7d40fb424638fde48",
}

_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy.core.multiarray._reconstruct, numpy._core.* in numpy 2
# Every global the CIFAR pickles may name. The official (Python 2) files need only numpy's; a Python 3 protocol-2
# re-pickle also stores bytes as ``_codecs.encode(str, "latin1")``. Anything else could run arbitrary code.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside ``_ALLOWED_GLOBALS``."""


class _CifarUnpickler(pickle.Unpickler):
    """Builds only what the CIFAR files hold (dicts, lists, bytes, numbers, numpy arrays); no other callable."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        return _ALLOWED_GLOBALS[module, name]


def _md5(path: Path) -> str:
    """md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open_regular(path) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache  # once per file and version of it (size, mtime), however often the file is loaded
def _check_official(path: Path, expected: str, size: int, mtime_ns: int) -> None:
    """Warn when ``path`` is not byte-identical to the official release (a re-pickle, a subset, a modified file)."""
    if (actual := _md5(path)) != expected:
        warn(f"{path} is not the official release (md5 {actual}, expected {expected}): "
             f"results are not comparable with published numbers")


def _unpickle(path: Path, keys: tuple[bytes, ...]) -> dict[bytes, Any]:
    """One CIFAR pickle (a dict with bytes keys), checked to hold ``keys``; md5 checked against the official file."""
    try:
        with open_regular(path) as f:
            data = _CifarUnpickler(f, encoding="bytes").load()  # official files: Python 2 pickles with bytes keys
    except _RefusedGlobal as e:
        raise UserError(f"{path} is not an official CIFAR file: it asks to load the Python global {e}, which could "
                        f"run code, so it was not loaded; delete it and download the official archive again") from e
    except Exception as e:  # a damaged pickle can fail with almost any exception type
        raise UserError(f"cannot read {path} ({type(e).__name__}: {e}); delete it and download it again") from e
    if not isinstance(data, dict) or not all(k in data for k in keys):
        raise UserError(f"{path} is not an official CIFAR file (expected keys {keys}); replace it with the original")
    st = path.stat()
    _check_official(path, OFFICIAL_MD5[f"{path.parent.name}/{path.name}"], st.st_size, st.st_mtime_ns)
    return data


def _cifar_split(spec: _Cifar, directory: Path, files: tuple[str, ...]) -> Arrays:
    """Concatenate CIFAR batches: rows of 3072 bytes are the R, G, B planes, each 32×32 row-major."""
    batches = [_unpickle(directory / f, (b"data", spec.label_key)) for f in files]
    x = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches]).reshape(-1, 3, 32, 32)
    y = np.concatenate([np.asarray(b[spec.label_key], dtype=np.int64) for b in batches])
    return torch.from_numpy(x), torch.from_numpy(y)


def _cifar(spec: _Cifar, root: Path, download: bool) -> Source:
    """A CIFAR variant from ``root/<folder>``, downloaded there first if missing and allowed."""
    files = [*spec.train, spec.test, spec.meta]
    ensure_files(root, [f"{spec.folder}/{f}" for f in files], spec.remote, what=spec.title, download=download)
    directory = root / spec.folder
    names = _unpickle(directory / spec.meta, (spec.names_key,))[spec.names_key]
    return Source(name=spec.title.lower().replace("-", ""), classes=[n.decode() for n in names],
                  loaders={"train": lambda: _cifar_split(spec, directory, spec.train),
                           "test": lambda: _cifar_split(spec, directory, (spec.test,))})


def cifar10(root: Path, download: bool = True) -> Source:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (the official python pickles)."""
    return _cifar(CIFAR10, root, download)


def cifar100(root: Path, download: bool = True) -> Source:
    """CIFAR-100 (fine labels) from ``root/cifar-100-python`` (the official python pickles)."""
    return _cifar(CIFAR100, root, download)


def _svhn_split(root: Path, remote: Remote, download: bool) -> Arrays:
    """One official SVHN ``.mat``: ``X`` is 32×32×3×N, ``y`` is N×1 with digit 0 stored as 10."""
    name = Path(remote.url).name
    ensure_files(root, [f"svhn/{name}"], remote, what="SVHN", download=download)
    path = root / "svhn" / name
    try:
        mat = load_mat(path)
        x, y = np.asarray(mat["X"], dtype=np.uint8), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read {path} ({e}); delete it and download it again") from e
    return torch.from_numpy(x.transpose(3, 2, 0, 1).copy()), torch.from_numpy(y % 10)


def svhn(root: Path, download: bool = True) -> Source:
    """SVHN (cropped digits, no ``extra``) from ``root/svhn/{train,test}_32x32.mat``; classes are "0".."9"."""
    return Source(name="svhn", classes=[str(d) for d in range(10)],
                  loaders={"train": lambda: _svhn_split(root, SVHN_TRAIN, download),
                           "test": lambda: _svhn_split(root, SVHN_TEST, download)})
