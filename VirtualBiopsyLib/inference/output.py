"""The output layer: a case's results as files, one folder per case, written atomically.

Every front end writes results through here (``predict``, ``demo``, the Slicer worker,
the benchmark, the console): :func:`write_case` for one case, :class:`OutputFolder` for
a run of many. A case folder ``<out>/<case key>/`` holds ``result.json`` (its schema is
``schemas/result.schema.json``), ``report.png``, ``synthetic_<slot>.nrrd`` and
``saliency_<slot>.nrrd`` (and ``synthetic_<slot>.dcm`` with DICOM export). Only a DES
this run generated is written as ``synthetic_<slot>``: a synthetic image given as input
is listed as such in ``result.json`` but not written again (:func:`generated_slots`).

Safety of the output folder (issue 10):

* the folder is checked before any model work (:func:`check_writable`): a file in the
  way, a parent that is a file, a folder that cannot be written → an error naming it;
* each case is filled in a hidden ``.<key>.<token>.<random>.partial`` folder and renamed
  into place *without replacing* anything (``renameat2(RENAME_NOREPLACE)``), so a second
  run writing the same case at the same time refuses instead of replacing a finished
  case; ``--overwrite`` swaps an earlier result (only a folder holding ``result.json``);
* a run holds an ``flock`` on ``.virtual-biopsy-run-<token>.lock`` while it runs; the
  next run deletes partial folders whose lock nobody holds (a run killed by ``kill -9``)
  and never touches those of a live run (:class:`VirtualBiopsyLib.atomic_io.StagingArea`).

>>> write_case(result, Path("out"))  # doctest: +SKIP
PosixPath('out/case-3f2a9c01b7-L')
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path

import numpy as np

from VirtualBiopsyLib import RESEARCH_USE_NOTICE
from VirtualBiopsyLib.atomic_io import StagingArea, write_json_atomic
from VirtualBiopsyLib.errors import OutputExistsError, OutputNotWritableError
from VirtualBiopsyLib.images.nrrd_reader import SYNTHETIC_KEY  # written here, read there
from VirtualBiopsyLib.inference.pictures import SlotPicture
from VirtualBiopsyLib.inference.result import RESULT_FILE, CaseResult
from VirtualBiopsyLib.nrrd_io import NrrdGrid, quantize, read_nrrd, reference_grid, write_nrrd
from VirtualBiopsyLib.roles import Slot

REPORT_FILE = "report.png"
DESCRIPTION_KEY = "VirtualBiopsy_Description"
NOTICE_KEY = "VirtualBiopsy_Notice"
SALIENCY_LEVELS = 256  # saliency maps: 8 bits are plenty for an overlay
IMAGE_LEVELS = 4096  # synthetic DES: 12 bits, as the DICOM export
# One writer thread beside the calling thread, which draws the report and then takes
# files from the same queue: at most two full-size maps are in memory at once (two
# writer threads beside the report peaked ~60 MB higher), and on 2 cores a full-size
# case's six NRRD maps and report.png take ≈ 0.25 s instead of the writer's ≈ 0.4 s
# alone (gzip, PNG encoding and resampling release the GIL).
OUTPUT_WRITERS = 1


def synthetic_file(slot: str) -> str:
    return f"synthetic_{slot}.nrrd"


def saliency_file(slot: str) -> str:
    return f"saliency_{slot}.nrrd"


def synthetic_dicom_file(slot: str) -> str:
    return f"synthetic_{slot}.dcm"


# --- pictures as NRRD ---------------------------------------------------------------------


def write_picture(
    picture: SlotPicture,
    path: Path,
    synthetic: bool,
    description: str = "",
    levels: int | None = IMAGE_LEVELS,
    frame: NrrdGrid | None = None,
) -> Path:
    """Write ``picture`` as NRRD on its source's grid, marked synthetic when it is.

    Spacing is the picture's; origin and direction are ``frame``'s, by default the
    picture's source NRRD's (so a map dropped into Slicer sits on its mammogram), else
    the identity. ``levels``: round values in [0, 1] to that many steps first (None: as
    is).

    >>> import numpy as np, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> picture = SlotPicture(np.zeros((4, 3), np.float32), (0.1, 0.1))
    >>> write_picture(picture, folder / "synthetic_DES_CC.nrrd", synthetic=True).name
    'synthetic_DES_CC.nrrd'
    """
    pixels = np.ascontiguousarray(picture.pixels, dtype=np.float32)
    if levels is not None:
        computed_here = picture.geometry is not None  # a lazy map, drawn just now
        pixels = quantize(pixels, levels, in_place=computed_here)
    keys = {SYNTHETIC_KEY: "true" if synthetic else "false", NOTICE_KEY: RESEARCH_USE_NOTICE}
    if description:
        keys[DESCRIPTION_KEY] = description
    if frame is None:
        frame = reference_grid(picture.reference_path, pixels.shape)
    if frame is not None:
        return write_nrrd(
            path, pixels, picture.spacing, origin=frame.origin, direction=frame.direction, keys=keys
        )
    return write_nrrd(path, pixels, picture.spacing, keys=keys)


def read_picture(path: Path) -> tuple[np.ndarray, tuple[float, float], dict[str, str]]:
    """Pixels, (row_mm, column_mm) spacing and our header keys of an NRRD we wrote."""
    pixels, grid, keys = read_nrrd(path)
    ours = {key: value for key, value in keys.items() if key.startswith("VirtualBiopsy_")}
    return pixels, grid.spacing, ours


# --- the output folder --------------------------------------------------------------------


def check_writable(folder: Path | str) -> None:
    """Refuse an output folder that cannot work, before anything is computed or created.

    :class:`OutputExistsError` when ``folder`` is an existing file;
    :class:`OutputNotWritableError` when a parent is a file or the folder (or the
    nearest existing parent) cannot be written. The real proof is writing the run's
    lock file (:meth:`OutputFolder.open`); this check needs no side effect.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{folder}: exists and is not a folder; choose another output")
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise OutputNotWritableError(existing, f"is a file, so {folder} cannot be made in it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputNotWritableError(existing, "folder is not writable")


def is_result_folder(folder: Path) -> bool:
    """Whether ``folder`` is a case folder of ours (it holds ``result.json``)."""
    return folder.is_dir() and (folder / RESULT_FILE).is_file()


class OutputFolder:
    """A run's output folder: checked, claimed (stale partial folders of dead runs
    cleared), and written case by case. Use as a context manager; :meth:`close` frees
    the writer thread and the claim, and removes the folder again if this run created
    it and wrote nothing into it.

    >>> with OutputFolder(Path("out")) as output:         # doctest: +SKIP
    ...     folder = output.write_case(result)
    """

    def __init__(self, folder: Path | str, *, overwrite: bool = False) -> None:
        self.folder = Path(folder)
        self.overwrite = overwrite
        self._area = StagingArea(self.folder)
        self._writers: ThreadPoolExecutor | None = None
        self._created = False

    @property
    def cleared(self) -> list[Path]:
        """Stale partial folders (of runs that died) removed when this run started."""
        return self._area.cleared

    def open(self) -> OutputFolder:
        check_writable(self.folder)
        self._created = not self.folder.exists()
        try:
            self._area.open()
        except OSError as error:
            raise OutputNotWritableError(
                error.filename or self.folder, f"cannot write here ({error.strerror or error})"
            ) from error
        self._writers = ThreadPoolExecutor(OUTPUT_WRITERS, "virtual-biopsy-out")
        return self

    def close(self) -> None:
        if self._writers is not None:
            self._writers.shutdown(wait=True)
            self._writers = None
        self._area.close()
        if self._created and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def __enter__(self) -> OutputFolder:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def finished(self, keys: Iterable[str]) -> list[str]:
        """The keys among ``keys`` whose case folder exists already."""
        return [key for key in keys if os.path.lexists(self.folder / key)]

    def write_case(
        self, result: CaseResult, *, export_dicom: bool = False, report: bool = True
    ) -> Path:
        """Write ``result`` into ``<folder>/<key>/`` and return that folder.

        Raises :class:`OutputExistsError` when the folder exists and overwrite is off,
        when it appeared meanwhile (another run wrote it), or when it exists but is not
        a result of ours (never deleted, overwrite or not).
        """
        if self._writers is None:
            raise RuntimeError("OutputFolder.write_case() before open()")
        final = self.folder / result.key
        if os.path.lexists(final):
            if not self.overwrite:
                raise OutputExistsError(
                    f"{final}: output folder exists; use --overwrite to replace it"
                )
            if not is_result_folder(final):
                raise OutputExistsError(
                    f"{final}: exists and is not a VirtualBiopsy result folder; not replacing it"
                )
        staging = self._area.stage(result.key)
        try:
            self._write_contents(result, staging, export_dicom=export_dicom, report=report)
            try:
                return self._area.publish(staging, result.key, replace=self.overwrite)
            except FileExistsError:
                raise OutputExistsError(
                    f"{final}: written by another run meanwhile; not replacing it "
                    "(use --overwrite to replace it)"
                ) from None
        finally:
            if staging.exists():
                self._area.discard(staging)

    def _write_contents(
        self, result: CaseResult, folder: Path, *, export_dicom: bool, report: bool
    ) -> None:
        """Every image file, then result.json listing them: the writer thread takes files
        from the queue while this thread draws the report, and this thread takes the
        rest after it (see :data:`OUTPUT_WRITERS`)."""
        assert self._writers is not None
        jobs = _file_jobs(result, folder, export_dicom)
        queue = _FileQueue([job for _, _, job in jobs])
        helper = self._writers.submit(queue.drain)
        try:
            if report:
                from VirtualBiopsyLib.inference.report import render_report

                render_report(result, folder / REPORT_FILE)
            queue.drain()
        except BaseException:
            queue.cancel()  # the writer stops after its current file
            raise
        finally:
            wait([helper])  # none still writing when this returns or raises
        queue.raise_first_error()
        outputs = {"report": REPORT_FILE} if report else {}
        outputs.update({key: name for key, name, _ in jobs})
        written = dataclasses.replace(result, outputs=outputs)
        write_json_atomic(folder / RESULT_FILE, written.to_dict())


class _FileQueue:
    """A case's file writers, taken in order by whichever thread is free; the first
    failure (in queue order) is raised once all threads are done."""

    def __init__(self, jobs: list[Callable[[], object]]) -> None:
        self._jobs = list(enumerate(jobs))
        self._lock = threading.Lock()
        self._errors: dict[int, BaseException] = {}

    def drain(self) -> None:
        while True:
            with self._lock:
                if not self._jobs or self._errors:
                    return
                index, job = self._jobs.pop(0)
            try:
                job()
            except BaseException as error:  # noqa: BLE001 (raised by raise_first_error)
                with self._lock:
                    self._errors[index] = error

    def cancel(self) -> None:
        with self._lock:
            self._jobs.clear()

    def raise_first_error(self) -> None:
        if self._errors:
            raise self._errors[min(self._errors)]


def write_case(
    result: CaseResult,
    out_dir: Path | str,
    *,
    overwrite: bool = False,
    export_dicom: bool = False,
    report: bool = True,
) -> Path:
    """Write one case into ``out_dir/<key>/`` atomically and return that folder (the
    rules of :meth:`OutputFolder.write_case`)."""
    with OutputFolder(out_dir, overwrite=overwrite) as output:
        return output.write_case(result, export_dicom=export_dicom, report=report)


def generated_slots(result: CaseResult) -> list[Slot]:
    """The synthetic slots this run generated (from an LE), the only ones written as
    ``synthetic_<slot>`` files.

    A synthetic image given as input (e.g. an earlier run's ``synthetic_DES_CC.nrrd``) is
    also ``synthetic`` in ``result.json`` and on the report, but it is the user's file,
    not ours: only its preview is in memory, and writing it again would claim we made it.
    """
    return [slot for slot in result.synthetic_slots if result.inputs[slot].generated_from]


def _file_jobs(
    result: CaseResult, folder: Path, export_dicom: bool
) -> list[tuple[str, str, Callable[[], object]]]:
    """(result.json key, file name, writer) of every image file of a case."""
    frames: dict[Path | None, NrrdGrid | None] = {}  # each source header read once per case

    def frame(picture: SlotPicture) -> NrrdGrid | None:
        if picture.reference_path not in frames:
            frames[picture.reference_path] = reference_grid(picture.reference_path, picture.shape)
        return frames[picture.reference_path]

    jobs: list[tuple[str, str, Callable[[], object]]] = []
    for slot in generated_slots(result):
        picture = result.pictures[slot]
        source = result.inputs[slot].generated_from
        description = (
            f"SYNTHETIC {slot} generated by CycleGAN from {source}; not a real acquisition"
        )
        writer = partial(
            write_picture,
            picture,
            folder / synthetic_file(slot),
            synthetic=True,
            description=description,
            frame=frame(picture),
        )
        jobs.append((f"synthetic_{slot}", synthetic_file(slot), writer))
    for slot, picture in result.saliency.items():
        writer = partial(
            write_picture,
            picture,
            folder / saliency_file(slot),
            synthetic=False,
            description=f"Grad-CAM saliency of {slot}, mean over folds",
            levels=SALIENCY_LEVELS,
            frame=frame(picture),
        )
        jobs.append((f"saliency_{slot}", saliency_file(slot), writer))
    if export_dicom:
        for slot in generated_slots(result):
            name = synthetic_dicom_file(slot)
            jobs.append(
                (
                    f"synthetic_{slot}_dicom",
                    name,
                    partial(_export_dicom, result, slot, folder / name),
                )
            )
    return jobs


def _export_dicom(result: CaseResult, slot: str, path: Path) -> None:
    from VirtualBiopsyLib.inference.dicom_export import export_synthetic_des

    generated_from = result.inputs[slot].generated_from
    export_synthetic_des(
        result.pictures[slot],
        path,
        slot=slot,
        source_dicom=result.source_dicom.get(generated_from or ""),
        patient_id=result.patient_id,
        study_uid=result.study_uid,
        laterality=result.laterality,
        model_name=f"{result.model.name} {result.model.version}",
        generated_from=generated_from,
    )
