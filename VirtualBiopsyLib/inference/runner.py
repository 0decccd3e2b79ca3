"""Predict many cases from files and folders: what ``virtual-biopsy predict`` runs.

Kept out of the command module so the demo, the benchmark, the Slicer worker and the
Python console share it: paths → scan → cases → one :class:`Pipeline` (models loaded
once) → one folder per case through the output layer
(:class:`~VirtualBiopsyLib.inference.output.OutputFolder`).

Before any model work the output folder is checked and claimed (stale partial folders
of killed runs are removed), and cases whose folder exists already are kept: a plain
rerun finishes what an interrupted run left undone, and only ``--overwrite`` replaces a
finished case. When every case is finished already the run refuses
(:class:`OutputExistsError`), having computed nothing. A case that cannot be classified
or written does not stop the others; it is listed in :attr:`PredictRun.failures`. The
output folder's own files are never read as inputs, even when it lies inside an input
folder.

>>> from VirtualBiopsyLib.inference.runner import predict_paths
>>> run = predict_paths([Path("exam")], Path("out"))  # doctest: +SKIP
>>> [folder.name for folder in run.folders]            # doctest: +SKIP
['case-3f2a9c01b7-L']
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from VirtualBiopsyLib.errors import (
    CaseError,
    ImageError,
    ImageReadError,
    OutputExistsError,
    error_message,
)
from VirtualBiopsyLib.images.cases import Case, group_cases
from VirtualBiopsyLib.images.readers import ScanEntry, scan
from VirtualBiopsyLib.inference.output import OutputFolder, check_writable
from VirtualBiopsyLib.inference.progress import NullProgress, ProgressReporter, ScaledProgress
from VirtualBiopsyLib.inference.result import RESULT_FILE, CaseResult
from VirtualBiopsyLib.models.package import ModelPackage, demo_package_path, load_package

if TYPE_CHECKING:
    from VirtualBiopsyLib.inference.pipeline import Pipeline

log = logging.getLogger(__name__)


class CasePredictor(Protocol):
    """What :func:`predict_cases` needs: a :class:`~VirtualBiopsyLib.inference.pipeline.
    Pipeline`, or a stand-in in tests."""

    def run(self, case: Case, progress: ProgressReporter | None = None) -> CaseResult: ...


@dataclass
class GatheredCases:
    """The cases found under some paths and what was wrong with the other files."""

    cases: list[Case]
    errors: list[str] = field(default_factory=list)  # unreadable files: "path: reason"
    skipped: list[str] = field(default_factory=list)  # deliberately unused files


@dataclass
class PredictRun:
    """What a batch run produced: one result per classified case, and the rest."""

    results: list[CaseResult] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # cases not classified: "key: why"
    conflicts: list[str] = field(default_factory=list)  # cases another run wrote meanwhile
    kept: list[str] = field(default_factory=list)  # keys of finished cases left as they were
    cleared: list[Path] = field(default_factory=list)  # stale partial folders removed
    gathered: GatheredCases | None = None

    @property
    def result_files(self) -> list[str]:
        return [str(folder / RESULT_FILE) for folder in self.folders]


def gather_cases(paths: Iterable[Path], *, exclude: Path | None = None) -> GatheredCases:
    """Scan files and folders and group the usable images into cases.

    ``exclude``: the run's own output folder. When it lies inside an input folder
    (``predict exam/ --out exam/results``) its files (our synthetic DES among them) are
    left out, so a rerun never reads its own outputs as a new case; one ``skipped`` line
    says so. Raises :class:`ImageReadError` when nothing usable is found, naming the paths.
    """
    paths = [Path(p) for p in paths]
    entries, left_out = _outside(scan(paths), exclude)
    errors = [f"{e.path}: {e.reason}" for e in entries if e.status == "error"]
    skipped = [f"{e.path}: {e.reason}" for e in entries if e.status == "skipped"]
    if left_out:
        skipped.append(f"{exclude}: this run's output folder; {left_out} file(s) not read")
    infos = [e.info for e in entries if e.status == "ok" and e.info is not None]
    if not infos:
        where = ", ".join(str(p) for p in paths)
        detail = "".join(f"\n  unreadable {line}" for line in errors[:5])
        detail += "".join(f"\n  skipped {line}" for line in skipped[:5])
        raise ImageReadError(where, f"no usable mammogram found{detail}")
    return GatheredCases(group_cases(infos), errors, skipped)


def _outside(entries: list[ScanEntry], folder: Path | None) -> tuple[list[ScanEntry], int]:
    """The entries not under ``folder`` (links resolved on both sides), and how many were.

    ``os.path.realpath``, not ``Path.resolve``: a link loop among hostile inputs is that
    file's error entry, never an exception here.
    """
    if folder is None:
        return entries, 0
    root = Path(os.path.realpath(folder))
    kept = [e for e in entries if not Path(os.path.realpath(e.path)).is_relative_to(root)]
    return kept, len(entries) - len(kept)


def resolve_package(model_dir: Path | None) -> ModelPackage:
    """The given model package, or the bundled demo package when none is given."""
    return load_package(model_dir if model_dir is not None else demo_package_path())


def cases_to_write(cases: Sequence[Case], output: OutputFolder) -> tuple[list[Case], list[str]]:
    """(cases to compute, keys kept as they are). Without overwrite a finished case is
    kept; :class:`OutputExistsError` when that leaves nothing to do."""
    if output.overwrite:
        return list(cases), []
    kept = output.finished(case.key for case in cases)
    if kept and len(kept) == len(cases):
        raise OutputExistsError(
            f"{output.folder}: output exists for {', '.join(kept)}; use --overwrite to replace"
        )
    return [case for case in cases if case.key not in kept], kept


def predict_cases(
    pipeline: CasePredictor,
    cases: Sequence[Case],
    output: OutputFolder,
    *,
    export_dicom: bool = False,
    progress: ProgressReporter | None = None,
    start: float = 0.0,
) -> PredictRun:
    """Run ``pipeline`` on each case and write each result; failures are collected.

    An unreadable image or an unclassifiable case becomes a failure line, and so does a
    case whose folder cannot be written (a full disk, an export that fails: its partial
    folder is removed, the next cases are still written); a case folder another run
    finished meanwhile is a conflict; a bad model stops the run (it would hit every case).
    """
    progress = progress or NullProgress()
    run = PredictRun()
    share = (1.0 - start) / max(1, len(cases))
    for index, case in enumerate(cases):
        case_progress = ScaledProgress(progress, start + index * share, start + (index + 1) * share)
        try:
            result = pipeline.run(case, case_progress)
        except (CaseError, ImageError) as error:
            run.failures.append(f"{case.key}: {error}")
            log.warning("case %s not classified: %s", case.key, error)
            continue
        case_progress.report("write", 1.0, f"{case.key}: writing results")
        try:
            folder = output.write_case(result, export_dicom=export_dicom)
        except OutputExistsError as error:
            run.conflicts.append(str(error))
            continue
        except Exception as error:  # noqa: BLE001 (this case's failure; the others go on)
            run.failures.append(f"{case.key}: classified but not written: {error_message(error)}")
            log.warning("case %s not written: %s", case.key, type(error).__name__)
            log.debug("case %s not written", case.key, exc_info=True)
            continue
        # the numbers stay; the pictures are on disk now and leave memory
        run.results.append(_without_pictures(result))
        run.folders.append(folder)
        del result
        release_memory()
    return run


def _without_pictures(result: CaseResult) -> CaseResult:
    from dataclasses import replace

    return replace(result, pictures={}, saliency={})


def release_memory() -> None:
    """Hand freed heap memory back to the system between cases (glibc only).

    Full-size images come and go with every case; without a trim the allocator keeps
    the freed pages and the process's resident size creeps up case after case.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def predict_paths(
    paths: Iterable[Path],
    out_dir: Path,
    model_dir: Path | None = None,
    *,
    device: str = "cpu",
    synthesis: bool = True,
    saliency: bool = True,
    export_dicom: bool = False,
    overwrite: bool = False,
    progress: ProgressReporter | None = None,
    package: ModelPackage | None = None,
    synthesis_precision: str = "auto",
    pipeline: CasePredictor | None = None,
    keep_models: bool | None = None,
) -> PredictRun:
    """Everything ``virtual-biopsy predict`` does, as one call (see the module docstring).

    ``pipeline``: an open pipeline to run the cases with (the persistent worker's, whose
    models stay loaded between requests); the model options are then the pipeline's own
    and it stays open. Without it a pipeline is made for this call and closed after it,
    keeping its networks loaded (``keep_models``) as the work needs: None keeps them
    when more than one case is to be computed, and loads each per pass and frees it for
    a single case (the same numbers either way).
    """
    progress = progress or NullProgress()
    check_writable(out_dir)
    progress.report("scan", 0.0, "scanning inputs")
    gathered = gather_cases(paths, exclude=out_dir)
    with OutputFolder(out_dir, overwrite=overwrite) as output:
        todo, kept = cases_to_write(gathered.cases, output)
        if pipeline is None:
            progress.report("load", 0.02, "loading the model package")
            pipeline_class, package = _pipeline_and_package(package, model_dir)
            pipeline = pipeline_class(
                package,
                device=device,
                synthesis=synthesis,
                saliency=saliency,
                synthesis_precision=synthesis_precision,
                keep_models=len(todo) > 1 if keep_models is None else keep_models,
            )
            owned: contextlib.AbstractContextManager = pipeline  # closed after this call
        else:
            owned = contextlib.nullcontext()
        with owned:
            run = predict_cases(
                pipeline,
                todo,
                output,
                export_dicom=export_dicom,
                progress=progress,
                start=0.05,
            )
        run.cleared = list(output.cleared)
    run.kept = kept
    run.gathered = gathered
    return run


def _pipeline_and_package(
    package: ModelPackage | None, model_dir: Path | None
) -> tuple[type[Pipeline], ModelPackage]:
    """The pipeline class and the verified package, side by side: the pipeline's import
    (torch: the largest part of a one-case run's start) runs while other threads hash
    the weight files (hashlib works outside the GIL)."""
    if package is not None:
        from VirtualBiopsyLib.inference.pipeline import Pipeline

        return Pipeline, package
    with ThreadPoolExecutor(1, thread_name_prefix="virtual-biopsy-load") as pool:
        loading = pool.submit(resolve_package, model_dir)
        from VirtualBiopsyLib.inference.pipeline import Pipeline

        return Pipeline, loading.result()
