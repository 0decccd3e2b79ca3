"""``virtual-biopsy demo``: the whole product on synthetic data, in well under a minute.

It writes a small phantom cohort (synthetic DICOM exams), then runs the virtual biopsy
with the bundled demo model on two breasts: one exam with its real DES images, and one
given only its LE images, so the missing DES is synthesized by the CycleGAN generator and
shown as SYNTHETIC. It prints each result beside the phantom's own label and where the
reports are.

Output folder: ``./demo-output`` unless ``--out`` says otherwise. An existing, non-empty
folder is refused (exit 5) unless ``--overwrite`` is given *and* the folder holds an
earlier demo (a ``.virtual-biopsy-demo`` marker); anything else is never deleted.

Everything here is synthetic: the images, the model's training data and therefore the
numbers, which are not evidence of clinical performance.

Example::

    virtual-biopsy demo --out demo-output --overwrite
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from VirtualBiopsyLib import RESEARCH_USE_NOTICE, SYNTHETIC_NOTICE
from VirtualBiopsyLib.errors import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    CaseError,
    ModelPackageError,
    OutputExistsError,
)

if TYPE_CHECKING:
    from VirtualBiopsyLib.inference.progress import CommandReporter

DEFAULT_OUT = Path("demo-output")
MARKER = ".virtual-biopsy-demo"
DEMO_PATIENTS = 3
DEMO_SEED = 2026


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="run the virtual biopsy on a small synthetic cohort (phantom) with the demo model",
        description="Generate a synthetic CESM cohort and run predict on one exam with real "
        "DES and one with LE only (DES synthesized). " + SYNTHETIC_NOTICE,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"output folder (default: ./{DEFAULT_OUT})",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier demo output in --out"
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="DIR",
        help="model package (default: the bundled demo model)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help="phantom seed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, reporter: CommandReporter) -> int:
    """Run the demo; exit codes as ``predict`` (see ``VirtualBiopsyLib.errors``)."""
    try:
        ran = run_demo(
            args.out, args.overwrite, args.model, args.device, args.seed, sys.stdout, reporter
        )
    except ModelPackageError as error:
        raise ModelPackageError(f"{error} (build the demo model with `make demo-model`)") from error
    return EXIT_OK if ran else EXIT_BAD_INPUT


def run_demo(
    out: Path,
    overwrite: bool,
    model: Path | None,
    device: str,
    seed: int,
    stream: Any,
    reporter: CommandReporter | None = None,
) -> bool:
    """Generate the cohort, predict the two demo exams, print the story; True when all ran.

    >>> run_demo(Path("demo-output"), True, None, "cpu", 2026, sys.stdout)  # doctest: +SKIP
    """
    from VirtualBiopsyLib.inference.progress import ConsoleMessages
    from VirtualBiopsyLib.inference.runner import predict_paths
    from VirtualBiopsyLib.phantom import generate_cohort

    reporter = reporter or ConsoleMessages("virtual-biopsy demo")

    started = time.perf_counter()
    _prepare(out, overwrite)
    print(f"VirtualBiopsy demo. {SYNTHETIC_NOTICE}", file=stream)
    manifest = generate_cohort(out / "cohort", patients=DEMO_PATIENTS, seed=seed)
    with_des, le_only = choose_exams(manifest, lesion_aggressiveness(DEMO_PATIENTS, seed))
    print(f"Synthetic cohort: {manifest.parent} ({DEMO_PATIENTS} phantom patients)", file=stream)
    paths = [row_path(manifest, r) for r in with_des["rows"]]
    paths += [row_path(manifest, r) for r in le_only["rows"] if r["modality"] == "LE"]
    run = predict_paths(paths, out / "results", model, device=device)
    labels = {(e["patient_id"], e["laterality"]): e["label"] for e in (with_des, le_only)}
    _print_results(run, labels, stream)
    print(
        f"Finished in {time.perf_counter() - started:.1f} s. Reports: "
        f"{out / 'results'}/<case>/report.png",
        file=stream,
    )
    print(RESEARCH_USE_NOTICE, file=stream)
    for failure in run.failures:
        reporter.error(failure, context="case not classified")
    return not run.failures


def _prepare(out: Path, overwrite: bool) -> None:
    """Create ``out``; replace it only when it is an earlier demo and overwrite is on."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"{out}: folder exists and is not empty; use --overwrite "
                "to replace an earlier demo or --out for a new folder"
            )
        if not (out / MARKER).is_file():
            raise OutputExistsError(
                f"{out}: not an earlier demo output (no {MARKER}); refusing to delete it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("VirtualBiopsy demo output; safe to delete.\n", encoding="utf-8")


def lesion_aggressiveness(patients: int, seed: int) -> dict[tuple[str, str], float]:
    """The phantom's latent aggressiveness per breast (patient ID, laterality), re-rendered.

    The demo shows *typical* exams: the most aggressive malignant lesion with its real DES
    and the least aggressive benign one from LE only. A demo is an illustration, not an
    evaluation: how the model does on all phantom patients is what
    ``virtual-biopsy-train phantom-check`` measures.
    """
    from VirtualBiopsyLib.phantom.plan import plan_cohort, render_patient

    return {
        (f"PHANTOM-{plan.number:04d}", breast.laterality.value): breast.lesion.aggressiveness
        for plan in plan_cohort(patients, seed)
        for breast in render_patient(plan, seed, "small")
    }


def choose_exams(
    manifest: Path, aggressiveness: dict[tuple[str, str], float] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A breast with all four images (the most aggressive malignant one if any, see
    :func:`lesion_aggressiveness`) and another breast for LE only (the least aggressive
    of the other label when there is one)."""
    with open(manifest, newline="", encoding="utf-8") as stream:
        rows = [r for r in csv.DictReader(stream) if r.get("phase", "early") == "early"]
    breasts: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        breasts[(row["patient_id"], row["study_uid"], row["laterality"])].append(row)
    exams = [
        {
            "patient_id": key[0],
            "laterality": key[2],
            "label": members[0]["label"],
            "rows": members,
            "slots": {(r["modality"], r["view"]) for r in members},
        }
        for key, members in breasts.items()
    ]
    complete = [e for e in exams if len(e["slots"]) == 4]
    if not complete:
        raise CaseError(f"{manifest}: no complete exam in the demo cohort")

    def score(exam: dict[str, Any]) -> float:
        return (aggressiveness or {}).get((exam["patient_id"], exam["laterality"]), 0.5)

    malignant = [e for e in complete if e["label"] == "malignant"]
    with_des = max(malignant, key=score) if malignant else complete[0]
    others = [e for e in exams if e is not with_des and {("LE", "CC"), ("LE", "MLO")} <= e["slots"]]
    contrast = [e for e in others if e["label"] != with_des["label"]]
    le_only = min(contrast, key=score) if contrast else others[0]
    return with_des, le_only


def row_path(manifest: Path, row: dict[str, str]) -> Path:
    return manifest.parent / row["path"]


def _print_results(run: Any, labels: dict[tuple[str, str], str], stream: Any) -> None:
    if any(result.model.is_demo for result in run.results):
        print("DEMO MODEL: trained on synthetic phantom data only.", file=stream)
    for result, folder in zip(run.results, run.folders, strict=True):
        truth = labels.get((result.patient_id or "", result.laterality or ""), "?")
        synthetic = result.synthetic_slots
        kind = ("LE only; SYNTHETIC " + ", ".join(synthetic)) if synthetic else "real LE and DES"
        print(f"\n{result.key} ({kind})", file=stream)
        print(
            f"  virtual biopsy: {result.label.upper()}  p(malignant) = "
            f"{result.fused.mean:.3f} ± {result.fused.sem:.3f} (SE over "
            f"{len(result.fused.folds)} folds)",
            file=stream,
        )
        print(f"  phantom label:  {truth} (synthetic ground truth)", file=stream)
        print(f"  report:         {folder / 'report.png'}", file=stream)
