"""Benchmark: one case's virtual biopsy, files on disk → result folder, two ways.

Configuration (the paper's): ResNet18 classifiers, 5 folds, 256² inputs, CycleGAN
generators with ngf 64 and 9 residual blocks; the case is a full-size (2850×2396) phantom
breast with LE CC and LE MLO on disk as DICOM, so both DES images are synthesized: 2
generator passes and 4 × 5 = 20 classifier passes with Grad-CAM, then result.json,
report.png, 2 synthetic DES and 4 saliency NRRDs. The weights are UNTRAINED (freshly
initialised): timing does not depend on what the weights are, and no figure here says
anything about classification.

(a) project: ``predict`` as it runs by default: models loaded once per run (the pipeline
    keeps them, batch norms folded), ``torch.inference_mode``, Grad-CAM differentiating
    only the classifier head, the case's model passes side by side on worker threads,
    output files written beside the report, float32 block-mean preprocessing, and
    ``--synthesis-precision auto`` (bfloat16 generators where the CPU computes bf16
    natively, float32 elsewhere; the row says which);
(a') the same with ``--synthesis-precision float32`` (classifiers are float32 in both);
(b) naive baseline, measured in the same run: the package (every weight file) loaded
    for every case, float64 preprocessing (pad, scikit-image resize with antialiasing),
    autograd over the whole network and a second forward pass for the probability, the
    same result writer.

Each path runs in a fresh subprocess (its own peak RSS); one warm-up case is run first
(its time is printed as *first case s*: imports, weight loading) and then ``--cases``
timed cases. Besides wall time per case, *CPU s/case* (user + system time of the worker)
says what a case costs whatever else runs on the machine: on a shared 2-core machine the
wall time can be several times the idle figure. Targets for (a) on CPU: ≤ 2.5 s per case,
peak RSS ≤ 1.5 GB.

Usage (from the repository root)::

    .venv/bin/python Testing/benchmarks/bench_predict.py [--cases 3] [--device cpu|cuda|all]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _common import (  # noqa: E402
    check_target,
    emit,
    machine_line,
    peak_rss_mb,
    print_table,
    run_worker,
    summarise,
)

TARGET_SECONDS = 2.5
PATHS = ("project", "project-fp32", "naive")
TARGET_PEAK_MB = 1536.0


# --------------------------------------------------------------------------- inputs


def prepare_inputs(root: Path) -> tuple[Path, list[Path]]:
    """An untrained paper-size package and the LE files of one full-size phantom breast."""
    from VirtualBiopsyLib.inference.fixtures import write_untrained_package
    from VirtualBiopsyLib.models.cyclegan import PAPER_GENERATOR
    from VirtualBiopsyLib.phantom import generate_cohort

    package = write_untrained_package(
        root / "package",
        architecture="resnet18",
        n_folds=5,
        image_size=256,
        generator=PAPER_GENERATOR,
    )
    manifest = generate_cohort(root / "cohort", patients=1, seed=11, size="full")
    with open(manifest, newline="") as stream:
        rows = [r for r in csv.DictReader(stream) if r["phase"] == "early"]
    first = (rows[0]["patient_id"], rows[0]["laterality"])
    le_files = [
        manifest.parent / r["path"]
        for r in rows
        if (r["patient_id"], r["laterality"]) == first and r["modality"] == "LE"
    ]
    return package, le_files


# --------------------------------------------------------------------------- paths


def project_case(
    package: Any, files: list[Path], out: Path, device: str, precision: str = "auto"
) -> Path:
    """What ``virtual-biopsy predict`` does per case (runner.predict_paths, package given)."""
    from VirtualBiopsyLib.inference.runner import predict_paths

    run = predict_paths(
        files, out, package=package, device=device, overwrite=True, synthesis_precision=precision
    )
    [folder] = run.folders
    return folder


def naive_case(package_dir: Path, files: list[Path], out: Path, device: str) -> Path:
    """The straightforward version: reload everything, float64, full autograd."""
    import torch

    from VirtualBiopsyLib import fusion
    from VirtualBiopsyLib.images.readers import read_image
    from VirtualBiopsyLib.inference.runner import gather_cases
    from VirtualBiopsyLib.models.package import load_package

    package = load_package(package_dir)  # every weight file read and hashed, every case
    [case] = gather_cases(files).cases
    arrays, displays, images = {}, {}, {}
    for slot, info in case.slots.items():
        if info is None:
            continue
        images[slot] = read_image(info)
        arrays[slot], displays[slot] = naive_preprocess(images[slot], 256)
    for view in ("CC", "MLO"):
        generator = package.load_generator(view, device)
        with torch.no_grad():
            tensor = torch.from_numpy(arrays[f"LE_{view}"]).float()[None, None].to(device)
            arrays[f"DES_{view}"] = generator(tensor)[0, 0].double().cpu().numpy()
        images[f"DES_{view}"] = images[f"LE_{view}"]
        displays[f"DES_{view}"] = naive_to_original(arrays[f"DES_{view}"], images[f"LE_{view}"])
    fold_probabilities: list[dict[str, float]] = []
    cams: dict[str, list[np.ndarray]] = {}
    for fold in range(len(package.folds)):
        probabilities = {}
        for slot, array in arrays.items():
            model = package.load_classifier(fold, slot, device)
            tensor = torch.from_numpy(array).float()[None, None].to(device)
            probabilities[slot] = float(model.probability(tensor)[0])
            cams.setdefault(slot, []).append(naive_grad_cam(model, tensor))
        fold_probabilities.append(probabilities)
    fusions = [
        fusion.fuse_case(p, fold.slot_mcc, fold.modality_mcc)
        for fold, p in zip(package.folds, fold_probabilities, strict=True)
    ]
    saliency = {
        slot: naive_to_original(np.mean(maps, axis=0), images[slot]) for slot, maps in cams.items()
    }
    from VirtualBiopsyLib.inference.output import write_case

    result = naive_result(package, case, fold_probabilities, fusions, displays, saliency, images)
    return write_case(result, out, overwrite=True)


def naive_result(
    package: Any,
    case: Any,
    fold_probabilities: list[dict[str, float]],
    fusions: list[Any],
    displays: dict[str, np.ndarray],
    saliency: dict[str, np.ndarray],
    images: dict[str, Any],
) -> Any:
    """The same result object (and so the same writer) as the project path."""
    from VirtualBiopsyLib.inference.pictures import SlotPicture
    from VirtualBiopsyLib.inference.result import CaseResult, FoldStats, InputRecord, ModelInfo
    from VirtualBiopsyLib.roles import Source

    def picture(slot: str, pixels: np.ndarray) -> SlotPicture:
        return SlotPicture(pixels.astype(np.float32), images[slot].spacing, images[slot].info.path)

    inputs = {
        slot: InputRecord(Source.REAL, str(images[slot].info.path)) for slot in ("LE_CC", "LE_MLO")
    }
    inputs.update(
        {f"DES_{v}": InputRecord(Source.SYNTHETIC, None, f"LE_{v}") for v in ("CC", "MLO")}
    )
    return CaseResult(
        key=case.key,
        patient_id=case.patient_id,
        study_uid=case.study_uid,
        laterality=case.laterality.value,
        inputs=inputs,
        model=ModelInfo(
            package.name, package.version, package.architecture, package.sha256, package.is_demo
        ),
        image_probabilities={
            s: FoldStats.from_folds([p[s] for p in fold_probabilities])
            for s in fold_probabilities[0]
        },
        modality_probabilities={
            m: FoldStats.from_folds([f.views[m].probability for f in fusions])
            for m in ("LE", "DES")
        },
        fused=FoldStats.from_folds([f.probability for f in fusions]),
        threshold=package.threshold,
        pictures={slot: picture(slot, pixels) for slot, pixels in displays.items()},
        saliency={slot: picture(slot, pixels) for slot, pixels in saliency.items()},
    )


def naive_to_original(map_2d: np.ndarray, image: Any) -> np.ndarray:
    """Undo flip, resize and padding with float64 scikit-image resampling."""
    from skimage.transform import resize

    rows, columns = image.pixels.shape
    if getattr(image.info.laterality, "value", "L") == "L":
        map_2d = map_2d[:, ::-1]
    side = max(rows, columns)
    return resize(np.asarray(map_2d, np.float64), (side, side), order=1)[:rows, :columns]


def naive_preprocess(image: Any, size: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 stretch, a materialised padded square, scikit-image resize; and the display."""
    from skimage.transform import resize

    pixels = image.pixels.astype(np.float64)
    low, high = np.percentile(pixels, (0.5, 99.5))
    pixels = np.clip((pixels - low) / max(high - low, 1e-9), 0.0, 1.0)
    side = max(pixels.shape)
    padded = np.zeros((side, side), np.float64)
    padded[: pixels.shape[0], : pixels.shape[1]] = pixels
    small = resize(padded, (size, size), order=1, anti_aliasing=True)
    flipped = getattr(image.info.laterality, "value", "L") == "L"
    return (small[:, ::-1].copy() if flipped else small), pixels


def naive_grad_cam(model: Any, tensor: Any) -> np.ndarray:
    import torch

    stored: dict[str, Any] = {}
    handle = model.cam_layer.register_forward_hook(
        lambda module, args, output: stored.__setitem__("a", output)
    )
    try:
        logits = model(tensor.clone().requires_grad_(True))
        stored["a"].retain_grad()
        model.zero_grad()
        logits[0, 1].backward()
    finally:
        handle.remove()
    weights = stored["a"].grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * stored["a"]).sum(dim=1))[0].detach()
    return (cam / cam.max().clamp_min(1e-12)).cpu().numpy().astype(np.float64)


# --------------------------------------------------------------------------- worker


def worker(path: str, device: str, cases: int, root: Path) -> None:
    import torch

    from VirtualBiopsyLib.models.package import load_package

    package_dir, files = root / "package", sorted((root / "le_files.txt").read_text().split())
    files = [Path(f) for f in files]
    out = root / f"out-{path}-{device}"
    started = time.perf_counter()
    if path.startswith("project"):
        package = load_package(package_dir)
        precision = "float32" if path.endswith("fp32") else "auto"

        def one_case() -> None:
            project_case(package, files, out, device, precision)
    else:

        def one_case() -> None:
            naive_case(package_dir, files, out, device)

    one_case()
    first = time.perf_counter() - started
    durations, cpu_seconds = [], []
    for _ in range(cases):
        if device == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), _cpu_time()
        one_case()
        if device == "cuda":
            torch.cuda.synchronize()
        durations.append(time.perf_counter() - start)
        cpu_seconds.append(_cpu_time() - cpu_start)
    emit(
        summarise(
            f"{path} ({device})",
            durations,
            first_s=first,
            cpu_s=sorted(cpu_seconds)[len(cpu_seconds) // 2],
            peak_rss_mb=peak_rss_mb(),
            threads=torch.get_num_threads(),
        )
    )


def _cpu_time() -> float:
    """User + system CPU seconds of this process: what a case costs, whatever the load."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- main


def main() -> int:
    from VirtualBiopsyLib.inference.threads import configure_cpu_threads

    configure_cpu_threads()  # workers inherit the environment
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3, help="timed cases per path")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "all"),
        default="all",
        help="all = CPU, and CUDA when available",
    )
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--on", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.on, args.cases, args.root)
        return 0
    return run_all(args)


def run_all(args: argparse.Namespace) -> int:
    import torch

    devices = ["cpu"] if args.device == "cpu" else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append("cuda")
    if args.device == "all":
        devices.insert(0, "cpu")
    root = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    try:
        package, files = prepare_inputs(root)
        (root / "le_files.txt").write_text("\n".join(str(f) for f in files))
        print(machine_line())
        print(
            f"case: {len(files)} full-size LE DICOMs (synthetic phantom) → 2 synthetic DES; "
            "ResNet18 × 5 folds, generator ngf 64 / 9 blocks, UNTRAINED weights "
            "(timing only)"
        )
        rows = []
        for device in devices:
            for path in PATHS:
                if path == "naive" and args.skip_naive:
                    continue
                argv = [
                    __file__,
                    "--worker",
                    path,
                    "--on",
                    device,
                    "--root",
                    str(root),
                    "--cases",
                    str(args.cases if path != "naive" else 1),
                ]
                rows.append(run_worker(argv, timeout_s=1200))
        _add_ratios(rows)
        print_table(
            rows,
            [
                ("name", "path", "{}"),
                ("count", "cases", "{:d}"),
                ("median_ms", "median ms/case", "{:.0f}"),
                ("max_ms", "max ms", "{:.0f}"),
                ("cpu_s", "CPU s/case", "{:.1f}"),
                ("first_s", "first case s", "{:.1f}"),
                ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
                ("speedup", "speed-up", "{:.1f}×"),
                ("memory_ratio", "RSS ratio", "{:.2f}"),
            ],
        )
        from VirtualBiopsyLib.inference.pipeline import resolve_synthesis_precision

        for device in devices:
            meaning = resolve_synthesis_precision("auto", torch.device(device))
            print(f"project ({device}): --synthesis-precision auto means {meaning} here")
        cpu = next(r for r in rows if r["name"] == "project (cpu)")
        met = check_target("s per case (CPU)", cpu["median_ms"] / 1000, TARGET_SECONDS, False)
        met &= check_target("peak RSS MB (CPU)", cpu["peak_rss_mb"], TARGET_PEAK_MB, False)
        return 0 if met else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    by_name = {row["name"]: row for row in rows}
    for row in rows:
        device = row["name"].split("(")[1].rstrip(")")
        naive = by_name.get(f"naive ({device})")
        if naive is not None:
            row["speedup"] = naive["median_ms"] / row["median_ms"]
            row["memory_ratio"] = row["peak_rss_mb"] / naive["peak_rss_mb"]


if __name__ == "__main__":
    sys.exit(main())
