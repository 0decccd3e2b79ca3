"""Predict many cases from files and folders: what ``virtual-biopsy predict`` runs.

Kept out of the command module so the demo, the benchmark and the Python console share
it: paths → scan → cases → one :class:`Pipeline` (models loaded once) → one folder per
case. Existing case folders are checked before any model work, so a forgotten
``--overwrite`` costs nothing. A case that cannot be classified does not stop the
others; it is listed in :attr:`PredictRun.failures`.

>>> from VirtualBiopsyLib.inference.runner import predict_paths
>>> run = predict_paths([Path("exam")], Path("out"))  # doctest: +SKIP
>>> [folder.name for folder in run.folders]            # doctest: +SKIP
['case-3f2a9c01b7-L']
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from VirtualBiopsyLib.errors import CaseError, ImageError, ImageReadError, OutputExistsError
from VirtualBiopsyLib.images.cases import Case, group_cases
from VirtualBiopsyLib.images.readers import scan
from VirtualBiopsyLib.inference.progress import NullProgress, ProgressReporter, ScaledProgress
from VirtualBiopsyLib.inference.result import RESULT_FILE, CaseResult
from VirtualBiopsyLib.models.package import ModelPackage, demo_package_path, load_package

log = logging.getLogger(__name__)


@dataclass
class GatheredCases:
    """The cases found under some paths and what was wrong with the other files."""

    cases: list[Case]
    errors: list[str] = field(default_factory=list)  # unreadable files: "path: reason"
    skipped: list[str] = field(default_factory=list)  # deliberately unused files


@dataclass
class PredictRun:
    """What a batch run produced: one result per classified case, and the failures."""

    results: list[CaseResult] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    gathered: GatheredCases | None = None

    @property
    def result_files(self) -> list[str]:
        return [str(folder / RESULT_FILE) for folder in self.folders]


def gather_cases(paths: Iterable[Path]) -> GatheredCases:
    """Scan files and folders and group the usable images into cases.

    Raises :class:`ImageReadError` when nothing usable is found, naming the paths.
    """
    paths = [Path(p) for p in paths]
    entries = scan(paths)
    errors = [f"{e.path}: {e.reason}" for e in entries if e.status == "error"]
    skipped = [f"{e.path}: {e.reason}" for e in entries if e.status == "skipped"]
    infos = [e.info for e in entries if e.status == "ok" and e.info is not None]
    if not infos:
        where = ", ".join(str(p) for p in paths)
        detail = "".join(f"\n  unreadable {line}" for line in errors[:5])
        detail += "".join(f"\n  skipped {line}" for line in skipped[:5])
        raise ImageReadError(where, f"no usable mammogram found{detail}")
    return GatheredCases(group_cases(infos), errors, skipped)


def resolve_package(model_dir: Path | None) -> ModelPackage:
    """The given model package, or the bundled demo package when none is given."""
    return load_package(model_dir if model_dir is not None else demo_package_path())


def check_outputs(cases: Sequence[Case], out_dir: Path, overwrite: bool) -> None:
    """Refuse early (before any model work) when a case folder exists and may not go."""
    if overwrite:
        return
    existing = [case.key for case in cases if (Path(out_dir) / case.key).exists()]
    if existing:
        raise OutputExistsError(
            f"{out_dir}: output exists for {', '.join(existing)}; use --overwrite to replace"
        )


def predict_cases(
    pipeline: object,
    cases: Sequence[Case],
    out_dir: Path,
    *,
    overwrite: bool = False,
    export_dicom: bool = False,
    progress: ProgressReporter | None = None,
    start: float = 0.0,
) -> PredictRun:
    """Run ``pipeline`` on each case and write each result; failures are collected.

    An unreadable image or an unclassifiable case becomes a failure line; a bad model or
    an output conflict stops the run (they would hit every case).
    """
    progress = progress or NullProgress()
    run = PredictRun()
    share = (1.0 - start) / max(1, len(cases))
    for index, case in enumerate(cases):
        case_progress = ScaledProgress(progress, start + index * share, start + (index + 1) * share)
        try:
            result = pipeline.run(case, case_progress)  # type: ignore[attr-defined]
        except (CaseError, ImageError) as error:
            run.failures.append(f"{case.key}: {error}")
            log.warning("case %s not classified: %s", case.key, error)
            continue
        case_progress.report("write", 1.0, f"{case.key}: writing results")
        folder = result.write(Path(out_dir), overwrite=overwrite, export_dicom=export_dicom)
        result.release_images()  # the numbers stay; the pictures are on disk now
        run.results.append(result)
        run.folders.append(folder)
        release_memory()
    return run


def release_memory() -> None:
    """Hand freed heap memory back to the system between cases (glibc only).

    Full-size images come and go with every case; without a trim the allocator keeps
    the freed pages and the process's resident size creeps up case after case.
    """
    import contextlib
    import ctypes

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
) -> PredictRun:
    """Everything ``virtual-biopsy predict`` does, as one call (see the module docstring)."""
    from VirtualBiopsyLib.inference.pipeline import Pipeline

    progress = progress or NullProgress()
    progress.report("scan", 0.0, "scanning inputs")
    gathered = gather_cases(paths)
    check_outputs(gathered.cases, out_dir, overwrite)
    progress.report("load", 0.02, "loading the model package")
    package = package if package is not None else resolve_package(model_dir)
    pipeline = Pipeline(
        package,
        device=device,
        synthesis=synthesis,
        saliency=saliency,
        synthesis_precision=synthesis_precision,
    )
    run = predict_cases(
        pipeline,
        gathered.cases,
        out_dir,
        overwrite=overwrite,
        export_dicom=export_dicom,
        progress=progress,
        start=0.05,
    )
    run.gathered = gathered
    return run
