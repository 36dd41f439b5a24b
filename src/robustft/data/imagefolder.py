"""Image-folder datasets, ``<split>/<class>/<image>``, read from a directory or straight out of a zip.

Images are decoded once with PIL (``convert("RGB")``; 16-bit grayscale scaled to 8 bits) into one uint8 tensor
per split, each checked against ``DecodeLimits`` first (file size, then the header's pixel count) so a bomb is
never expanded. With ``image_size`` every image is resized to ``image_size``×``image_size`` at decode time (PIL
bilinear, which antialiases when shrinking), so folders of mixed sizes load; without it, mixed sizes are an
error. With ``storage_size`` images keep their aspect ratio instead (shorter side resized to it, as torchvision's
``Resize``) and are packed into one buffer (:class:`PackedImages`) for the papers' crops (``views``). Files are
decoded in parallel over the CPU cores (``decode.map_files``). Decoded splits are cached on disk (see ``cache.cached``), keyed on the zip's path, size and mtime, or a
directory's file stats.
"""

import functools
import hashlib
import io
import logging
import os
import shutil
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from ..progress import track
from .cache import cached
from .decode import map_files, storage_size_of
from .limits import MB, DecodeLimits
from .packed import PackedImages
from .store import DiskImages, open_store, store_dir, write_store
from .source import Arrays, Source

__all__ = ["IMAGE_EXTENSIONS", "image_folder"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SPLIT_DIRS = ("train", "val", "test")


class _Tree(Protocol):
    """A file tree to read images from: a directory or a zip archive."""

    path: Path

    def names(self) -> list[str]: ...  # every file, as a posix path relative to the tree's root

    def reader(self, limits: DecodeLimits) -> AbstractContextManager[Callable[[str], bytes]]: ...  # checks file sizes

    def fingerprint(self) -> tuple: ...  # changes whenever the tree's contents may have changed

    def describe(self, name: str) -> str: ...


class _DirTree:
    """An image folder on disk, listed up front because its files' stats are its fingerprint."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._names = [Path(d, f).relative_to(path).as_posix() for d, _, files in os.walk(path) for f in files]

    def names(self) -> list[str]:
        return self._names

    @contextmanager
    def reader(self, limits: DecodeLimits) -> Iterator[Callable[[str], bytes]]:
        def read(name: str) -> bytes:
            limits.check_file(self.describe(name), (self.path / name).stat().st_size, zipped=False)
            return (self.path / name).read_bytes()
        yield read

    def fingerprint(self) -> tuple:
        digest = hashlib.sha256()
        for name in sorted(self.names()):
            st = (self.path / name).stat()
            digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        return "dir", str(self.path.resolve()), digest.hexdigest()

    def describe(self, name: str) -> str:
        return str(self.path / name)


class _ZipTree:
    """An image folder inside a zip, read member by member without extracting anything to disk."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _open(self) -> Iterator[zipfile.ZipFile]:
        try:
            archive = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile) as e:
            raise UserError(f"cannot open {self.path} as a zip archive ({e}); check the file or re-create it") from e
        with archive:
            yield archive

    def names(self) -> list[str]:
        with self._open() as archive:
            return [info.filename for info in archive.infolist() if not info.is_dir()]

    @contextmanager
    def reader(self, limits: DecodeLimits) -> Iterator[Callable[[str], bytes]]:
        with self._open() as archive:
            def read(name: str) -> bytes:
                info = archive.getinfo(name)  # the central directory's size; zipfile never inflates past it
                limits.check_file(self.describe(name), info.file_size, zipped=True)
                return archive.read(info)
            yield read

    def fingerprint(self) -> tuple:
        st = self.path.stat()
        return "zip", str(self.path.resolve()), st.st_size, st.st_mtime_ns

    def describe(self, name: str) -> str:
        return f"{name} inside {self.path}"


def _index(tree: _Tree) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """Class names (sorted train class directories) and, per split, (member name, label) in sorted path order."""
    images = [n for n in tree.names() if n.lower().endswith(IMAGE_EXTENSIONS)
              and not any(part.startswith(".") or part == "__MACOSX" for part in n.split("/"))]
    tops = {n.split("/", 1)[0] for n in images}
    # The split directories may sit at the top or inside one wrapper directory (``zip -r data.zip data/``).
    prefix = f"{tops.pop()}/" if len(tops) == 1 and not tops & set(SPLIT_DIRS) else ""
    by_split: dict[str, list[tuple[list[str], str]]] = {}
    for name in images:
        parts = name[len(prefix):].split("/")
        if len(parts) >= 3 and parts[0] in SPLIT_DIRS:
            by_split.setdefault(parts[0], []).append((parts[1:], name))
    if not by_split:
        raise UserError(f"no images found in {tree.path}: expected <split>/<class>/<image> with split one of "
                        f"{', '.join(SPLIT_DIRS)} and images ending in {', '.join(IMAGE_EXTENSIONS)}")
    reference = "train" if "train" in by_split else min(by_split)
    classes = sorted({parts[0] for parts, _ in by_split[reference]})
    label = {c: i for i, c in enumerate(classes)}
    for split, items in by_split.items():
        unknown = sorted({parts[0] for parts, _ in items} - label.keys())
        if unknown:
            raise UserError(f"{tree.path}: {split}/ has classes {unknown} that {reference}/ lacks; "
                            f"every class must have a directory in {reference}/")
    files = {split: [(name, label[parts[0]]) for parts, name in sorted(items)] for split, items in by_split.items()}
    return classes, files


def _to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit grayscale image (``I;16*``, or ``I`` holding 0..65535) as 8-bit ``L``, v -> round(v * 255 / 65535).

    PIL's own ``convert`` clips these to 0..255, turning almost every pixel white. 16-bit RGB(A) PNGs need nothing:
    PIL decodes them to 8-bit RGB(A) itself, keeping the high byte (at most 1 level below rounding).
    """
    if not image.mode.startswith("I"):
        return image
    values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
    return Image.fromarray(np.round(values * (255 / 65535)).astype(np.uint8))


def _decode_one(what: str, data: bytes, image_size: int | None, limits: DecodeLimits,
                storage_size: int | None = None) -> np.ndarray:
    """One image as an H×W×3 uint8 array: its shorter side resized to ``storage_size`` (aspect kept) when given,
    else resized to ``image_size`` square when given."""
    # The pixel check below replaces PIL's DecompressionBombWarning (> Image.MAX_IMAGE_PIXELS); PIL still refuses
    # images over twice that (~179M pixels) at open, whatever max_image_pixels says.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))  # reads only the header: nothing is decoded before the check
    with image:
        limits.check_pixels(what, *image.size)
        size = storage_size_of(image, image_size, storage_size)
        if size is not None and image.format == "JPEG":
            image.draft(image.mode, size)  # decode at 1/2, 1/4 or 1/8 scale when still at least ``size``
        image = _to_8bit(image).convert("RGB")
        if size is not None and image.size != size:
            image = image.resize(size, Image.BILINEAR)
        return np.asarray(image)


def _decode_file(tree: _Tree, read: Callable[[str], bytes], name: str, image_size: int | None, limits: DecodeLimits,
                 storage_size: int | None) -> np.ndarray:
    """``_decode_one`` of member ``name``, with any decoding failure as a ``UserError`` naming the file."""
    try:
        return _decode_one(tree.describe(name), read(name), image_size, limits, storage_size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, zipfile.BadZipFile, zlib.error) as e:
        raise UserError(f"cannot decode image {tree.describe(name)} ({e}); replace or delete it") from e


def _labels(files: list[tuple[str, int]]) -> torch.Tensor:
    """The labels of ``files``."""
    return torch.tensor([label for _, label in files], dtype=torch.int64)


def _decoded(tree: _Tree, files: list[tuple[str, int]], image_size: int | None, limits: DecodeLimits,
             storage_size: int | None) -> Iterator[np.ndarray]:
    """Each of ``files`` decoded (see ``_decode_one``), in order, in parallel, with progress."""
    log.info("decoding %d images from %s", len(files), tree.path)
    decode = functools.partial(_decode_file, image_size=image_size, limits=limits, storage_size=storage_size)
    return track(map_files(tree, [name for name, _ in files], decode, limits), total=len(files),
                 desc=f"decoding {tree.path.name}", unit="image")


def _stored(tree: _Tree, files: list[tuple[str, int]], key: tuple, limits: DecodeLimits, storage_size: int,
            storage: str, budget_mb: float) -> tuple[PackedImages | DiskImages, torch.Tensor]:
    """A split in its disk store (decoded into it first when there is none): read from disk for ``storage=disk``,
    or for ``auto`` when its pixels exceed ``budget_mb``; otherwise loaded into memory."""
    path = store_dir(key)
    opened = open_store(path)
    if opened is None:
        shutil.rmtree(path, ignore_errors=True)  # an unreadable store (a damaged disk, an old layout) is rebuilt
        write_store(path, _decoded(tree, files, None, limits, storage_size), _labels(files))
        opened = open_store(path)
        if opened is None:
            raise UserError(f"the decoded store {path} could not be read back; check the cache disk "
                            f"($ROBUSTFT_CACHE) and retry")
    images, y = opened
    if storage == "auto" and images.nbytes <= budget_mb * MB:
        return images.load(), y
    return images, y


def _decode(tree: _Tree, files: list[tuple[str, int]], image_size: int | None, limits: DecodeLimits,
            storage_size: int | None = None) -> dict[str, torch.Tensor]:
    """Decode ``files`` into ``{"x": uint8 N×3×H×W, "y": int64 N}``, each checked against ``limits`` first; with
    ``storage_size``, into a packed store ``{"pixels", "offsets", "sizes", "y"}`` (see :class:`PackedImages`)."""
    y = _labels(files)
    decoded = _decoded(tree, files, image_size, limits, storage_size)
    if storage_size is not None:
        packed = PackedImages.pack(list(decoded))
        return {"pixels": packed.pixels, "offsets": packed.offsets, "sizes": packed.sizes, "y": y}
    out: np.ndarray | None = None
    for i, pixels in enumerate(decoded):
        if out is None:
            out = np.empty((len(files), *pixels.shape), np.uint8)
        elif pixels.shape != out.shape[1:]:
            raise UserError(f"image {tree.describe(files[i][0])} is {pixels.shape[1]}x{pixels.shape[0]} but "
                            f"{tree.describe(files[0][0])} is {out.shape[2]}x{out.shape[1]}; "
                            f"pass image_size (--image-size) to resize every image to one size")
        out[i] = pixels
    return {"x": torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), "y": y}


def image_folder(path: Path, image_size: int | None = None, cache: bool = True,
                 limits: DecodeLimits = DecodeLimits(), storage_size: int | None = None, storage: str = "memory",
                 memory_budget_mb: float = float("inf")) -> Source:
    """An image folder (directory or ``.zip``); a cache hit on a zip does not even open the archive.

    ``limits`` apply whenever images are decoded, i.e. on a cache miss: any new or changed file misses the cache.
    ``storage_size`` keeps each image's aspect ratio, its shorter side resized to that size, and loads splits as
    (:class:`PackedImages`, labels); then ``storage`` ``disk`` decodes each split once into a store on disk (under
    the cache directory, whatever ``cache`` says) and reads batches from it (:class:`DiskImages`), and ``auto`` does
    the same but loads the store into memory when its pixels fit ``memory_budget_mb``. Each split is decoded (or
    read from the cache) at most once per source.
    """
    tree: _Tree = _ZipTree(path) if path.is_file() else _DirTree(path)
    index = functools.cache(lambda: _index(tree))  # list the tree at most once, and only on a cache miss
    fingerprint = tree.fingerprint()
    meta = cached((fingerprint, "meta"), lambda: {"classes": index()[0], "splits": sorted(index()[1])}, cache)

    @functools.cache
    def load(split: str) -> Arrays:
        if storage_size is None:
            data = cached((fingerprint, split, image_size), lambda: _decode(tree, index()[1][split], image_size, limits),
                          cache)
            return data["x"], data["y"]
        key = (fingerprint, split, "packed", storage_size)
        if storage != "memory":
            return _stored(tree, index()[1][split], key, limits, storage_size, storage, memory_budget_mb)
        data = cached(key, lambda: _decode(tree, index()[1][split], image_size, limits, storage_size), cache)
        return PackedImages(data["pixels"], data["offsets"], data["sizes"]), data["y"]

    return Source(name=path.stem if path.is_file() else path.resolve().name, classes=meta["classes"],
                  loaders={split: functools.partial(load, split) for split in meta["splits"]})
