"""Fixtures for robustft.data tests: an isolated decode cache and small generated image-folder trees."""

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the decode cache (and the default data root under it) at tmp_path; ignore the user's data root."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ROBUSTFT_CACHE", str(cache))
    monkeypatch.delenv("ROBUSTFT_DATA", raising=False)
    return cache


TreeSpec = dict[str, dict[str, int]]  # split -> class -> number of images


@pytest.fixture
def make_tree() -> Callable[..., dict[str, np.ndarray]]:
    """Write ``<root>/<split>/<class>/<i>.png`` with seeded random pixels; returns relative path -> H×W×3 pixels."""
    def make(root: Path, spec: TreeSpec, size: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        written = {}
        for split, classes in spec.items():
            for cls, count in classes.items():
                (root / split / cls).mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(root / split / cls / f"{i:03d}.png")  # PNG: lossless
                    written[f"{split}/{cls}/{i:03d}.png"] = pixels
        return written
    return make


@pytest.fixture
def zip_tree() -> Callable[[Path, Path, str], Path]:
    """Zip every file under ``src`` into ``dest``, under the wrapper directory ``wrapper`` ("" for none)."""
    def make(src: Path, dest: Path, wrapper: str = "") -> Path:
        with zipfile.ZipFile(dest, "w") as archive:
            for path in sorted(src.rglob("*")):
                archive.write(path, Path(wrapper, path.relative_to(src)).as_posix())
        return dest
    return make
