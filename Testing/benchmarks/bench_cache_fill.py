"""Benchmark: fill the preprocessing cache from full-size DICOMs, in parallel vs one process.

A first training run on real data reads every image once (2,000 full-size images for
CESM@UCBM-sized sets) and stores it preprocessed (``Training.cache``). This script fills
an empty cache from the same files two ways, each in a fresh subprocess and a fresh cache
folder:

(a) baseline: ``PreprocessedCache(..., workers=1).fill`` — everything in one process;
(b) parallel: ``workers=N`` (default: one per CPU, at most ``Training.cache.MAX_WORKERS``)
    — spawned worker processes hash, decode, preprocess and write entries.

Both timings include everything a run pays (for (b): starting the workers). It prints
images/s, seconds, speed-up and checks that both caches hold identical arrays. Images are
synthetic (written by ``bench_read_preprocess.make_test_images``). Report only: the exit
status is 1 only when the two caches disagree.

Usage (from the repository root)::

    .venv/bin/python Testing/benchmarks/bench_cache_fill.py                 # 32 images
    .venv/bin/python Testing/benchmarks/bench_cache_fill.py --count 64 --workers 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _common import emit, machine_line, peak_rss_mb, print_table, run_worker  # noqa: E402


def worker(workers: int, files: list[Path], size: int, cache_dir: Path, out: Path) -> None:
    """Fill a fresh cache with ``workers`` processes; save the arrays; print a JSON line."""
    from Training.cache import PreprocessedCache
    from VirtualBiopsyLib.images.preprocessing import PreprocessingParams

    cache = PreprocessedCache(cache_dir, PreprocessingParams(size=size), progress=False)
    start = time.perf_counter()
    report = cache.fill(files, workers=workers)
    seconds = time.perf_counter() - start
    arrays = cache.load_many(files)  # now all hits
    np.save(out, np.stack([arrays[path] for path in files]).astype(np.float32))
    emit(
        {
            "name": f"{report.workers} process{'es' if report.workers > 1 else ''}",
            "workers": report.workers,
            "count": report.images,
            "built": report.built,
            "total_s": seconds,
            "items_per_s": report.images / seconds,
            "parent_peak_rss_mb": peak_rss_mb(),
        }
    )


def main() -> int:
    from bench_read_preprocess import make_test_images

    from Training.cache import MAX_WORKERS
    from Training.cpus import usable_cpus

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=32, help="full-size images (default 32)")
    parser.add_argument("--size", type=int, default=256, help="preprocessed side (paper: 256)")
    parser.add_argument("--workers", type=int, help="parallel processes (default: CPUs)")
    parser.add_argument("--source", choices=("own", "phantom", "auto"), default="own")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        workers, listing, cache_dir, out = args.worker
        files = [Path(line) for line in Path(listing).read_text().splitlines()]
        worker(int(workers), files, args.size, Path(cache_dir), Path(out))
        return 0

    parallel = args.workers or min(usable_cpus(), MAX_WORKERS)
    with tempfile.TemporaryDirectory(prefix="vb-bench-cache-") as temp:
        folder = Path(temp)
        (folder / "images").mkdir()
        files, source = make_test_images(folder / "images", args.count, args.source)
        listing = folder / "files.txt"
        listing.write_text("\n".join(str(path) for path in files))
        megabytes = sum(path.stat().st_size for path in files) / 2**20
        print(f"{len(files)} full-size images ({megabytes:.0f} MB) from {source}; {machine_line()}")
        rows, outputs = [], {}
        for count in (1, parallel):
            out = folder / f"out_{count}.npy"
            row = run_worker(
                [__file__, "--size", str(args.size), "--worker", str(count), str(listing),
                 str(folder / f"cache_{count}"), str(out)]
            )  # fmt: skip
            rows.append(row)
            outputs[count] = np.load(out)
        base = rows[0]["total_s"]
        for row in rows:
            row["speed_up"] = base / row["total_s"]
            row["ms_per_image"] = 1000 * row["total_s"] / row["count"]
        print_table(
            rows,
            [
                ("name", "path", "{}"),
                ("count", "images", "{:d}"),
                ("items_per_s", "images/s", "{:.1f}"),
                ("ms_per_image", "ms/image", "{:.1f}"),
                ("total_s", "total s", "{:.2f}"),
                ("parent_peak_rss_mb", "parent peak RSS MB", "{:.0f}"),
                ("speed_up", "speed-up", "{:.2f}×"),
            ],
        )
    identical = np.array_equal(outputs[1], outputs[parallel])
    print(f"caches identical (parallel vs one process): {'yes' if identical else 'NO'}")
    print("Figures are for synthetic images; they measure speed only.")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
