"""The preprocessing cache fills in parallel processes, with the same result as in-process."""

from __future__ import annotations

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
