"""The phantom's lesion masks: on each written image's own grid, where its truth says.

A mask is only useful on the pixel array the library's reader returns for its image, so
every check reads the written file back with ``read_image``: the sizes match, the mask is
the phantom's truth, and DES (read from disk) is brighter inside it than in a ring around
it, which a flipped or shifted mask would not be.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from VirtualBiopsyLib import SYNTHETIC_NOTICE
from VirtualBiopsyLib.images.readers import read_image
from VirtualBiopsyLib.phantom import generate_cohort, render_breast
from VirtualBiopsyLib.phantom.cdd_cesm import ANNOTATIONS_NAME
from VirtualBiopsyLib.phantom.masks import (
    LESION_MASKS_FOLDER,
    breast_lesion_mask,
    lesion_mask_relative,
)
from VirtualBiopsyLib.phantom.plan import plan_cohort, render_patient
from VirtualBiopsyLib.phantom.segmentations import SEGMENTATIONS_NAME, VIA_COLUMNS
from VirtualBiopsyLib.training_manifest import read_training_manifest

PATIENTS, SEED = 8, 5


@pytest.fixture(scope="module", params=["dicom", "cdd-cesm"])
def cohort(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("masks") / request.param
    return generate_cohort(out, PATIENTS, SEED, layout=request.param).parent


def _truth(rows) -> dict[tuple[str, str, str], np.ndarray]:
    """The phantom's own truth mask per (patient number, laterality, view)."""
    truth = {}
    for plan in plan_cohort(PATIENTS, SEED):
        for breast in render_patient(plan, SEED, "small"):
            for view, mask in breast.lesion_masks.items():
                truth[(plan.number, breast.laterality.value, view)] = mask
    return truth


def _number(patient_id: str) -> int:
    return int("".join(ch for ch in patient_id if ch.isdigit()))


def test_every_image_has_its_truth_mask_on_the_readers_grid(cohort) -> None:
    rows = read_training_manifest(cohort / "manifest.csv").rows
    truth = _truth(rows)
    assert {row.phase for row in rows} >= {"early"} and all(row.lesion_mask for row in rows)
    for row in rows:
        pixels = read_image(row.path).pixels
        with Image.open(row.lesion_mask) as picture:
            assert picture.format == "PNG" and picture.mode == "L"
            mask = np.asarray(picture)
        assert mask.shape == pixels.shape, row.path
        assert set(np.unique(mask)) == {0, 255}
        expected = truth[(_number(row.patient_id), row.laterality, row.view.value)]
        np.testing.assert_array_equal(mask > 0, expected, err_msg=str(row.path))


def test_des_read_from_disk_is_brighter_inside_the_mask_than_around_it(cohort) -> None:
    rows = read_training_manifest(cohort / "manifest.csv").rows
    checked = Counter()
    for row in rows:
        if row.modality.value != "DES":
            continue
        pixels = read_image(row.path).pixels
        inside = np.asarray(Image.open(row.lesion_mask)) > 0
        ring = ndimage.binary_dilation(inside, iterations=6) & ~ndimage.binary_dilation(
            inside, iterations=2
        )
        checked[row.phase] += 1
        # malignant lesions enhance; a mask flipped or off the lesion shows no contrast
        if row.label.text == "malignant":
            assert pixels[inside].mean() > pixels[ring].mean() + 0.02, row.path
        mirrored = inside[:, ::-1]
        if row.label.text == "malignant" and not (mirrored & inside).any():
            assert pixels[inside].mean() > pixels[mirrored].mean(), row.path
    assert checked["early"] > 0
    if (cohort / "dicom").is_dir():
        assert checked["late"] > 0  # late-phase images have their masks too


def test_masks_are_marked_synthetic_and_mirror_the_image_paths(cohort) -> None:
    text = (cohort / "manifest.csv").read_text()
    for row in read_training_manifest(cohort / "manifest.csv").rows:
        relative = row.path.relative_to(cohort.resolve()).as_posix()
        assert row.lesion_mask == (cohort / lesion_mask_relative(relative)).resolve()
        assert lesion_mask_relative(relative) in text
        assert row.lesion_mask.name.endswith("_lesion_mask.png")
        with Image.open(row.lesion_mask) as picture:
            assert SYNTHETIC_NOTICE in picture.text["Comment"]
    assert LESION_MASKS_FOLDER.startswith("synthetic_")
    written = {p for p in (cohort / LESION_MASKS_FOLDER).rglob("*") if p.is_file()}
    listed = {row.lesion_mask for row in read_training_manifest(cohort / "manifest.csv").rows}
    assert {p.resolve() for p in written} == listed  # no mask without a manifest row


def test_a_breast_without_lesion_gets_no_mask() -> None:
    breast = render_breast(3, "benign", "b")
    assert breast_lesion_mask(breast, "CC") is not None
    breast.label = "normal"
    assert breast_lesion_mask(breast, "CC") is None


def test_mask_names_mirror_the_image_path() -> None:
    assert lesion_mask_relative("dicom/PHANTOM-0003/IM0005") == (
        "synthetic_lesion_masks/dicom/PHANTOM-0003/IM0005_lesion_mask.png"
    )
    assert lesion_mask_relative("Subtracted images of CDD-CESM/P3 _L_CM_MLO.jpg") == (
        "synthetic_lesion_masks/Subtracted images of CDD-CESM/P3 _L_CM_MLO_lesion_mask.png"
    )


def test_cdd_cesm_layout_writes_the_sets_via_segmentation_file(tmp_path) -> None:
    cohort = generate_cohort(tmp_path / "cdd", PATIENTS, SEED, layout="cdd-cesm").parent
    with open(cohort / SEGMENTATIONS_NAME, newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    assert tuple(lines[0]) == VIA_COLUMNS
    body = [dict(zip(VIA_COLUMNS, line, strict=True)) for line in lines[1:]]
    on_disk = {p.name: p for p in cohort.rglob("*.jpg")}
    assert {line["#filename"] for line in body} == set(on_disk)  # stray spaces as written
    assert any(" " in line["#filename"] for line in body)
    shapes = Counter()
    for line in body:
        assert int(line["file_size"]) == on_disk[line["#filename"]].stat().st_size
        shape = json.loads(line["region_shape_attributes"])
        shapes[shape["name"]] += 1
        assert int(line["region_id"]) < int(line["region_count"])
        if shape["name"] == "ellipse":
            assert abs(shape["theta"]) <= np.pi / 2
    assert set(shapes) == {"polygon", "polyline", "ellipse", "circle", "point"}, shapes
    per_image = Counter(line["#filename"] for line in body)
    assert max(per_image.values()) == 2  # a point beside an outline: two regions
    assert any("_DM_" in name for name in per_image) and any("_CM_" in name for name in per_image)
    assert (cohort / ANNOTATIONS_NAME).is_file()
