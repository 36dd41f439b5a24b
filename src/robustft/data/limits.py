"""Size limits that stop a small file from expanding into gigabytes (zip bombs, huge image headers, npz members,
labels that imply a billion classes)."""

from dataclasses import dataclass

from ..errors import UserError

__all__ = ["DecodeLimits"]

MB = 1 << 20


def _over(what: str, amount: str, key: str, limit: str) -> UserError:
    """The error for ``what`` being ``amount``, over ``data.<key>``, saying how to raise the limit."""
    flag = "--" + key.replace("_", "-")
    return UserError(f"{what} is {amount}, over data.{key}={limit} "
                     f"(raise it with --set data.{key}=N, or {flag} N for evaluate)")


@dataclass(frozen=True)
class DecodeLimits:
    """Size limits checked before anything is read or decoded."""

    max_file_mb: float = 64.0  # one image file: a zip member's ZipInfo.file_size, or a file's size on disk
    max_image_pixels: int = 40_000_000  # width*height from the image header (PIL opens lazily), before decoding
    max_array_mb: float = 16384.0  # one .npz member, decompressed size from its zip header, before reading
    max_classes: int = 100_000  # class directories, or the largest label + 1, before any class name is made

    @property
    def max_file_bytes(self) -> int:
        """``max_file_mb`` in bytes: a file is read no further than one byte past this."""
        return int(self.max_file_mb * MB)

    def check_file(self, what: str, size: int, *, zipped: bool) -> None:
        """Refuse an image file of ``size`` bytes (decompressed size for a zip member) before it is read."""
        if size > self.max_file_mb * MB:
            amount = f"{size / MB:.1f} MB" + (" decompressed" if zipped else "")
            raise _over(what, amount, "max_file_mb", f"{self.max_file_mb:g}")

    def check_pixels(self, what: str, width: int, height: int) -> None:
        """Refuse an image whose header announces more than ``max_image_pixels`` pixels, before it is decoded."""
        if width * height > self.max_image_pixels:
            raise _over(what, f"{width}x{height} = {width * height} pixels", "max_image_pixels",
                        str(self.max_image_pixels))

    def check_classes(self, what: str, count: int) -> None:
        """Refuse data with ``count`` classes (``what`` says where the count comes from) before they are listed."""
        if count > self.max_classes:
            raise _over(what, str(count), "max_classes", str(self.max_classes))

    def check_array(self, what: str, size: int) -> None:
        """Refuse an ``.npz`` member of ``size`` decompressed bytes before it is read."""
        if size > self.max_array_mb * MB:
            raise _over(what, f"{size / MB:.1f} MB decompressed", "max_array_mb", f"{self.max_array_mb:g}")
