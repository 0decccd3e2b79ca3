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

One-shot section: what a Slicer user waits for, one whole ``python -m VirtualBiopsyLib
predict`` process per Run (interpreter start, imports, package verification, the case,
the files, the exit), ``--oneshot-runs`` times, alternating with the same command on the
code of ``--baseline-ref`` (a git commit: by default the one before single-case loading,
which loaded all 22 networks up front and hashed every weight file twice), extracted with
``git archive`` and run by the same interpreter. Both with ``--synthesis-precision auto``
and forced ``float32`` (so the float32 path is measured on a machine with bf16 hardware
too; the output says which one ``auto`` means here). Peak RSS is the process's own
``VmHWM``, read at its exit. Targets for the project's auto row: ≤ 2.5 s wall (median),
peak ≤ 1.0 GB.

Batch section: ``--batch`` distinct cases (default 50; full-size LE CC + LE MLO in the
Slicer hand-over form, one rendered exam hard-linked under 50 identities) in ONE
``predict`` process, which keeps its networks loaded because more than one case is
queued: cases per minute (process start included) and peak RSS, beside the baseline
commit over ``--batch-baseline`` cases (default 10: the old code also kept its networks
for a batch; its rate per case is what is compared).

Usage (from the repository root)::

    .venv/bin/python Testing/benchmarks/bench_predict.py [--cases 3] [--device cpu|cuda|all]
        [--sections warm,oneshot,batch] [--oneshot-runs 3] [--batch 50]
        [--batch-baseline 10] [--baseline-ref COMMIT]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _common import (  # noqa: E402
    CASE_COLUMNS,
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
ONESHOT_TARGET_SECONDS = 2.5
ONESHOT_TARGET_PEAK_MB = 1024.0
SECTIONS = ("warm", "oneshot", "batch")
REPO = Path(__file__).resolve().parents[2]
# The last commit before single-case loading (all 22 networks built up front, every
# weight file hashed twice): the one-shot and batch baseline.
BASELINE_REF = "766c18a397a848315a187b6f2a0e24f8e66195dd"
# Runs ``python -m VirtualBiopsyLib ARGS`` and writes the process's own peak RSS (VmHWM,
# which starts afresh at exec) and which library it ran to $BENCH_PEAK_FILE at exit,
# after every other exit handler (atexit runs handlers last-registered first).
LAUNCHER = """
import atexit, json, os, runpy, sys
def _record():
    peak = None
    try:
        with open("/proc/self/status") as status:
            peak = next(int(l.split()[1]) / 1024 for l in status if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    library = sys.modules.get("VirtualBiopsyLib")
    with open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        json.dump({"peak_mb": peak, "library": getattr(library, "__file__", None)}, out)
atexit.register(_record)
sys.argv = ["virtual-biopsy", *sys.argv[1:]]
runpy.run_module("VirtualBiopsyLib", run_name="__main__", alter_sys=True)
"""


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
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help="comma-separated: warm (in-process cases), oneshot (whole predict processes), "
        "batch (many cases in one process)",
    )
    parser.add_argument("--oneshot-runs", type=int, default=3, help="timed runs per command")
    parser.add_argument("--batch", type=int, default=50, help="cases in the batch process")
    parser.add_argument(
        "--batch-baseline", type=int, default=10, help="cases in the baseline's batch process"
    )
    parser.add_argument(
        "--baseline-ref",
        default=BASELINE_REF,
        help="git commit whose code is the one-shot and batch baseline ('' to skip it)",
    )
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--on", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.on, args.cases, args.root)
        return 0
    return run_all(args)


def run_all(args: argparse.Namespace) -> int:
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
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
        met = True
        if "warm" in sections:
            met &= warm_section(args, root)
        baseline = prepare_baseline(root, args.baseline_ref)
        if "oneshot" in sections:
            met &= oneshot_section(args, root, package, files, baseline)
        if "batch" in sections:
            batch_section(args, root, package, baseline)
        return 0 if met else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


def warm_section(args: argparse.Namespace, root: Path) -> bool:
    """Cases inside one worker process (models loaded per call), three code paths."""
    import torch

    devices = ["cpu"] if args.device == "cpu" else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append("cuda")
    if args.device == "all":
        devices.insert(0, "cpu")
    print("\n## warm cases (in one process, after a warm-up case)")
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
            *CASE_COLUMNS,
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
    return met


# --------------------------------------------------------------------------- processes


def prepare_baseline(root: Path, ref: str) -> Path | None:
    """The library as of commit ``ref``, extracted beside the inputs (None without git)."""
    if not ref:
        return None
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, "VirtualBiopsyLib"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        message = archive.stderr.decode(errors="replace").strip()
        print(f"baseline {ref[:12]} not available ({message}); baseline rows skipped")
        return None
    folder = root / "baseline"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def run_predict_process(arguments: list[str], code: Path, peak_file: Path) -> dict[str, Any]:
    """One whole ``python -m VirtualBiopsyLib ARGS`` process running the library in
    ``code``: wall seconds (start to exit), CPU seconds (user + system, from ``wait4``)
    and its own peak RSS."""
    env = dict(os.environ, PYTHONPATH=str(code), BENCH_PEAK_FILE=str(peak_file))
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, *arguments],
            cwd=code,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"predict process failed ({process.returncode}): {tail}")
    record = json.loads(peak_file.read_text())
    ran = Path(record["library"]).resolve().parent.parent
    if ran != code.resolve():
        raise RuntimeError(f"the process ran the library in {ran}, not {code}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "peak_mb": record["peak_mb"]}


def oneshot_section(
    args: argparse.Namespace,
    root: Path,
    package: Path,
    files: list[Path],
    baseline: Path | None,
) -> bool:
    """Whole ``predict`` processes, one case each: the project and the baseline commit."""
    import torch

    from VirtualBiopsyLib.inference.pipeline import native_bfloat16

    print("\n## one-shot predict process (what each Slicer Run waits for)")
    commands = {
        "project auto": (REPO, []),
        "project float32": (REPO, ["--synthesis-precision", "float32"]),
    }
    if baseline is not None:
        commands["baseline auto"] = (baseline, [])
        commands["baseline float32"] = (baseline, ["--synthesis-precision", "float32"])
    out = root / "out-oneshot"
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    for round_index in range(args.oneshot_runs + 1):  # round 0 warms the page cache
        for name, (code, extra) in commands.items():
            shutil.rmtree(out, ignore_errors=True)
            arguments = ["predict", *map(str, files), "--model", str(package)]
            arguments += ["--out", str(out), "--progress", "json", *extra]
            record = run_predict_process(arguments, code, root / "peak.json")
            if round_index:
                runs[name].append(record)
    rows = []
    for name, records in runs.items():
        walls = sorted(r["wall_s"] for r in records)
        rows.append(
            {
                "name": name,
                "count": len(records),
                "min_s": walls[0],
                "median_s": statistics.median(walls),
                "cpu_s": statistics.median(r["cpu_s"] for r in records),
                "peak_rss_mb": max(r["peak_mb"] for r in records),
            }
        )
    by_name = {row["name"]: row for row in rows}
    for row in rows:
        base = by_name.get(row["name"].replace("project", "baseline"))
        if base is not None and row is not base:
            row["speedup"] = base["median_s"] / row["median_s"]
            row["memory_ratio"] = row["peak_rss_mb"] / base["peak_rss_mb"]
    print_table(
        rows,
        [
            ("name", "process", "{}"),
            ("count", "runs", "{:d}"),
            ("min_s", "min wall s", "{:.2f}"),
            ("median_s", "median wall s", "{:.2f}"),
            ("cpu_s", "median CPU s", "{:.2f}"),
            ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
            ("speedup", "speed-up", "{:.2f}×"),
            ("memory_ratio", "RSS ratio", "{:.2f}"),
        ],
    )
    native = native_bfloat16(torch.device("cpu"))
    print(
        f"this CPU computes bfloat16 natively: {'yes' if native else 'no'}, so auto means "
        f"{'bfloat16' if native else 'float32'} synthesis here; the float32 rows force "
        "--synthesis-precision float32 (classifiers are float32 in every row)"
    )
    project = by_name["project auto"]
    met = check_target(
        "one-shot wall s (median)", project["median_s"], ONESHOT_TARGET_SECONDS, False
    )
    met &= check_target(
        "one-shot peak RSS MB", project["peak_rss_mb"], ONESHOT_TARGET_PEAK_MB, False
    )
    return met


def prepare_batch(root: Path, count: int) -> list[Path]:
    """``count`` distinct cases (own patient and study) sharing one full-size exam's files."""
    from VirtualBiopsyLib.inference.fixtures import write_slot_folder

    first = write_slot_folder(
        root / "batch" / "case000",
        ("LE_CC", "LE_MLO"),
        size="full",
        seed=5,
        patient_id="PHANTOM-B000",
        study_uid="1.2.826.0.1.3680043.8.498.7000",
    )
    folders = [first]
    for index in range(1, count):
        folder = root / "batch" / f"case{index:03d}"
        folder.mkdir(parents=True)
        for name in ("LE_CC.nrrd", "LE_MLO.nrrd"):
            os.link(first / name, folder / name)
        identity = {
            "patient_id": f"PHANTOM-B{index:03d}",
            "study_uid": f"1.2.826.0.1.3680043.8.498.{7000 + index}",
            "laterality": "L",
        }
        (folder / "case.json").write_text(json.dumps(identity))
        folders.append(folder)
    return folders


def batch_section(
    args: argparse.Namespace, root: Path, package: Path, baseline: Path | None
) -> None:
    """Many cases in one predict process: cases per minute and peak memory."""
    print(f"\n## batch: {args.batch} cases in one predict process")
    folders = prepare_batch(root, max(args.batch, args.batch_baseline))
    plans = [("project", REPO, args.batch)]
    if baseline is not None and args.batch_baseline > 0:
        plans.append(("baseline", baseline, args.batch_baseline))
    rows = []
    for name, code, count in plans:
        out = root / f"out-batch-{name}"
        arguments = ["predict", *map(str, folders[:count]), "--model", str(package)]
        arguments += ["--out", str(out), "--progress", "json"]
        record = run_predict_process(arguments, code, root / "peak.json")
        written = len(list(out.glob("*/result.json")))
        shutil.rmtree(out, ignore_errors=True)
        if written != count:
            raise RuntimeError(f"{name}: {written} of {count} cases written")
        rows.append(
            {
                "name": name,
                "count": count,
                "wall_s": record["wall_s"],
                "per_minute": 60 * count / record["wall_s"],
                "cpu_per_case": record["cpu_s"] / count,
                "peak_rss_mb": record["peak_mb"],
            }
        )
    print_table(
        rows,
        [
            ("name", "process", "{}"),
            ("count", "cases", "{:d}"),
            ("wall_s", "wall s", "{:.1f}"),
            ("per_minute", "cases/min", "{:.1f}"),
            ("cpu_per_case", "CPU s/case", "{:.2f}"),
            ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
        ],
    )
    print("(process start, package verification and network loading included; report only)")


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
