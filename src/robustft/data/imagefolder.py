"""Image-folder datasets, ``<split>/<class>/<image>``, read from a directory or straight out of a zip.

Images are decoded once with PIL (``convert("RGB")``; 16-bit grayscale scaled to 8 bits) into one uint8 tensor
per split, each checked against ``DecodeLimits`` first (file size, then the header's pixel count) so a bomb is
never expanded. With ``image_size`` every image is resized to ``image_size``×``image_size`` at decode time (PIL
bilinear, which antialiases when shrinking), so folders of mixed sizes load; without it, mixed sizes are an
error. With ``storage_size`` images keep their aspect ratio instead (shorter side resized to it, as torchvision's
``Resize``) and are packed into one buffer (:class:`PackedImages`) for the papers' crops (``views``), held in memory
or in a store on disk (``store``). Files are decoded in parallel over the CPU cores (``decode.map_files``). Decoded
splits are cached on disk (see ``cache.cached``), keyed on the zip's central directory (every
member's name, CRC-32 and size, so a same-size replacement with its mtime kept is still a miss) or a directory's
file stats (inode and ctime included: ``cp -p`` and ``rsync -a`` cannot set those back). Class names and labels come
from the listing on every run; a cached split must match them, and its content digest, or it is decoded again.
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
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from ..errors import UserError, warn
from ..progress import track
from .cache import cached
from .decode import map_files, storage_size_of
from .limits import MB, DecodeLimits
from .packed import PackedImages
from .readers import open_regular, printable, read_file, read_member
from .source import Arrays, Source
from .store import DiskImages, open_store, store_dir, write_store

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


def _utf8(name: str) -> bool:
    """Whether a listed name is valid UTF-8 (Python decodes other bytes to lone surrogates)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


class _DirTree:
    """An image folder on disk, listed up front because its files' stats are its fingerprint."""

    def __init__(self, path: Path) -> None:
        self.path = path
        names = [Path(d, f).relative_to(path).as_posix() for d, _, files in os.walk(path) for f in files]
        self._names = [n for n in names if _utf8(n)]
        if skipped := [n for n in names if not _utf8(n) and n.lower().endswith(IMAGE_EXTENSIONS)]:
            warn(f"skipping {len(skipped)} image(s) whose names are not valid UTF-8, e.g. "
                 f"{printable(path / skipped[0])}; rename them to use them")

    def names(self) -> list[str]:
        return self._names

    @contextmanager
    def reader(self, limits: DecodeLimits) -> Iterator[Callable[[str], bytes]]:
        yield lambda name: read_file(self.path / name, self.describe(name), limits)

    def fingerprint(self) -> tuple:
        digest = hashlib.sha256()
        for name in sorted(self.names()):
            st = (self.path / name).stat()
            digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_ctime_ns}\0".encode())
        return "dir", str(self.path.resolve()), digest.hexdigest()

    def describe(self, name: str) -> str:
        return printable(self.path / name)


class _ZipTree:
    """An image folder inside a zip, read member by member without extracting anything to disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._open() as archive:
            self._members = [info for info in archive.infolist() if not info.is_dir()]

    @contextmanager
    def _open(self) -> Iterator[zipfile.ZipFile]:
        with ExitStack() as stack:
            try:
                archive = stack.enter_context(zipfile.ZipFile(stack.enter_context(open_regular(self.path))))
            except (OSError, ValueError, zipfile.BadZipFile) as e:  # ValueError: a member name that is not UTF-8
                raise UserError(f"cannot open {self.path} as a zip archive ({e}); check the file or re-create it"
                                ) from e
            yield archive

    def names(self) -> list[str]:
        return [info.filename for info in self._members]

    @contextmanager
    def reader(self, limits: DecodeLimits) -> Iterator[Callable[[str], bytes]]:
        with self._open() as archive:
            yield lambda name: read_member(archive, archive.getinfo(name), self.describe(name), limits)

    def fingerprint(self) -> tuple:
        digest = hashlib.sha256()  # the content as the archive states it: reading a member checks its CRC-32
        for info in self._members:
            digest.update(f"{info.filename}\0{info.CRC}\0{info.file_size}\0".encode())
        return "zip", digest.hexdigest()

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
        if storage_size is not None and image.format == "JPEG":
            # decode at 1/2, 1/4 or 1/8 scale when still at least ``size``; only for the stored views, so a square
            # ``image_size`` keeps the exact full decode + resize (the pixels committed results were measured on)
            image.draft(image.mode, size)
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


def _check_decoded(files: list[tuple[str, int]], image_size: int | None, value: dict) -> str | None:
    """Why a cached split is not what decoding ``files`` gives (None when it can be): checked as fresh data is."""
    x, y = value.get("x"), value.get("y")
    if value.keys() != {"x", "y"} or not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        return "it does not hold images x and labels y"
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[:2] != (len(files), 3) or min(x.shape[2:]) < 1:
        return f"its images are {x.dtype} {tuple(x.shape)}, not uint8 {len(files)}×3×H×W"
    if image_size is not None and x.shape[2:] != (image_size, image_size):
        return f"its images are {x.shape[3]}x{x.shape[2]}, not {image_size}x{image_size}"
    if y.dtype != torch.int64 or y.shape != (len(files),) or not torch.equal(y, _labels(files)):
        return "its labels are not the folder's"
    return None


def _check_packed(files: list[tuple[str, int]], storage_size: int, value: dict) -> str | None:
    """Why a cached packed split is not what decoding ``files`` at ``storage_size`` gives (None when it can be)."""
    if value.keys() != {"pixels", "offsets", "sizes", "y"} or not all(isinstance(v, torch.Tensor)
                                                                       for v in value.values()):
        return "it does not hold packed images and labels"
    try:
        images = PackedImages(value["pixels"], value["offsets"], value["sizes"])
    except ValueError as e:
        return str(e)
    if len(images) != len(files) or images.nbytes != images.pixels.numel() or int(images.sizes.min()) != storage_size:
        return f"its images are not {len(files)} images packed with the shorter side {storage_size}"
    if not torch.equal(value["y"], _labels(files)):
        return "its labels are not the folder's"
    return None


def decoded_split(tree: _Tree, files: list[tuple[str, int]], key: tuple, image_size: int | None,
                  limits: DecodeLimits, cache: bool, storage_size: int | None, storage: str,
                  memory_budget_mb: float) -> Arrays:
    """``files`` of ``tree`` decoded (or from the cache, under ``key`` + the sizes): (uint8 N×3×H×W, labels), or
    with ``storage_size`` (:class:`PackedImages` or, as ``storage`` says, :class:`DiskImages`, labels)."""
    if storage_size is None:
        data = cached((*key, image_size), lambda: _decode(tree, files, image_size, limits), cache,
                      check=functools.partial(_check_decoded, files, image_size))
        return data["x"], data["y"]
    key = (*key, "packed", storage_size)
    if storage != "memory":
        return _stored(tree, files, key, limits, storage_size, storage, memory_budget_mb)
    data = cached(key, lambda: _decode(tree, files, image_size, limits, storage_size), cache,
                  check=functools.partial(_check_packed, files, storage_size))
    return PackedImages(data["pixels"], data["offsets"], data["sizes"]), data["y"]


def image_folder(path: Path, *, image_size: int | None, cache: bool, limits: DecodeLimits, storage_size: int | None,
                 storage: str, memory_budget_mb: float) -> Source:
    """An image folder (directory or ``.zip``); a cache hit reads the listing (a zip's central directory) only.

    ``limits`` apply whenever images are decoded, i.e. on a cache miss: any new or changed file misses the cache.
    ``storage_size`` keeps each image's aspect ratio, its shorter side resized to that size, and loads splits as
    (:class:`PackedImages`, labels); then ``storage`` ``disk`` decodes each split once into a store on disk (under
    the cache directory, whatever ``cache`` says) and reads batches from it (:class:`DiskImages`), and ``auto`` does
    the same but loads the store into memory when its pixels fit ``memory_budget_mb``. Each split is decoded (or
    read from the cache) at most once per source.
    """
    tree: _Tree = _DirTree(path) if path.is_dir() else _ZipTree(path)
    classes, files = _index(tree)
    limits.check_classes(f"{path}: the number of class directories", len(classes))
    fingerprint = tree.fingerprint()

    @functools.cache
    def load(split: str) -> Arrays:
        return decoded_split(tree, files[split], (fingerprint, split), image_size, limits, cache, storage_size,
                             storage, memory_budget_mb)

    return Source(name=path.resolve().name if path.is_dir() else path.stem, classes=classes,
                  loaders={split: functools.partial(load, split) for split in sorted(files)})
