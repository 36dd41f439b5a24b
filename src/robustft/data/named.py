"""The named datasets (cifar10, cifar100, svhn) in their official on-disk layouts under a data root."""

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch

from ..errors import UserError
from .download import Remote, ensure_files
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


def _unpickle(path: Path, keys: tuple[bytes, ...]) -> dict[bytes, Any]:
    """One official CIFAR pickle (a dict with bytes keys), checked to hold ``keys``."""
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="bytes")  # the official files are Python 2 pickles with bytes keys
    except Exception as e:  # a damaged pickle can fail with almost any exception type
        raise UserError(f"cannot read {path} ({type(e).__name__}: {e}); delete it and download it again") from e
    if not isinstance(data, dict) or not all(k in data for k in keys):
        raise UserError(f"{path} is not an official CIFAR file (expected keys {keys}); replace it with the original")
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
        mat = scipy.io.loadmat(path)
        x, y = np.asarray(mat["X"], dtype=np.uint8), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read {path} ({e}); delete it and download it again") from e
    return torch.from_numpy(x.transpose(3, 2, 0, 1).copy()), torch.from_numpy(y % 10)


def svhn(root: Path, download: bool = True) -> Source:
    """SVHN (cropped digits, no ``extra``) from ``root/svhn/{train,test}_32x32.mat``; classes are "0".."9"."""
    return Source(name="svhn", classes=[str(d) for d in range(10)],
                  loaders={"train": lambda: _svhn_split(root, SVHN_TRAIN, download),
                           "test": lambda: _svhn_split(root, SVHN_TEST, download)})
