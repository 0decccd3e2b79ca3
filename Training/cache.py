"""A cache of preprocessed images, built once and reused by every fold and job.

Decoding a full-size DICOM and running the paper's preprocessing costs far more than a
training step at 64² or 256², so each image is preprocessed once. An entry's key is the
SHA-256 of the file's bytes together with the preprocessing parameters and the cache
format version: an edited file or a changed parameter gives a new key, a renamed or
copied file reuses its entry. Entries are ``.npy`` files (float16, values in [0, 1]),
written atomically and read with ``allow_pickle=False``.

>>> from VirtualBiopsyLib.images.preprocessing import PreprocessingParams
>>> cache = PreprocessedCache(Path("runs/cache"), PreprocessingParams(size=64))  # doctest: +SKIP
>>> le_cc = cache.load(Path("cohort/P0001/LE_CC.dcm"))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from Training.config import atomic_write_bytes
from VirtualBiopsyLib.errors import ImageReadError
from VirtualBiopsyLib.images.mammogram import MammogramImage
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams, preprocess

CACHE_FORMAT = "virtual-biopsy-preprocessed-v1"
STORAGE_DTYPE = np.float16  # half the disk of float32; 1e-3 resolution on [0, 1] images

logger = logging.getLogger(__name__)

ImageLoader = Callable[[Path], MammogramImage]


def _default_loader(path: Path) -> MammogramImage:
    from VirtualBiopsyLib.images.readers import read_image

    return read_image(path)


class PreprocessedCache:
    """Preprocessed arrays keyed by file content and preprocessing parameters.

    ``loader`` reads a file into a :class:`MammogramImage` (the library's reader by
    default; tests pass a stand-in).
    """

    def __init__(
        self,
        root: Path,
        params: PreprocessingParams,
        loader: ImageLoader | None = None,
    ) -> None:
        self.root = Path(root)
        self.params = params
        self.loader = loader or _default_loader
        self._params_text = json.dumps(params.to_dict(), sort_keys=True)
        self.hits = 0
        self.misses = 0

    def key(self, path: Path) -> str:
        """Hex key of a file under these parameters (content hash, not the path)."""
        digest = hashlib.sha256()
        digest.update(CACHE_FORMAT.encode())
        digest.update(self._params_text.encode())
        try:
            with open(path, "rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as error:
            raise ImageReadError(path, f"cannot read file ({error.strerror})") from None
        return digest.hexdigest()

    def entry_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def load(self, path: Path) -> np.ndarray:
        """The preprocessed float32 array of ``path`` (size × size, [0, 1])."""
        entry = self.entry_path(self.key(path))
        if entry.exists():
            array = self._read_entry(entry)
            if array is not None:
                self.hits += 1
                return array
        self.misses += 1
        array = np.asarray(preprocess(self.loader(Path(path)), self.params).array)
        stored = array.astype(STORAGE_DTYPE)
        self._write_entry(entry, stored)
        # what a later hit returns, so a run gives the same result with a cold or warm cache
        return stored.astype(np.float32)

    def load_many(self, paths: Iterable[Path]) -> dict[Path, np.ndarray]:
        """Arrays of several files, each read or built once."""
        return {Path(path): self.load(Path(path)) for path in dict.fromkeys(paths)}

    def _read_entry(self, entry: Path) -> np.ndarray | None:
        size = self.params.size
        try:
            array = np.load(entry, allow_pickle=False)
        except (OSError, ValueError) as error:
            logger.warning("rebuilding unreadable cache entry %s (%s)", entry.name, error)
            return None
        if array.shape != (size, size):
            logger.warning("rebuilding cache entry %s of shape %s", entry.name, array.shape)
            return None
        return array.astype(np.float32)

    def _write_entry(self, entry: Path, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        atomic_write_bytes(entry, buffer.getvalue())
