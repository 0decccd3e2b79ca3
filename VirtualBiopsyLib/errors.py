"""One exception class per kind of failure, so each front end can show the right message."""

from __future__ import annotations

from pathlib import Path


class VirtualBiopsyError(Exception):
    """Base class of every error the library raises on purpose."""


class ImageError(VirtualBiopsyError):
    """A file could not be read as a mammogram. Names the file and what is wrong."""

    def __init__(self, path: Path | str | None, reason: str) -> None:
        self.path = Path(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


class UnsupportedImageError(ImageError):
    """A readable file that is deliberately not used (high energy, For Processing, …)."""


class ImageReadError(ImageError):
    """A file that should be usable but cannot be read (truncated, no pixels, no decoder)."""


class CaseError(VirtualBiopsyError):
    """A case that cannot be processed, e.g. no LE and no DES image for any view."""


class ModelPackageError(VirtualBiopsyError):
    """A model package that is missing, tampered with, of unknown format or incompatible."""


class OutputExistsError(VirtualBiopsyError):
    """An output folder exists and would be overwritten without ``--overwrite``."""
