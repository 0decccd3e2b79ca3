"""Benchmark: read + preprocess full-size CESM DICOMs (2850×2396, 14-bit), two ways.

(a) project: ``readers.read_image`` (one look-up table for modality LUT, window and
    inversion) + ``preprocessing.preprocess`` (float32, block mean, no full-size padding);
(b) reference: a straightforward float64 chain — pydicom ``dcmread`` → ``pixel_array`` →
    ``apply_modality_lut`` → ``apply_voi_lut`` → ``np.pad`` with the background mean →
    ``skimage.transform.resize(anti_aliasing=True)`` → flip left breasts.

Each path runs in a fresh subprocess (so its peak RSS is its own); a warm-up image is read
first and not timed. Targets for (a) on one process: ≥ 10 images/s, peak RSS < 1 GB.
The two outputs must agree (mean absolute difference printed). The images are synthetic.

Usage (from the repository root)::

    .venv/bin/python Testing/benchmarks/bench_read_preprocess.py            # 8 images
    .venv/bin/python Testing/benchmarks/bench_read_preprocess.py --count 16 --source own
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

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
    time_each,
)

FULL_SHAPE = (2850, 2396)
WINDOW_CENTRE, WINDOW_WIDTH = 2200.0, 800.0  # an LE window as in CESM@UCBM (docs/dicom.md)
TARGET_IMAGES_PER_S = 10.0
TARGET_PEAK_RSS_MB = 1024.0
AGREEMENT_TOLERANCE = 0.02  # mean absolute difference of the [0, 1] outputs


# --------------------------------------------------------------------------- test images


def write_synthetic_dicom(path: Path, index: int, rng: np.random.Generator) -> None:
    """One full-size 14-bit LE CC 'For Presentation' mammogram, marked synthetic."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from VirtualBiopsyLib import SYNTHETIC_NOTICE

    laterality = "R" if index % 2 == 0 else "L"
    stored = _synthetic_breast(FULL_SHAPE, laterality, rng)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", "LOW_ENERGY"]
    ds.PatientName = "SYNTHETIC^BENCHMARK"
    ds.PatientID = f"SYNTHETIC-{index:04d}"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesDescription = "SYNTHETIC benchmark image"
    ds.ImageComments = SYNTHETIC_NOTICE[:10240]
    ds.ViewPosition = "CC"
    ds.ImageLaterality = laterality
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.Rows, ds.Columns = FULL_SHAPE
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 14, 13, 0
    ds.WindowCenter, ds.WindowWidth = WINDOW_CENTRE, WINDOW_WIDTH
    ds.VOILUTFunction = "LINEAR"
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = stored.tobytes()
    partial = path.with_name(path.name + ".partial")
    ds.save_as(partial, enforce_file_format=True)
    os.replace(partial, path)


def _synthetic_breast(shape: tuple[int, int], laterality: str, rng: np.random.Generator):
    """Half-ellipse breast on the chest-wall side, smooth tissue plus quantum noise."""
    height, width = shape
    rows = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    depth = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    if laterality == "R":
        depth = depth[:, ::-1]  # chest wall on the image's right
    radius = rows**2 + (depth / 0.75) ** 2
    tissue = 1900 + 500 * np.cos(7 * rows + 3 * depth) * np.sin(5 * depth)
    image = np.where(radius < 1, tissue, 300).astype(np.float32)
    image += rng.normal(0, 40, shape).astype(np.float32)
    return np.clip(image, 0, 2**14 - 1).astype(np.uint16)


def make_test_images(folder: Path, count: int, source: str) -> tuple[list[Path], str]:
    """Full-size DICOMs from the phantom when it can, else written here with pydicom."""
    if source in ("auto", "phantom"):
        try:
            from VirtualBiopsyLib.phantom import generate_cohort

            manifest = generate_cohort(
                folder / "phantom", patients=max(1, -(-count // 4)), seed=0, size="full"
            )
            paths = _manifest_paths(Path(manifest))[:count]
            if len(paths) >= count:
                return paths, "phantom (generate_cohort, size='full')"
        except (ImportError, TypeError, NotImplementedError) as error:
            if source == "phantom":
                raise
            print(f"phantom cohort not available ({error}); writing DICOMs with pydicom")
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"SYNTHETIC_bench_{index:03d}.dcm"
        write_synthetic_dicom(path, index, rng)
        paths.append(path)
    return paths, "pydicom (synthetic half-ellipse breasts)"


def _manifest_paths(manifest: Path) -> list[Path]:
    import csv

    with manifest.open(newline="") as handle:
        return [manifest.parent / row["path"] for row in csv.DictReader(handle)]


# --------------------------------------------------------------------------- the two paths


def project_path(size: int):
    """readers.read_image + preprocess, as the library runs them."""
    from VirtualBiopsyLib.images.preprocessing import PreprocessingParams, preprocess
    from VirtualBiopsyLib.images.readers import read_image

    params = PreprocessingParams(size=size)
    return lambda path: preprocess(read_image(path), params).array


def reference_path(size: int):
    """The textbook float64 chain with pydicom, numpy and scikit-image."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    from skimage.filters import threshold_otsu
    from skimage.transform import resize

    def run(path: Path) -> np.ndarray:
        ds = pydicom.dcmread(path)
        values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
        values = apply_voi_lut(values, ds).astype(np.float64)
        # pydicom windows into the stored range (after rescale), PS3.3 C.11.2.1.2
        slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        low, high = intercept, (2 ** int(ds.BitsStored) - 1) * slope + intercept
        values = np.clip((values - low) / (high - low), 0.0, 1.0)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            values = 1.0 - values
        background = values[values <= threshold_otsu(values)].mean()
        height, width = values.shape
        side = max(height, width)
        right = str(ds.get("ImageLaterality", "R")) == "R"
        pad_columns = (side - width, 0) if right else (0, side - width)
        padded = np.pad(values, ((0, side - height), pad_columns), constant_values=background)
        resized = resize(padded, (size, size), order=1, anti_aliasing=True, mode="edge")
        return resized if right else resized[:, ::-1]

    return run


PATHS = {"project": project_path, "reference": reference_path}


def worker(name: str, files: list[Path], size: int, out: Path) -> None:
    """Time one path over the files in this (fresh) process and print a JSON line."""
    start = time.perf_counter()
    run = PATHS[name](size)
    run(files[0])  # warm-up: imports and first-call costs, not timed
    startup_s = time.perf_counter() - start
    outputs = []
    durations = time_each(lambda path: outputs.append(run(path)), files)
    np.save(out, np.stack(outputs).astype(np.float32))
    emit(summarise(name, durations, peak_rss_mb=peak_rss_mb(), startup_s=startup_s))


# --------------------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=8, help="number of images (default 8)")
    parser.add_argument("--size", type=int, default=256, help="preprocessed size (default 256)")
    parser.add_argument("--source", choices=("auto", "phantom", "own"), default="auto")
    parser.add_argument("--worker", choices=tuple(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--files", type=Path, nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.files, args.size, args.out)
        return 0

    from VirtualBiopsyLib import SYNTHETIC_NOTICE

    with tempfile.TemporaryDirectory(prefix="vb-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        files, source = make_test_images(folder, args.count, args.source)
        print(f"{len(files)} images from {source} in {time.perf_counter() - start:.1f} s")
        rows, outputs = [], {}
        for name in PATHS:
            out = folder / f"{name}.npy"
            argv_worker = [__file__, "--worker", name, "--size", str(args.size), "--out", str(out)]
            rows.append(run_worker([*argv_worker, "--files", *map(str, files)]))
            outputs[name] = np.load(out)
    project, reference = rows
    project["speed_up"] = reference["mean_ms"] / project["mean_ms"]
    reference["speed_up"] = 1.0
    difference = np.abs(outputs["project"] - outputs["reference"]).mean(axis=(1, 2))

    print(f"\nread + preprocess, {len(files)} full-size images → {args.size}², one process")
    print(machine_line())
    print_table(
        rows,
        [
            ("name", "path", "{}"),
            ("items_per_s", "images/s", "{:.1f}"),
            ("mean_ms", "ms/image", "{:.1f}"),
            ("median_ms", "median ms", "{:.1f}"),
            ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
            ("startup_s", "start-up s", "{:.2f}"),
            ("speed_up", "speed-up", "{:.1f}×"),
        ],
    )
    print(
        f"\nagreement project vs reference: mean |Δ| {difference.mean():.4f} "
        f"(worst image {difference.max():.4f}) on [0, 1]"
    )
    met = [
        check_target("images/s", project["items_per_s"], TARGET_IMAGES_PER_S, True),
        check_target("peak RSS MB", project["peak_rss_mb"], TARGET_PEAK_RSS_MB, False),
        check_target("mean |Δ|", float(difference.max()), AGREEMENT_TOLERANCE, False),
    ]
    print(f"\n{SYNTHETIC_NOTICE}")
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
