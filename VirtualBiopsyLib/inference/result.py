"""The result of one case's virtual biopsy, its JSON form, and writing it to disk.

A :class:`CaseResult` holds the numbers (per image, per modality, fused, each with its
spread over the cross-validation folds), where every input came from (real, synthetic
or missing), and the images worth keeping (synthetic DES and saliency maps, already on
the original pixel grid). :meth:`CaseResult.write` puts everything in one case folder,
atomically: a temporary folder is filled and renamed, so a reader never sees half a
result and an earlier result is never half-overwritten.

No torch here: the Slicer bridge reads results without loading the models.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from VirtualBiopsyLib import RESEARCH_USE_NOTICE, SYNTHETIC_NOTICE, __version__
from VirtualBiopsyLib.errors import OutputExistsError
from VirtualBiopsyLib.roles import SLOTS, Source

RESULT_FORMAT_VERSION = 1
RESULT_FILE = "result.json"
REPORT_FILE = "report.png"
DEMO_MODEL_WARNING = (
    "DEMO MODEL: trained on synthetic phantom data only. Its numbers mean nothing "
    "about real patients."
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldStats:
    """A probability over the cross-validation folds: mean, sample std, standard error."""

    mean: float
    std: float
    sem: float
    folds: tuple[float, ...]

    @classmethod
    def from_folds(cls, values: list[float] | tuple[float, ...] | np.ndarray) -> FoldStats:
        """Summarise one value per fold (std with n−1; 0 for a single fold).

        >>> FoldStats.from_folds([0.2, 0.4]).mean
        0.3
        """
        folds = tuple(float(v) for v in values)
        if not folds:
            raise ValueError("no fold values to summarise")
        mean = float(np.mean(folds))
        std = float(np.std(folds, ddof=1)) if len(folds) > 1 else 0.0
        return cls(round(mean, 6), round(std, 6), round(std / math.sqrt(len(folds)), 6), folds)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "sem": self.sem, "folds": list(self.folds)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FoldStats:
        return cls(data["mean"], data["std"], data.get("sem", 0.0), tuple(data["folds"]))


@dataclass(frozen=True)
class InputRecord:
    """Where one slot's image came from: a real file, synthesized from LE, or missing."""

    source: Source
    path: str | None = None
    generated_from: str | None = None  # the LE slot a synthetic DES was made from

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.value,
            "path": self.path,
            "generated_from": self.generated_from,
        }


@dataclass(frozen=True)
class ModelInfo:
    """Which model package produced a result (its model.json hash identifies it)."""

    name: str
    version: str
    architecture: str
    sha256: str
    is_demo: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "architecture": self.architecture,
            "sha256": self.sha256,
            "is_demo": self.is_demo,
        }


@dataclass
class SlotPicture:
    """An image to keep or show, on the original pixel grid of its source image.

    Either ``data`` holds the pixels themselves, or — when ``geometry`` is given — a
    ``size × size`` map on the preprocessed grid that :attr:`pixels` draws back onto the
    original grid on demand (``Geometry.map_to_original``). The lazy form keeps a case's
    full-size maps (27 MB each at 2850×2396) out of memory until each is written.
    Values are in [0, 1]; ``spacing`` is (row_mm, column_mm); ``reference_path`` is the
    file whose origin and direction NRRD outputs copy.
    """

    data: np.ndarray
    spacing: tuple[float, float]
    reference_path: Path | None = None
    geometry: Any = None  # images.preprocessing.Geometry when ``data`` is a preprocessed map
    sampled: tuple[int, tuple[int, int]] | None = None  # (stride, original shape) of a preview

    @classmethod
    def preview(
        cls,
        pixels: np.ndarray,
        stride: int,
        spacing: tuple[float, float],
        reference_path: Path | None = None,
    ) -> SlotPicture:
        """Keep only every ``stride``-th pixel (enough for the report) of a large image."""
        shape = (int(pixels.shape[0]), int(pixels.shape[1]))
        data = np.ascontiguousarray(pixels[::stride, ::stride], dtype=np.float32)
        return cls(data, spacing, reference_path, sampled=(stride, shape))

    @property
    def shape(self) -> tuple[int, int]:
        """Size of the original grid."""
        if self.geometry is not None:
            return tuple(self.geometry.original_shape)  # type: ignore[return-value]
        if self.sampled is not None:
            return self.sampled[1]
        return (int(self.data.shape[0]), int(self.data.shape[1]))

    @property
    def pixels(self) -> np.ndarray:
        """Full-resolution values on the original grid (computed anew for lazy maps)."""
        if self.sampled is not None:
            raise ValueError("a preview picture holds no full-resolution pixels")
        if self.geometry is None:
            return self.data
        return self.geometry.map_to_original(self.data)

    def display(self, stride: int) -> np.ndarray:
        """Every ``stride``-th original pixel in both directions, for drawing.

        Lazy maps are sampled at those pixel centres only (bilinear, through the
        geometry's own point mapping), never built at full size.
        """
        if self.sampled is not None:
            step = max(1, stride // self.sampled[0])
            return self.data[::step, ::step]
        if self.geometry is None:
            return np.asarray(self.data[::stride, ::stride], dtype=np.float32)
        from scipy.ndimage import map_coordinates

        rows = np.arange(0, self.shape[0], stride, dtype=np.float64)
        cols = np.arange(0, self.shape[1], stride, dtype=np.float64)
        grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
        where = self.geometry.to_preprocessed(grid)
        values = map_coordinates(
            np.asarray(self.data, np.float32), where.T, order=1, mode="nearest"
        )
        return values.reshape(len(rows), len(cols)).astype(np.float32)


@dataclass
class CaseResult:
    """Everything one case's virtual biopsy produced (see ``docs/interfaces.md``).

    >>> from VirtualBiopsyLib.inference.result import CaseResult  # doctest: +SKIP
    >>> result = pipeline.run(case)                                 # doctest: +SKIP
    >>> result.label, round(result.fused.mean, 2)                   # doctest: +SKIP
    ('malignant', 0.81)
    >>> result.write(Path("out"))                                   # doctest: +SKIP
    PosixPath('out/3f9c…_L')
    """

    key: str
    patient_id: str | None
    study_uid: str | None
    laterality: str | None
    model: ModelInfo
    inputs: dict[str, InputRecord]
    image_probabilities: dict[str, FoldStats]
    modality_probabilities: dict[str, FoldStats]
    fused: FoldStats
    threshold: float
    weights: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    pictures: dict[str, SlotPicture] = field(default_factory=dict)
    saliency: dict[str, SlotPicture] = field(default_factory=dict)
    source_dicom: dict[str, Path] = field(default_factory=dict)
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """'malignant' when the fused probability reaches the package threshold."""
        return "malignant" if self.fused.mean >= self.threshold else "benign"

    @property
    def missing(self) -> list[str]:
        return [slot for slot in SLOTS if self.inputs[slot].source is Source.MISSING]

    @property
    def synthetic_slots(self) -> list[str]:
        return [slot for slot in SLOTS if self.inputs[slot].source is Source.SYNTHETIC]

    def release_images(self) -> None:
        """Drop the pictures (after :meth:`write`), keeping the numbers; frees memory."""
        self.pictures = {}
        self.saliency = {}

    def all_warnings(self) -> list[str]:
        """The run's warnings plus the ones every demo-model result must carry."""
        extra = [DEMO_MODEL_WARNING, SYNTHETIC_NOTICE] if self.model.is_demo else []
        return extra + [w for w in self.warnings if w not in extra]

    def to_dict(self) -> dict[str, Any]:
        """The result.json content (format version ``RESULT_FORMAT_VERSION``)."""
        return {
            "format_version": RESULT_FORMAT_VERSION,
            "notice": RESEARCH_USE_NOTICE,
            "case": {
                "key": self.key,
                "patient_id": self.patient_id,
                "study_uid": self.study_uid,
                "laterality": self.laterality,
            },
            "model": self.model.to_dict(),
            "inputs": {slot: self.inputs[slot].to_dict() for slot in SLOTS},
            "probabilities": {
                "images": {s: p.to_dict() for s, p in self.image_probabilities.items()},
                "modalities": {m: p.to_dict() for m, p in self.modality_probabilities.items()},
                "fused": self.fused.to_dict(),
            },
            "weights": self.weights,
            "settings": dict(self.settings),
            "missing": self.missing,
            "label": self.label,
            "threshold": self.threshold,
            "outputs": dict(self.outputs),
            "warnings": self.all_warnings(),
            "software": {"name": "VirtualBiopsy", "version": __version__},
            "created": self.created,
        }

    def write(
        self,
        out_dir: Path,
        overwrite: bool = False,
        export_dicom: bool = False,
        report: bool = True,
    ) -> Path:
        """Write this case into ``out_dir/<key>/`` atomically and return that folder.

        Raises :class:`OutputExistsError` when the folder exists and ``overwrite`` is
        false, or when it exists but does not hold a result of ours (never deleted).
        """
        out_dir = Path(out_dir)
        final = out_dir / self.key
        _check_replaceable(final, overwrite)
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.key}.", suffix=".partial", dir=out_dir))
        try:
            self._write_contents(staging, export_dicom=export_dicom, report=report)
            apply_umask(staging)
            _swap_in(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    def _write_contents(self, folder: Path, export_dicom: bool, report: bool) -> None:
        """Every output file, then result.json listing them.

        The files are independent: the NRRD (and DICOM) files go to a writer thread while
        this thread draws the report (gzip, PNG encoding and resampling release the GIL;
        measured 1.2 → 0.7 s for a full-size case's six NRRD maps and report.png on 2
        cores). The report stays in the calling thread: drawn on a worker, matplotlib's
        many small allocations scattered that thread's heap and the process grew by
        ~100 MB over a few cases.
        """
        from VirtualBiopsyLib.inference.threads import output_writers

        pool = output_writers()
        futures = [
            (key, name, pool.submit(job))
            for key, name, job in self._file_jobs(folder, export_dicom)
        ]
        try:
            if report:
                from VirtualBiopsyLib.inference.report import render_report

                render_report(self, folder / REPORT_FILE)
        finally:
            wait([future for _, _, future in futures])  # none still writing if one failed
        self.outputs = {"report": REPORT_FILE} if report else {}
        for key, name, future in futures:
            future.result()
            self.outputs[key] = name
        write_json_atomic(self.to_dict(), folder / RESULT_FILE)

    def _file_jobs(
        self, folder: Path, export_dicom: bool
    ) -> list[tuple[str, str, Callable[[], object]]]:
        """(result.json key, file name, writer) of every image file."""
        from VirtualBiopsyLib.inference import nrrd_io

        jobs: list[tuple[str, str, Callable[[], object]]] = []
        for slot in self.synthetic_slots:
            name = f"synthetic_{slot}.nrrd"
            writer = partial(
                nrrd_io.write_picture,
                self.pictures[slot],
                folder / name,
                synthetic=True,
                description=self._what(slot),
            )
            jobs.append((f"synthetic_{slot}", name, writer))
        for slot, picture in self.saliency.items():
            name = f"saliency_{slot}.nrrd"
            writer = partial(
                nrrd_io.write_picture,
                picture,
                folder / name,
                synthetic=False,
                description=f"Grad-CAM saliency of {slot}, mean over folds",
                levels=nrrd_io.SALIENCY_LEVELS,
            )
            jobs.append((f"saliency_{slot}", name, writer))
        if export_dicom:
            for slot in self.synthetic_slots:
                name = f"synthetic_{slot}.dcm"
                writer = partial(self._export_dicom, slot, folder / name)
                jobs.append((f"synthetic_{slot}_dicom", name, writer))
        return jobs

    def _what(self, slot: str) -> str:
        source = self.inputs[slot].generated_from
        return f"SYNTHETIC {slot} generated by CycleGAN from {source}; not a real acquisition"

    def _export_dicom(self, slot: str, path: Path) -> None:
        from VirtualBiopsyLib.inference.dicom_export import export_synthetic_des

        generated_from = self.inputs[slot].generated_from
        export_synthetic_des(
            self.pictures[slot],
            path,
            slot=slot,
            source_dicom=self.source_dicom.get(generated_from or ""),
            patient_id=self.patient_id,
            study_uid=self.study_uid,
            laterality=self.laterality,
            model_name=f"{self.model.name} {self.model.version}",
            generated_from=generated_from,
        )


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
    """Write JSON through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2)
            stream.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def apply_umask(folder: Path) -> None:
    """Give a folder made by ``mkdtemp`` (0700, files 0600) the user's usual permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for child in folder.iterdir():
        if child.is_file():
            os.chmod(child, 0o666 & ~umask)


def _check_replaceable(final: Path, overwrite: bool) -> None:
    if not final.exists():
        return
    if not overwrite:
        raise OutputExistsError(f"{final}: output folder exists; use --overwrite to replace it")
    if not final.is_dir() or not (final / RESULT_FILE).is_file():
        raise OutputExistsError(
            f"{final}: exists and is not a VirtualBiopsy result folder; not replacing it"
        )


def _swap_in(staging: Path, final: Path) -> None:
    """Rename the filled staging folder into place, moving an old result aside first."""
    if not final.exists():
        os.replace(staging, final)
        return
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.replace(final, old)
    try:
        os.replace(staging, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def load_result(path: Path) -> dict[str, Any]:
    """Read a result.json (or the case folder holding one) as a dict."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_FILE
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)
