"""Published corruption benchmarks, for users who have them: CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich 2019)
and Tiny-ImageNet-C.

Two layouts under one root directory:

- arrays (CIFAR-10-C, CIFAR-100-C, and Tiny-ImageNet-C converted to arrays): ``<corruption>.npy`` holds N·5 uint8
  images N×H×W×C, severities 1..5 stacked in that order (the first N images are severity 1), and ``labels.npy``
  the labels, either N·5 entries (as published) or N;
- image folders (Tiny-ImageNet-C as published): ``<corruption>/<severity>/<class>/<image>``.

``root`` may also name a published benchmark (``cifar10_c``, ``cifar100_c``, ``tinyimagenet_c``: see
``robustft.data.catalog.corruptions``), fetched into the data root on first use.

``load_corrupted(root, name, severity)`` returns one (corruption, severity) slice as an ``ArrayDataset``.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from .catalog.corruptions import CORRUPTIONS, corruption_dir
from .dataset import ArrayDataset
from .paths import default_data_root
from .readers import open_regular
from .splits import subset_indices

__all__ = ["available_corruptions", "load_corrupted", "LABELS"]

LABELS = "labels.npy"
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def _root(root: str | Path) -> Path:
    """The root directory, checked; a benchmark's name (``cifar10_c``, ...) that is not a path is its directory
    under ``default_data_root()``, downloaded there first if missing."""
    path = Path(root)
    if not path.exists() and str(root).lower() in CORRUPTIONS:
        return corruption_dir(CORRUPTIONS[str(root).lower()], default_data_root(), download=True)
    if not path.is_dir():
        raise UserError(f"corruption data directory {path} does not exist (expected <corruption>.npy + labels.npy, "
                        f"or <corruption>/<severity>/<class>/<image>)")
    return path


def available_corruptions(root: str | Path) -> list[str]:
    """Corruption names found under ``root`` (array files, else image-folder directories), sorted."""
    path = _root(root)
    names = sorted(p.stem for p in path.glob("*.npy") if p.name != LABELS)
    if names:
        if not (path / LABELS).is_file():
            raise UserError(f"{path} has corruption arrays but no {LABELS}")
        return names
    names = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / "1").is_dir())
    if not names:
        raise UserError(f"no corruption data under {path}: expected <corruption>.npy + {LABELS} (CIFAR-10-C) or "
                        f"<corruption>/<severity>/<class>/<image> (Tiny-ImageNet-C)")
    return names


def _class_names(classes: list[str] | None, labels: np.ndarray) -> list[str]:
    """Given names (checked against the labels) or "0".."K-1"."""
    count = int(labels.max()) + 1 if labels.size else 0
    if classes is None:
        return [str(i) for i in range(count)]
    if count > len(classes):
        raise UserError(f"corruption labels go up to {count - 1} but only {len(classes)} class names were given")
    return list(classes)


def _from_arrays(path: Path, name: str, severity: int, n: int | None, classes: list[str] | None) -> ArrayDataset:
    """One severity of ``<name>.npy`` (memory-mapped: only that slice is read)."""
    images = np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
    with open_regular(path / LABELS) as f:
        labels = np.load(f, allow_pickle=False)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) % 5:
        raise UserError(f"{path / name}.npy must hold uint8 N·5×H×W(×C) images (5 severities stacked), got "
                        f"{images.dtype} {images.shape}")
    per = len(images) // 5
    if len(labels) not in (per, 5 * per):
        raise UserError(f"{path / LABELS} has {len(labels)} labels; expected {per} or {5 * per} for {name}.npy")
    lo = (severity - 1) * per
    idx = np.arange(per) if n is None else subset_indices(per, min(n, per)).numpy()
    x = np.asarray(images[lo + idx])
    y = labels[idx if len(labels) == per else lo + idx].astype(np.int64)
    x = x[..., None] if x.ndim == 3 else x
    return ArrayDataset(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y),
                        _class_names(classes, y), f"{path.name}-{name}{severity}")


def _rgb(path: Path) -> np.ndarray:
    """One image file as H×W×3 uint8."""
    with open_regular(path) as f, Image.open(f) as image:
        return np.asarray(image.convert("RGB"))


def _from_folders(path: Path, name: str, severity: int, n: int | None, classes: list[str] | None) -> ArrayDataset:
    """One severity of ``<name>/<severity>/<class>/<image>``; labels by ``classes`` (default: sorted directories)."""
    base = path / name / str(severity)
    if not base.is_dir():
        raise UserError(f"{base} does not exist")
    dirs = sorted(p.name for p in base.iterdir() if p.is_dir())
    names = list(classes) if classes is not None else dirs
    label = {c: i for i, c in enumerate(names)}
    unknown = sorted(set(dirs) - label.keys())
    if unknown:
        raise UserError(f"{base} has class directories {unknown[:5]} that are not among the model's classes")
    files = [(f, label[d]) for d in dirs for f in sorted((base / d).iterdir())
             if f.suffix.lower() in _IMAGE_EXTENSIONS]
    if n is not None:
        files = [files[i] for i in subset_indices(len(files), min(n, len(files))).tolist()]
    if not files:
        raise UserError(f"no images under {base}")
    x = np.stack([_rgb(f) for f, _ in files])
    y = torch.tensor([lab for _, lab in files], dtype=torch.int64)
    return ArrayDataset(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), y, names,
                        f"{path.name}-{name}{severity}")


def load_corrupted(root: str | Path, name: str, severity: int, *, n: int | None = None,
                   classes: list[str] | None = None) -> ArrayDataset:
    """Images of corruption ``name`` at ``severity`` (1..5) from a published benchmark under ``root``; ``n`` keeps
    ``n`` evenly spaced images of that severity; ``classes`` names the labels (default "0".."K-1", or the sorted
    class directories)."""
    path = _root(root)
    if severity not in (1, 2, 3, 4, 5):
        raise UserError(f"corruption severity must be 1..5, got {severity}")
    if (path / f"{name}.npy").is_file():
        return _from_arrays(path, name, severity, n, classes)
    if (path / name).is_dir():
        return _from_folders(path, name, severity, n, classes)
    raise UserError(f"corruption {name!r} not found under {path} (available: "
                    f"{', '.join(available_corruptions(path))})")
