"""A cache of preprocessed images, built once and reused by every fold and job.

Decoding a full-size DICOM and running the paper's preprocessing costs far more than a
training step at 64² or 256², so each image is preprocessed once. An entry's key is the
SHA-256 of the file's bytes together with the preprocessing parameters and the cache
format version: an edited file or a changed parameter gives a new key, a renamed or
copied file reuses its entry. Entries are ``.npy`` files (float16, values in [0, 1]),
written atomically and read with ``allow_pickle=False``.

The first run of a real data set reads thousands of full-size images, so
:meth:`PreprocessedCache.fill` hashes, decodes and preprocesses in parallel worker
processes (forked from a fork server that imported the readers once, never torch)
behind a progress bar, and reports images/s (:class:`FillReport`). A stand-in
``loader`` (tests) runs in-process.

Lesion masks (:mod:`Training.lesion_masks`) are mapped onto the network's grid with their
image's own preprocessing geometry and kept beside the images (``masks/``, bool ``.npy``),
keyed by the image's key, the mask file's content and the mask format: a run with a warm
cache reads only the small mask files. A refusal that took decoding the image to find (a
mask of another size) is kept too (``.refused.json``), so it is not decoded again.

>>> from VirtualBiopsyLib.images.preprocessing import PreprocessingParams
>>> cache = PreprocessedCache(Path("runs/cache"), PreprocessingParams(size=64))  # doctest: +SKIP
>>> le_cc = cache.load(Path("cohort/P0001/LE_CC.dcm"))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from Training.cpus import usable_cpus  # no torch either
from Training.lesion_masks import (
    LE_SIZE_DIFFERS,
    REFUSAL_REASONS,
    SIZE_DIFFERS,
    LesionMaskRefusedError,
    read_lesion_mask,
    read_mask_bytes,
)
from VirtualBiopsyLib.atomic_io import (  # no torch in worker processes
    write_bytes_atomic,
    write_text_atomic,
)
from VirtualBiopsyLib.errors import ImageError, ImageReadError
from VirtualBiopsyLib.images.mammogram import MammogramImage
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams, preprocess
from VirtualBiopsyLib.limits import LimitExceededError, open_regular_file

CACHE_FORMAT = "virtual-biopsy-preprocessed-v1"
MASK_FORMAT = "virtual-biopsy-lesion-mask-v1"  # bool size × size, threshold 0.5
STORAGE_DTYPE = np.float16  # half the disk of float32; 1e-3 resolution on [0, 1] images
MAX_WORKERS = 8  # beyond this, reading the files (disk, network share) is the limit
SERIAL_PROBE_S = 2.0  # a fill done sooner in-process never starts worker processes

logger = logging.getLogger(__name__)

ImageLoader = Callable[[Path], MammogramImage]


def _default_loader(path: Path) -> MammogramImage:
    from VirtualBiopsyLib.images.readers import read_image

    return read_image(path)


@dataclass(frozen=True)
class FillReport:
    """What one :meth:`PreprocessedCache.fill` did, and how fast."""

    images: int
    built: int
    reused: int
    workers: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")

    def describe(self) -> str:
        return (
            f"preprocessed {self.images} images ({self.built} built, {self.reused} from the "
            f"cache) in {self.seconds:.1f} s with {self.workers} process"
            f"{'es' if self.workers > 1 else ''}: {self.images_per_s:.1f} images/s"
        )


@dataclass(frozen=True)
class _Outcome:
    path: Path
    key: str | None
    built: bool
    error: str | None = None


_worker_cache: PreprocessedCache | None = None


def _start_worker(root: str, params: dict) -> None:
    global _worker_cache
    from VirtualBiopsyLib.images.preprocessing import PreprocessingParams

    _worker_cache = PreprocessedCache(Path(root), PreprocessingParams.from_dict(params))


def _worker_context() -> multiprocessing.context.BaseContext:
    """Fork-server workers where the platform has them, else spawned ones.

    Never plain fork: the parent may be a training run with torch (and CUDA, tqdm) threads.
    The fork server is a fresh single-threaded process that imports the readers once and
    forks each worker from itself, so N workers do not each import them again.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(_WORKER_MODULES))
        return context
    return multiprocessing.get_context("spawn")


_WORKER_MODULES = (
    "Training.cache",
    "VirtualBiopsyLib.images.readers",
    "VirtualBiopsyLib.images.preprocessing",
)


def _fill_in_worker(path: Path) -> _Outcome:
    assert _worker_cache is not None, "worker not initialised"
    return _worker_cache.ensure(path)


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
        *,
        workers: int | None = None,
        progress: bool | None = None,
    ) -> None:
        self.root = Path(root)
        self.params = params
        self.loader = loader or _default_loader
        self.workers = workers  # None: one per CPU, at most MAX_WORKERS
        self.progress = progress  # None: a progress bar on terminals only
        self._params_text = json.dumps(params.to_dict(), sort_keys=True)
        self.hits = 0
        self.misses = 0
        self.last_fill: FillReport | None = None
        self._keys: dict[Path, str] = {}

    def key(self, path: Path) -> str:
        """Hex key of a file under these parameters (content hash, not the path)."""
        digest = hashlib.sha256()
        digest.update(CACHE_FORMAT.encode())
        digest.update(self._params_text.encode())
        try:
            with open_regular_file(path) as stream:  # a FIFO or device: refused, not waited on
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
        except LimitExceededError as error:
            raise ImageReadError(path, str(error)) from None
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

    def ensure(self, path: Path) -> _Outcome:
        """Make sure ``path`` has a valid entry (build it if not); never raises for a file."""
        path = Path(path)
        try:
            entry = self.entry_path(key := self.key(path))
            if entry.exists() and self._read_entry(entry) is not None:
                return _Outcome(path, key, built=False)
            array = np.asarray(preprocess(self.loader(path), self.params).array)
            self._write_entry(entry, array.astype(STORAGE_DTYPE))
            return _Outcome(path, key, built=True)
        except ImageError as error:
            return _Outcome(path, None, built=False, error=error.reason)
        except Exception as error:  # one bad file must not stop the others
            return _Outcome(path, None, built=False, error=f"{type(error).__name__}: {error}")

    def _worker_count(self, workers: int | None) -> int | None:
        """Processes to use; ``None``: decide after timing the first images in-process."""
        if self.loader is not _default_loader:
            return 1  # a stand-in may keep state the caller reads (tests count calls)
        wanted = workers if workers is not None else self.workers
        return max(1, wanted) if wanted is not None else None

    def fill(
        self, paths: Iterable[Path], workers: int | None = None, progress: bool | None = None
    ) -> FillReport:
        """Build every missing entry of ``paths``, in parallel processes; report the speed.

        With ``workers=None`` the first images are done in-process for up to
        :data:`SERIAL_PROBE_S`; if images remain after that, the rest go to one process per
        CPU (at most :data:`MAX_WORKERS`), so small fills never pay the start-up of worker
        processes. Raises :class:`ImageReadError` naming the first file that failed, after
        every other file was done (a rerun only retries the failures).

        >>> cache.fill(manifest_paths, workers=4).images_per_s  # doctest: +SKIP
        31.5
        """
        pending = [Path(path) for path in dict.fromkeys(Path(p) for p in paths)]
        total = len(pending)
        count = self._worker_count(workers)
        show = self.progress if progress is None else progress
        started = time.perf_counter()
        bar = tqdm(
            total=total,
            desc="preprocessing images",
            unit="img",
            disable=None if show is None else not show,
            dynamic_ncols=True,
        )
        shown = not bar.disable  # close() sets disable
        outcomes: list[_Outcome] = []
        used = 1
        try:
            if count is None:  # adaptive: probe in-process first
                while pending and time.perf_counter() - started < SERIAL_PROBE_S:
                    outcomes.append(self.ensure(pending.pop(0)))
                    bar.update()
                count = min(usable_cpus(), MAX_WORKERS)
            count = min(count, len(pending)) if pending else 1
            if count <= 1:
                for path in pending:
                    outcomes.append(self.ensure(path))
                    bar.update()
            else:
                used = count
                context = _worker_context()
                with ProcessPoolExecutor(
                    count,
                    mp_context=context,
                    initializer=_start_worker,
                    initargs=(str(self.root), self.params.to_dict()),
                ) as pool:
                    for future in as_completed([pool.submit(_fill_in_worker, p) for p in pending]):
                        outcomes.append(future.result())
                        bar.update()
        finally:
            bar.close()
        self._keys.update({o.path: o.key for o in outcomes if o.key is not None})
        built = sum(o.built for o in outcomes)
        failures = [o for o in outcomes if o.error is not None]
        report = FillReport(
            total, built, total - built - len(failures), used, time.perf_counter() - started
        )
        self.misses += built
        self.hits += report.reused
        self.last_fill = report
        logger.info("%s", report.describe())
        if shown:
            tqdm.write(report.describe(), file=sys.stderr)
        if failures:
            first = failures[0]
            more = f" ({len(failures) - 1} more files failed)" if len(failures) > 1 else ""
            raise ImageReadError(first.path, f"{first.error}{more}")
        return report

    def load_many(self, paths: Iterable[Path]) -> dict[Path, np.ndarray]:
        """Arrays of several files, each read or built once (filled in parallel first)."""
        unique = [Path(path) for path in dict.fromkeys(Path(p) for p in paths)]
        self.fill(unique)
        arrays: dict[Path, np.ndarray] = {}
        for path in unique:
            array = self._read_entry(self.entry_path(self._keys[path]))
            arrays[path] = array if array is not None else self.load(path)
        return arrays

    def image_key(self, path: Path) -> str:
        """:meth:`key` of ``path``, from this run's fill when it hashed the file already."""
        path = Path(path)
        if path not in self._keys:
            self._keys[path] = self.key(path)
        return self._keys[path]

    def lesion_mask(
        self, image_path: Path, mask_path: Path, shaped_as: Path | None = None
    ) -> np.ndarray:
        """The lesion mask of ``image_path`` on its preprocessed grid (bool size × size).

        ``mask_path`` is on the image's original grid (``shaped_as``: the image it was
        drawn on, when another one of the same acquisition; it must have the same pixel
        shape). Mapped with the image's own :class:`Geometry`
        (``map_to_preprocessed``, covered fraction ≥ 0.5) and cached; raises
        :class:`LesionMaskRefusedError` for a mask that cannot be used.

        >>> des_cc, mask = Path("P1/DES_CC.dcm"), Path("P1/DES_CC_mask.png")
        >>> cache.lesion_mask(des_cc, mask).shape  # doctest: +SKIP
        (256, 256)
        """
        image_path, mask_path = Path(image_path), Path(mask_path)
        data = read_mask_bytes(mask_path)  # read once: the key and the mask are the same bytes
        key = self._mask_key(image_path, data, shaped_as)
        entry = self.root / "masks" / key[:2] / f"{key}.npy"
        refusal = entry.with_suffix(".refused.json")
        cached = self._read_mask_entry(entry)
        if cached is not None:
            return cached
        stored = self._read_refusal(refusal)
        if stored is not None:
            raise LesionMaskRefusedError(*stored)
        mask = read_lesion_mask(data)  # refused without decoding any image
        try:
            mapped = self._map_mask(mask, image_path, shaped_as)
        except LesionMaskRefusedError as error:
            record = {"reason": error.reason, "detail": error.detail}
            write_text_atomic(refusal, json.dumps(record) + "\n")
            raise
        buffer = io.BytesIO()
        np.save(buffer, mapped, allow_pickle=False)
        write_bytes_atomic(entry, buffer.getvalue())
        return mapped

    def _mask_key(self, image_path: Path, mask_data: bytes, shaped_as: Path | None) -> str:
        digest = hashlib.sha256()
        digest.update(MASK_FORMAT.encode())
        digest.update(self.image_key(image_path).encode())
        if shaped_as is not None:
            digest.update(b"|drawn on|" + self.image_key(Path(shaped_as)).encode())
        digest.update(mask_data)
        return digest.hexdigest()

    def _map_mask(self, mask: np.ndarray, image_path: Path, shaped_as: Path | None) -> np.ndarray:
        """Decode the image for its geometry (and its shape), map the mask, threshold 0.5."""
        image = self.loader(image_path)
        shape = tuple(np.shape(image.pixels))
        if shaped_as is not None:
            drawn_on = tuple(np.shape(self.loader(Path(shaped_as)).pixels))
            if drawn_on != shape:
                raise LesionMaskRefusedError(LE_SIZE_DIFFERS, f"LE {drawn_on}, DES {shape}")
        if mask.shape != shape:
            raise LesionMaskRefusedError(SIZE_DIFFERS, f"mask {mask.shape}, image {shape}")
        geometry = preprocess(image, self.params).geometry
        return geometry.map_to_preprocessed(mask.astype(np.float32)) >= 0.5

    def _read_refusal(self, refusal: Path) -> tuple[str, str] | None:
        """A kept refusal's reason and detail; None when there is none or it cannot be read
        (then the mask is mapped again, as a bad entry is rebuilt)."""
        if not refusal.exists():
            return None
        try:
            stored = json.loads(refusal.read_text(encoding="utf-8"))
            reason, detail = stored["reason"], stored["detail"]
        except (OSError, ValueError, TypeError, KeyError) as error:
            logger.warning("ignoring unreadable mask refusal %s (%r)", refusal.name, error)
            return None
        if reason not in REFUSAL_REASONS or not isinstance(detail, str):
            logger.warning("ignoring mask refusal %s of unknown reason", refusal.name)
            return None
        return reason, detail

    def _read_mask_entry(self, entry: Path) -> np.ndarray | None:
        if not entry.exists():
            return None
        try:
            array = np.load(entry, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:  # EOFError: an empty file
            logger.warning("rebuilding unreadable mask entry %s (%s)", entry.name, error)
            return None
        size = self.params.size
        if array.shape != (size, size) or array.dtype != np.bool_:
            logger.warning("rebuilding mask entry %s of shape %s", entry.name, array.shape)
            return None
        return array

    def _read_entry(self, entry: Path) -> np.ndarray | None:
        size = self.params.size
        try:
            array = np.load(entry, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:  # EOFError: an empty file
            logger.warning("rebuilding unreadable cache entry %s (%s)", entry.name, error)
            return None
        if array.shape != (size, size):
            logger.warning("rebuilding cache entry %s of shape %s", entry.name, array.shape)
            return None
        return array.astype(np.float32)

    def _write_entry(self, entry: Path, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        write_bytes_atomic(entry, buffer.getvalue())
