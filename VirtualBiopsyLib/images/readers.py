"""One entry point for every image format: read a header, read pixels, scan folders.

The format is chosen by file name: ``.nrrd``/``.nhdr`` → NRRD, ``.jpg``/``.jpeg``/``.png``
→ raster (CDD-CESM names), anything else → DICOM (real exports often have no extension).
Side files (``.csv``, ``.json``, ``.xlsx``, ``.txt``, ``.md``) and hidden files and folders
(e.g. the ``.partial`` folders of an interrupted run) are ignored.

This is the boundary every file crosses: whatever goes wrong while reading or decoding one
file (a decoder's ``struct.error``, a ``MemoryError``, a LUT that crashes pydicom) leaves
it as an :class:`ImageReadError` naming the file, so a batch goes on with the other files
and cases. :func:`read_image` also refuses images that must not be classified
(:mod:`VirtualBiopsyLib.images.quality`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from VirtualBiopsyLib.errors import ImageError, ImageReadError, UnsupportedImageError
from VirtualBiopsyLib.images.dicom_reader import read_dicom_image, read_dicom_info
from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
from VirtualBiopsyLib.images.nrrd_reader import NRRD_SUFFIXES, read_nrrd_image, read_nrrd_info
from VirtualBiopsyLib.images.quality import classification_problem
from VirtualBiopsyLib.images.raster_reader import (
    RASTER_SUFFIXES,
    read_raster_image,
    read_raster_info,
)
from VirtualBiopsyLib.training_manifest import is_lesion_mask_file

logger = logging.getLogger(__name__)

IGNORED_SUFFIXES = (".csv", ".json", ".xlsx", ".txt", ".md")
Status = Literal["ok", "skipped", "error"]
_T = TypeVar("_T")


@dataclass
class ScanEntry:
    """The outcome of reading one file's header during a scan."""

    path: Path
    status: Status
    reason: str | None = None
    info: ImageInfo | None = None


def image_format(path: Path) -> str:
    """``"nrrd"``, ``"raster"`` or ``"dicom"`` from the file name."""
    suffix = path.suffix.lower()
    if suffix in NRRD_SUFFIXES:
        return "nrrd"
    if suffix in RASTER_SUFFIXES or path.name.strip().lower().endswith(RASTER_SUFFIXES):
        return "raster"
    return "dicom"


_INFO_READERS: dict[str, Callable[[Path], ImageInfo]] = {
    "dicom": read_dicom_info,
    "raster": read_raster_info,
    "nrrd": read_nrrd_info,
}
_IMAGE_READERS: dict[str, Callable[[Path, ImageInfo | None], MammogramImage]] = {
    "dicom": read_dicom_image,
    "raster": read_raster_image,
    "nrrd": read_nrrd_image,
}


def read_info(path: Path | str) -> ImageInfo:
    """Read what a file is (roles, identity, size) without decoding its pixels.

    Raises ``UnsupportedImageError`` (skip) or ``ImageReadError`` (error).

    >>> from VirtualBiopsyLib.images.readers import read_info
    >>> info = read_info("exam/IM_0001.dcm")  # doctest: +SKIP
    >>> info.slot, info.laterality.value  # doctest: +SKIP
    ('DES_CC', 'L')
    """
    path = Path(path)
    _check_regular(path)
    return _guarded(path, "header", lambda: _INFO_READERS[image_format(path)](path))


def read_image(path_or_info: Path | str | ImageInfo) -> MammogramImage:
    """Decode a file into pixels as a radiologist sees them, with its roles.

    >>> image = read_image("exam/IM_0001.dcm")  # doctest: +SKIP
    >>> image.pixels.dtype, image.windowed  # doctest: +SKIP
    (dtype('float32'), True)
    """
    if isinstance(path_or_info, ImageInfo):
        info: ImageInfo | None = path_or_info
        path = path_or_info.path
    else:
        info, path = None, Path(path_or_info)
    _check_regular(path)
    image = _guarded(path, "pixels", lambda: _IMAGE_READERS[image_format(path)](path, info))
    problem = classification_problem(image)
    if problem is not None:
        raise ImageReadError(path, f"not classifiable: {problem}")
    return image


def _check_regular(path: Path) -> None:
    """Only regular files are opened: a FIFO would block and a device never end."""
    if path.is_file():
        return
    if not path.exists():
        raise ImageReadError(path, "no such file" + (" (broken link)" if path.is_symlink() else ""))
    raise ImageReadError(path, "not a regular file (a folder, device, FIFO or socket)")


def _guarded(path: Path, what: str, read: Callable[[], _T]) -> _T:
    """Run one reader; any failure but our own errors becomes an ImageReadError."""
    try:
        return read()
    except ImageError:
        raise
    except MemoryError as error:
        raise ImageReadError(path, f"not enough memory to read the {what}") from error
    except RecursionError as error:
        raise ImageReadError(path, f"cannot read the {what}: nested too deeply") from error
    except Exception as error:  # a decoder's own exception: the file is at fault
        logger.debug("unexpected %s while reading %s", type(error).__name__, what, exc_info=True)
        detail = " ".join(str(error).split())[:300]
        raise ImageReadError(
            path, f"cannot read the {what} ({type(error).__name__}: {detail})"
        ) from error


def iter_files(
    paths: Iterable[Path | str], on_error: Callable[[Path, str], None] | None = None
) -> Iterator[Path]:
    """Every candidate image file under ``paths`` (folders recursively), each once, sorted.

    A folder that cannot be listed is reported through ``on_error(folder, reason)``
    rather than skipped silently. Symbolic links to folders are followed (an exam is
    often assembled from links), each real folder read once, so a link back to a parent
    cannot loop.
    """
    seen: set[Path] = set()
    for root in paths:
        root = Path(root)
        candidates = _walk(root, on_error) if root.is_dir() else [root]
        for candidate in candidates:
            # The same image given twice (a folder and a file in it) is read once; links
            # to a device are each reported, not folded into one.
            key = candidate.resolve() if candidate.is_file() else candidate.absolute()
            if key in seen or _is_ignored(candidate):
                continue
            seen.add(key)
            yield candidate


def _walk(root: Path, on_error: Callable[[Path, str], None] | None) -> list[Path]:
    """Every file under ``root``, following links to folders; each real folder once."""

    def report(error: OSError) -> None:
        folder = Path(error.filename) if error.filename else root
        reason = f"cannot list folder ({error.strerror or error})"
        if on_error is not None:
            on_error(folder, reason)
        else:
            logger.warning("%s: %s", folder, reason)

    root_key = _folder_key(root)
    visited: set[tuple[int, int]] = {root_key} if root_key is not None else set()
    files = []
    for folder, folders, names in os.walk(root, onerror=report, followlinks=True):
        folders[:] = _unvisited(Path(folder), folders, visited)
        files.extend(Path(folder) / name for name in names)
    return sorted(files)  # devices, FIFOs and broken links too: read_info reports them


def _unvisited(parent: Path, names: list[str], visited: set[tuple[int, int]]) -> list[str]:
    """The sub-folders of ``parent`` to descend into: not hidden, and not a real folder
    already walked or queued (a link to a parent or a sibling would loop or repeat).
    Real folders come before links, so a folder is reached by its own path when it can."""
    ordered = sorted(
        (name for name in names if not name.startswith(".")),
        key=lambda name: (parent / name).is_symlink(),
    )
    kept = []
    for name in ordered:
        key = _folder_key(parent / name)
        if key is None or key not in visited:  # unstatable: os.walk reports it if unlistable
            kept.append(name)
            if key is not None:
                visited.add(key)
        # else: its files are scanned through the path that reached it first
    return sorted(kept)


def _folder_key(folder: Path) -> tuple[int, int] | None:
    """The identity of the real folder behind ``folder`` (links followed), if it has one."""
    try:
        status = folder.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _is_ignored(path: Path) -> bool:
    """Hidden files, sheets and notes, and lesion masks (an annotation, not an image)."""
    return (
        path.name.startswith(".")
        or path.suffix.lower() in IGNORED_SUFFIXES
        or is_lesion_mask_file(path)
    )


def lesion_mask_files(
    root: Path, on_error: Callable[[Path, str], None] | None = None
) -> list[Path]:
    """Every file under ``root`` named as a lesion mask, any case (``…_lesion_mask.PNG``),
    reached as the scans reach images (links to folders followed): what they leave out,
    for the importer that reads masks."""
    return [path for path in _walk(root, on_error) if is_lesion_mask_file(path)]


def scan(paths: Iterable[Path | str], decode: bool = False) -> list[ScanEntry]:
    """Read the header of every file under ``paths``; never raises for a bad file.

    A folder that cannot be listed gets an ``error`` entry of its own. With ``decode``
    every usable image is also decoded and checked as ``predict`` would
    (:func:`read_image`): one that cannot be decoded or must not be classified becomes an
    ``error`` entry with the reason (slower: every pixel is read).

    >>> from VirtualBiopsyLib.images.readers import scan
    >>> [entry.status for entry in scan(["exam/"])]  # doctest: +SKIP
    ['ok', 'ok', 'skipped', 'ok', 'ok']
    """
    entries: list[ScanEntry] = []

    def folder_error(folder: Path, reason: str) -> None:
        entries.append(ScanEntry(path=folder, status="error", reason=reason))

    for path in iter_files(paths, on_error=folder_error):
        entry = scan_file(path)
        if decode and entry.info is not None:
            entry = _decoded(entry)
        entries.append(entry)
    return entries


def _decoded(entry: ScanEntry) -> ScanEntry:
    try:
        read_image(entry.info)  # type: ignore[arg-type]
    except ImageError as error:
        return ScanEntry(path=entry.path, status="error", reason=_reason(error, entry.path))
    return entry


def _reason(error: ImageError, path: Path) -> str:
    """The reason, naming the file at fault when it is another (e.g. ``case.json``)."""
    if error.path is not None and error.path != path:
        return f"{error.path}: {error.reason}"
    return error.reason


def scan_file(path: Path) -> ScanEntry:
    """One file's scan entry: ``ok`` with its info, ``skipped`` or ``error`` with a reason."""
    try:
        return ScanEntry(path=path, status="ok", info=read_info(path))
    except UnsupportedImageError as error:
        return ScanEntry(path=path, status="skipped", reason=_reason(error, path))
    except ImageError as error:
        return ScanEntry(path=path, status="error", reason=_reason(error, path))
    except Exception as error:  # a file must never stop a scan of a whole folder
        logger.debug("unexpected %s while reading a header", type(error).__name__)
        reason = f"unexpected {type(error).__name__}: {error}"
        return ScanEntry(path=path, status="error", reason=reason)
