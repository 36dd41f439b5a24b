"""Fetch an official dataset file once: temp file, md5 check, safe extraction, atomic move into place."""

import hashlib
import http.client
import logging
import os
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

__all__ = ["Remote", "ensure_files"]

log = logging.getLogger(__name__)

TIMEOUT_S = 30  # per socket operation: an offline machine fails fast instead of hanging


ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")


@dataclass(frozen=True)
class Remote:
    """An official download: an archive (``.tar[.gz]``, ``.tgz``, ``.zip``) extracted into the data root, or one
    file saved as-is. ``md5`` is the published checksum, or None where the publisher gives none (the download is
    then used unchecked, with a warning); ``filename`` names a download whose URL does not end in its file name."""

    url: str
    md5: str | None
    filename: str | None = None

    @property
    def name(self) -> str:
        """The downloaded file's name."""
        return self.filename or Path(urllib.parse.urlparse(self.url).path).name

    @property
    def is_archive(self) -> bool:
        """Whether the download is an archive to extract rather than the data file itself."""
        return self.name.endswith(ARCHIVES)


def _download(remote: Remote, dest: Path) -> None:
    """Stream ``remote`` to ``dest`` and check its md5 (when one is published)."""
    md5 = hashlib.md5()
    with urllib.request.urlopen(remote.url, timeout=TIMEOUT_S) as response, open(dest, "wb") as f:
        while chunk := response.read(1 << 20):
            md5.update(chunk)
            f.write(chunk)
    if remote.md5 is None:
        log.warning("%s has no published checksum: md5 %s was not verified", remote.url, md5.hexdigest())
    elif md5.hexdigest() != remote.md5:
        raise ValueError(f"md5 {md5.hexdigest()} != expected {remote.md5}")


def _extract(archive: Path, staging: Path, *, zipped: bool) -> None:
    """Unpack a zip or a tar (any compression) into ``staging``, refusing members that would land outside it."""
    if zipped:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if Path(name).is_absolute() or ".." in Path(name).parts:
                    raise ValueError(f"archive member {name!r} would be written outside {staging}")
            zf.extractall(staging)
        return
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")  # refuses absolute paths, "..", and links out of staging


def _fetch(remote: Remote, root: Path, files: list[str]) -> None:
    """Download into a temp dir inside ``root``, then move ``files`` (paths relative to ``root``) into place."""
    root.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s into %s", remote.url, root)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:  # removed on any failure
        staging = Path(tmp)
        if remote.is_archive:
            archive = staging / ".archive"  # a name no member can collide with
            _download(remote, archive)
            _extract(archive, staging, zipped=remote.name.endswith(".zip"))
        else:
            (staging / files[0]).parent.mkdir(parents=True, exist_ok=True)
            _download(remote, staging / files[0])
        missing = [f for f in files if not (staging / f).exists()]
        if missing:
            raise ValueError(f"the download lacks {', '.join(missing)}")
        for f in files:  # same filesystem as root, so each move is atomic and nothing partial is ever visible
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / f, root / f)


def ensure_files(root: Path, files: list[str], remote: Remote, *, what: str, download: bool) -> None:
    """Make sure every ``root/f`` (a file, or a directory moved into place whole) exists, downloading ``remote`` if
    allowed; otherwise one UserError saying how."""
    missing = [f for f in files if not (root / f).exists()]
    if not missing:
        return
    reason = "download=False"
    if download:
        try:
            _fetch(remote, root, missing)
            return
        except (OSError, ValueError, tarfile.TarError, zipfile.BadZipFile, http.client.HTTPException) as e:
            reason = f"downloading {remote.url} failed: {e}"
    how = (f"download {remote.url} and extract it into {root}" if remote.is_archive
           else f"download {remote.url} and save it as {root / files[0]}")
    raise UserError(f"{what} is missing {', '.join(missing)} under {root} ({reason}); {how}, "
                    f"or point --data-root / $ROBUSTFT_DATA at a directory that has them")
