"""NRRD read and written with pynrrd, checked against ITK (what Slicer reads them with)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the conventional alias): the independent reader

from VirtualBiopsyLib.images.nrrd_reader import read_nrrd_image
from VirtualBiopsyLib.inference.fixtures import write_slot_folder
from VirtualBiopsyLib.inference.output import (
    SALIENCY_LEVELS,
    SYNTHETIC_KEY,
    read_picture,
    write_picture,
)
from VirtualBiopsyLib.inference.pictures import SlotPicture
from VirtualBiopsyLib.nrrd_io import quantize

ROWS, COLUMNS = 40, 30


def _itk_reference(path: Path, three_d: bool) -> Path:
    """A source image as Slicer would hand it over: shifted, x axis flipped, 0.07 × 0.05 mm."""
    pixels = np.arange(ROWS * COLUMNS, dtype=np.float32).reshape(ROWS, COLUMNS)
    if three_d:
        image = sitk.GetImageFromArray(pixels[None])
        image.SetSpacing((0.05, 0.07, 1.0))
        image.SetOrigin((5.0, -7.0, 2.0))
        image.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    else:
        image = sitk.GetImageFromArray(pixels)
        image.SetSpacing((0.05, 0.07))
        image.SetOrigin((5.0, -7.0))
        image.SetDirection((-1, 0, 0, 1))
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("three_d", [False, True])
def test_itk_written_slot_file_is_read_with_its_spacing(tmp_path, three_d):
    path = _itk_reference(tmp_path / "LE_CC.nrrd", three_d)
    image = read_nrrd_image(path)
    assert image.pixels.shape == (ROWS, COLUMNS)
    assert image.pixels[1, 2] == COLUMNS + 2  # rows stay rows
    assert image.spacing == pytest.approx((0.07, 0.05))


@pytest.mark.parametrize("three_d", [False, True])
def test_output_sits_on_the_source_frame_for_itk(tmp_path, three_d):
    reference = _itk_reference(tmp_path / "LE_CC.nrrd", three_d)
    values = np.random.default_rng(0).random((ROWS, COLUMNS), dtype=np.float32)
    picture = SlotPicture(values, (0.07, 0.05), reference)
    path = write_picture(picture, tmp_path / "saliency_LE_CC.nrrd", False, levels=SALIENCY_LEVELS)
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == (COLUMNS, ROWS)
    assert image.GetSpacing() == pytest.approx((0.05, 0.07))
    assert image.GetOrigin() == pytest.approx((5.0, -7.0))
    assert image.GetDirection() == pytest.approx((-1, 0, 0, 1))
    assert image.GetMetaData(SYNTHETIC_KEY) == "false"
    expected = quantize(values, SALIENCY_LEVELS)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected)
    np.testing.assert_array_equal(values, picture.data)  # the caller's array is untouched
    pixels, spacing, header = read_picture(path)
    np.testing.assert_array_equal(pixels, expected)
    assert spacing == pytest.approx((0.07, 0.05))
    assert header[SYNTHETIC_KEY] == "false"


def test_output_without_an_nrrd_source_has_the_identity_frame(tmp_path):
    picture = SlotPicture(np.zeros((ROWS, COLUMNS), np.float32), (0.1, 0.1), tmp_path / "x.dcm")
    image = sitk.ReadImage(str(write_picture(picture, tmp_path / "synthetic_DES_CC.nrrd", True)))
    assert image.GetOrigin() == (0.0, 0.0)
    assert image.GetDirection() == (1.0, 0.0, 0.0, 1.0)
    assert image.GetMetaData(SYNTHETIC_KEY) == "true"


def test_predicting_from_nrrd_never_loads_simpleitk(tmp_path):
    """NRRD is read and written with pynrrd; SimpleITK's libraries would add ~90 MB."""
    folder = write_slot_folder(tmp_path / "exam", ["LE_CC", "DES_CC"], seed=3)
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from VirtualBiopsyLib.inference.runner import predict_paths
        run = predict_paths([Path({str(folder)!r})], Path({str(tmp_path / "out")!r}))
        assert run.folders and not run.failures, run.failures
        print("SimpleITK" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
