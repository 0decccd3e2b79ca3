"""A deterministic synthetic CESM cohort on disk, with its manifest.

The same seed gives byte-identical files and manifest: every random draw comes from
``numpy.random.default_rng([seed, patient])`` and every UID from
``generate_uid(entropy_srcs=[seed, …])``; no clock is read.

The cohort varies what real exams vary, by patient (see :func:`plan_cohort`): GE-style
and standard Image Type values, MONOCHROME1, compressed transfer syntaxes, files without
extension, studies of both breasts, patients without DES, late-phase and high-energy
acquisitions (the readers must skip high energy; late-phase rows are marked ``late``).
Each listed image of a breast with a lesion gets its truth lesion mask, on its own pixel
grid, under ``synthetic_lesion_masks/`` (:mod:`~VirtualBiopsyLib.phantom.masks`), named in
the manifest's ``lesion_mask`` column.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import date, timedelta
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from VirtualBiopsyLib import RESEARCH_USE_NOTICE, SYNTHETIC_NOTICE
from VirtualBiopsyLib.errors import OutputExistsError
from VirtualBiopsyLib.phantom.anatomy import PIXEL_SPACING_MM
from VirtualBiopsyLib.phantom.dicom_writer import DicomImageSpec, phantom_uid, write_dicom
from VirtualBiopsyLib.phantom.exam import RenderedBreast
from VirtualBiopsyLib.phantom.files import write_atomically
from VirtualBiopsyLib.phantom.masks import write_breast_lesion_mask
from VirtualBiopsyLib.phantom.plan import (  # plan_cohort and the plan type: also from here
    PatientPlan,
    plan_cohort,
    render_patient,
)
from VirtualBiopsyLib.roles import VIEWS, Modality, Slot, View
from VirtualBiopsyLib.training_manifest import (
    TRAINING_MANIFEST_NAME,
    BiopsyLabel,
    TrainingManifestRow,
    write_training_manifest,
)

MANIFEST_NAME = TRAINING_MANIFEST_NAME
README_NAME = "PHANTOM_README.txt"
LAYOUTS: tuple[str, ...] = ("dicom", "cdd-cesm")
SIZES: tuple[str, ...] = ("small", "full")


class _DicomExamWriter:
    """Writes one patient's study: series by energy and phase, one file per image."""

    SERIES = {
        ("LE", "early"): 1,
        ("DES", "early"): 2,
        ("HE", "early"): 3,
        ("LE", "late"): 4,
        ("DES", "late"): 5,
    }

    def __init__(
        self, out_dir: Path, plan: PatientPlan, seed: int, size: str, contrast_value3: bool = False
    ) -> None:
        self.out_dir, self.plan, self.seed, self.size = out_dir, plan, seed, size
        self.contrast_value3 = contrast_value3
        rng = np.random.default_rng([seed, plan.number, 0xD1C])
        self.study_uid = phantom_uid(seed, plan.number, "study")
        study_day = date(2023, 1, 2) + timedelta(days=int(rng.integers(0, 700)))
        self.study_date = study_day.strftime("%Y%m%d")
        self.start_minute = int(rng.integers(8 * 60, 16 * 60))
        self.windows = {
            "LE": (float(rng.uniform(2190, 2470)), float(rng.uniform(750, 900))),
            "DES": (float(rng.uniform(2085, 2105)), float(rng.uniform(265, 380))),
            "HE": (float(rng.uniform(2200, 2400)), float(rng.uniform(800, 1000))),
        }
        self.instances: dict[int, int] = {}
        self.file_count = 0

    def _time(self, minute_offset: float) -> str:
        seconds = int(round((self.start_minute + minute_offset) * 60))
        return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"

    def write(
        self,
        breast: RenderedBreast,
        view: View,
        energy: str,
        phase: str,
        image: np.ndarray,
        minute_offset: float,
    ) -> str:
        """Write one image; returns its path relative to the cohort folder."""
        series = self.SERIES[(energy, phase)]
        self.instances[series] = self.instances.get(series, 0) + 1
        self.file_count += 1
        center, width = self.windows[energy]
        spec = DicomImageSpec(
            patient_number=self.plan.number,
            study_uid=self.study_uid,
            series_uid=phantom_uid(self.seed, self.plan.number, "series", series),
            sop_uid=phantom_uid(self.seed, self.plan.number, "sop", self.file_count),
            frame_of_reference_uid=phantom_uid(self.seed, self.plan.number, "frame"),
            study_date=self.study_date,
            study_time=self._time(0),
            acquisition_time=self._time(minute_offset),
            series_number=series,
            instance_number=self.instances[series],
            laterality=breast.laterality,
            view=view,
            energy=energy,
            phase=phase,
            style=self.plan.style,
            photometric=self.plan.photometric,
            transfer_syntax=self.plan.transfer_syntax,
            window_center=center,
            window_width=width,
            spacing_mm=PIXEL_SPACING_MM[self.size],
            patient_age=self.plan.age,
            contrast_value3=self.contrast_value3,
        )
        relative = (
            f"dicom/PHANTOM-{self.plan.number:04d}/IM{self.file_count:04d}{self.plan.file_suffix}"
        )
        write_dicom(self.out_dir / relative, image, spec)
        return relative


@contextmanager
def _patient_map(workers: int, patients: int) -> Iterator[Callable[..., Iterator[Any]]]:
    """``map`` in patient order: this process's, or a pool of ``workers`` spawned ones."""
    workers = max(1, min(int(workers), patients))
    if workers == 1:
        yield map
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        yield partial(pool.map, chunksize=max(1, patients // (4 * workers)))


def _render_dicom_patient(
    out_dir: Path, seed: int, size: str, contrast_value3: bool, plan: PatientPlan
) -> list[TrainingManifestRow]:
    """Render one patient and write its study (a pool worker's whole task)."""
    breasts = render_patient(plan, seed, size)
    return _write_dicom_patient(out_dir, plan, seed, size, breasts, contrast_value3)


def _write_dicom_patient(
    out_dir: Path,
    plan: PatientPlan,
    seed: int,
    size: str,
    breasts: list[RenderedBreast],
    contrast_value3: bool = False,
) -> list[TrainingManifestRow]:
    writer = _DicomExamWriter(out_dir, plan, seed, size, contrast_value3)
    rows: list[TrainingManifestRow] = []

    def add(breast: RenderedBreast, view: View, modality: str, phase: str, path: str) -> None:
        rows.append(
            TrainingManifestRow(
                f"PHANTOM-{plan.number:04d}",
                writer.study_uid,
                breast.laterality.value,
                view,
                Modality(modality),
                out_dir / path,
                BiopsyLabel.from_text(breast.label),
                plan.acr_density,
                phase,
                synthetic=True,
                lesion_mask=write_breast_lesion_mask(out_dir, path, breast, view.value),
            )
        )

    for order, (breast, view) in enumerate((b, v) for b in breasts for v in VIEWS):
        minute = 2.0 + order
        slot_le, slot_des = Slot.of(Modality.LE, view), Slot.of(Modality.DES, view)
        add(
            breast,
            view,
            "LE",
            "early",
            writer.write(breast, view, "LE", "early", breast.images[slot_le], minute),
        )
        if plan.high_energy:
            writer.write(breast, view, "HE", "early", breast.high_energy[view.value], minute)
        if plan.has_des:
            add(
                breast,
                view,
                "DES",
                "early",
                writer.write(breast, view, "DES", "early", breast.images[slot_des], minute),
            )
    for breast in breasts:
        for slot, image in breast.late_images.items():
            modality, view = Slot(slot).modality.value, Slot(slot).view
            add(
                breast,
                view,
                modality,
                "late",
                writer.write(breast, view, modality, "late", image, 8.0 + len(rows)),
            )
    return rows


def _readme_text(patients: int, seed: int, size: str, layout: str) -> str:
    return (
        "VirtualBiopsy synthetic CESM cohort (phantom)\n\n"
        f"{SYNTHETIC_NOTICE}\n{RESEARCH_USE_NOTICE}\n\n"
        "Every image here was generated by a program; none shows a patient.\n"
        f"patients={patients} seed={seed} size={size} layout={layout}\n"
        "manifest.csv lists the images to use (label, ACR density, phase); "
        "high-energy images are not listed.\n"
    )


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to touch a non-empty folder unless it is an earlier phantom and overwrite is on."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        out_dir.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        raise OutputExistsError(
            f"{out_dir}: folder is not empty; pass --overwrite to replace an earlier phantom cohort"
        )
    if not (out_dir / README_NAME).is_file():
        raise OutputExistsError(
            f"{out_dir}: not empty and not a phantom cohort (no "
            f"{README_NAME}); refusing to overwrite it"
        )
    shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)


def generate_cohort(
    out_dir: Path | str,
    patients: int,
    seed: int,
    size: str = "small",
    layout: str = "dicom",
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    contrast_value3: bool = False,
    workers: int = 1,
) -> Path:
    """Write a synthetic cohort of ``patients`` patients and return the manifest path.

    ``contrast_value3`` writes POST_CONTRAST in Image Type value 3 of the standard-style
    files (DICOM CP-1342); off by default because the Debian ``dciodvfy`` rejects it.
    ``workers`` > 1 renders and writes the patients of the DICOM layout in that many
    processes (the same files: each patient's draws and UIDs depend on the seed and the
    patient only); starting them costs about a second, worth it for a cohort of
    hundreds of patients, not for a handful.

    >>> import tempfile
    >>> manifest = generate_cohort(Path(tempfile.mkdtemp()) / "cohort", patients=2, seed=0)
    >>> manifest.name, manifest.read_text().splitlines()[0].split(",")[:3]
    ('manifest.csv', ['patient_id', 'study_uid', 'laterality'])
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    plans = plan_cohort(patients, seed)
    rows: list[TrainingManifestRow] = []
    if layout == "dicom":
        write = partial(_render_dicom_patient, out_dir, seed, size, contrast_value3)
        with _patient_map(workers, len(plans)) as mapped:
            for done, patient_rows in enumerate(mapped(write, plans), start=1):
                rows.extend(patient_rows)
                if progress is not None:
                    progress(done, len(plans))
    else:
        from VirtualBiopsyLib.phantom.cdd_cesm import write_cdd_cesm_cohort

        rows = write_cdd_cesm_cohort(out_dir, plans, seed, size, progress)
    readme = _readme_text(patients, seed, size, layout)
    write_atomically(out_dir / README_NAME, lambda temp: temp.write_text(readme, "utf-8"))
    return write_training_manifest(out_dir / MANIFEST_NAME, rows)
