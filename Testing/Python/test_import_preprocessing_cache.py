"""The preprocessing cache fills in parallel processes, with the same result as in-process."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from Training.cache import PreprocessedCache
from VirtualBiopsyLib.errors import ImageReadError
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams
from VirtualBiopsyLib.phantom import generate_cohort
from VirtualBiopsyLib.training_manifest import read_training_manifest


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    manifest = generate_cohort(tmp_path_factory.mktemp("cache") / "cohort", patients=3, seed=2)
    return [row.path for row in read_training_manifest(manifest).rows]


def test_parallel_fill_gives_the_arrays_of_the_in_process_path(images, tmp_path) -> None:
    params = PreprocessingParams(size=32)
    serial = PreprocessedCache(tmp_path / "serial", params, workers=1, progress=False)
    parallel = PreprocessedCache(tmp_path / "parallel", params, workers=2, progress=False)
    expected = serial.load_many(images)
    got = parallel.load_many(images)
    assert parallel.last_fill.workers == 2 and serial.last_fill.workers == 1
    assert (parallel.last_fill.built, parallel.last_fill.reused) == (len(images), 0)
    for path in images:
        np.testing.assert_array_equal(got[path], expected[path])
        np.testing.assert_array_equal(got[path], parallel.load(path))  # what a hit returns
    again = parallel.fill(images)
    assert (again.built, again.reused) == (0, len(images))
    assert again.images_per_s > 0


def test_a_bad_file_is_named_after_the_others_are_built(images, tmp_path) -> None:
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a DICOM file")
    cache = PreprocessedCache(tmp_path / "c", PreprocessingParams(size=32), workers=2)
    with pytest.raises(ImageReadError, match=r"broken\.dcm"):
        cache.fill([broken, *images], progress=False)
    assert cache.last_fill.built == len(images)
    assert all(cache.entry_path(cache.key(path)).is_file() for path in images)


def test_progress_bar_reports_images_per_second(images, tmp_path, capsys) -> None:
    cache = PreprocessedCache(tmp_path / "c", PreprocessingParams(size=32), workers=1)
    report = cache.fill(images, progress=True)
    err = capsys.readouterr().err
    assert "preprocessing images" in err and f"{report.images_per_s:.1f} images/s" in err
    assert f"preprocessed {len(images)} images ({len(images)} built" in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_as_an_image_is_refused_at_once_not_waited_on(tmp_path) -> None:
    """Keying an image hashes its bytes: a FIFO's plain open would wait for a writer forever
    (a training run hung), so it is refused by name as the scans refuse it."""
    fifo = tmp_path / "IM0001.dcm"
    os.mkfifo(fifo)
    cache = PreprocessedCache(tmp_path / "cache", PreprocessingParams(size=32))
    signal.alarm(20)
    try:
        with pytest.raises(ImageReadError, match="not a regular file") as refused:
            cache.key(fifo)
    finally:
        signal.alarm(0)
    assert str(fifo) in str(refused.value)
