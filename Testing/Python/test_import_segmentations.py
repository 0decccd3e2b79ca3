"""`import cdd-cesm` draws the set's hand-drawn segmentations (a VIA CSV) into lesion masks.

Each shape is drawn where VIA puts it (pixel centres at ``x + 0.5``; ``theta`` clockwise on
screen); every region that cannot be drawn is listed with its reason; the masks folder is
replaced only when it is an earlier import's own.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from openpyxl import Workbook
from PIL import Image

from Training.importers.cdd_cesm import import_cdd_cesm
from Training.importers.masks import MASKS_INDEX, Region, draw_mask, lesion_masks_folder_for
from Training.importers.segmentations import RegionError, find_segmentations, parse_region
from Training.importers.summary import summary_path_for, write_import
from VirtualBiopsyLib.errors import OutputExistsError
from VirtualBiopsyLib.phantom.cdd_cesm import ANNOTATION_COLUMNS
from VirtualBiopsyLib.phantom.segmentations import SEGMENTATIONS_NAME, VIA_COLUMNS
from VirtualBiopsyLib.training_manifest import LESION_MASK_COLUMN, read_training_manifest

LOW, SUB = "Low energy images of CDD-CESM", "Subtracted images of CDD-CESM"
ROWS, COLUMNS = 24, 16  # every test image: 24 rows × 16 columns
PATIENT_TOKEN = re.compile(r"(?<![0-9A-Za-z])P\d+(?![0-9A-Za-z])")
IMAGES = {  # relative path → label of its sheet row
    f"{LOW}/P1_L_DM_CC.jpg": "Malignant",
    f"{SUB}/P1_L_CM_CC.jpg": "Malignant",
    f"{LOW}/P2_R_DM_CC.jpg": "Benign",
    f"{SUB}/P2_R_CM_CC .jpg": "Benign",  # a stray space, as in the real set
    f"{LOW}/P3_L_DM_CC.jpg": "Normal",
    f"{LOW}/P4_L_DM_CC.jpg": "Benign",  # conflicting labels: the breast is left out
    f"{SUB}/P4_L_CM_CC.jpg": "Malignant",
}


def _shape(**attributes: object) -> str:
    return json.dumps(attributes)


SQUARE = _shape(name="polygon", all_points_x=[2, 6, 6, 2], all_points_y=[3, 3, 8, 8])
LINE = _shape(name="polyline", all_points_x=[1, 9, 9, 1], all_points_y=[1, 1, 5, 5])
REGIONS = [  # (#filename, region_shape_attributes)
    ("P1_L_DM_CC.jpg", SQUARE),
    ("P1_L_DM_CC.jpg", _shape(name="point", cx=4, cy=5)),
    ("P1_L_CM_CC.jpg", _shape(name="rect", x=1, y=1, width=3, height=2)),
    ("P1_L_CM_CC.jpg", _shape(name="circle", cx=10, cy=15, r=2)),
    ("P2_R_CM_CC .jpg", _shape(name="ellipse", cx=8, cy=12, rx=5, ry=2, theta=0.5)),
    ("P2_R_DM_CC.jpg", LINE),
    ("P2_R_DM_CC.jpg", '{"name": "polygon", "all_points_x": [1, 2'),  # malformed JSON
    ("P2_R_DM_CC.jpg", _shape(name="cuboid", x=1)),
    ("P2_R_DM_CC.jpg", _shape(name="circle", cx="a", cy=2, r=1)),
    ("P2_R_DM_CC.jpg", _shape(name="circle", cx=3, cy=2)),
    ("P2_R_DM_CC.jpg", _shape(name="circle", cx=100, cy=100, r=3)),
    ("P6_L_DM_MLO.jpg", SQUARE),
    ("scout.jpg", SQUARE),
    ("P4_L_DM_CC.jpg", SQUARE),
    ("P3_L_DM_CC.jpg", "{}"),  # listed without regions
]  # fmt: skip
EXPECTED_REGIONS_LEFT_OUT = {
    ("segmentations row 3", "point marks no area"),
    ("segmentations row 8", "malformed JSON"),
    ("segmentations row 9", "unknown shape"),
    ("segmentations row 10", "non-numeric or missing coordinates"),
    ("segmentations row 11", "non-numeric or missing coordinates"),
    ("segmentations row 12", "region entirely outside the image"),
    ("segmentations row 13", "file name not matching any image"),
    ("segmentations row 14", "file name not a CDD-CESM image"),
    ("segmentations row 15", "image not in the manifest"),
}


def _write_set(folder: Path, name: str = SEGMENTATIONS_NAME) -> Path:
    for relative in IMAGES:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((ROWS, COLUMNS), 90, np.uint8)).save(folder / relative)
    workbook = Workbook()
    workbook.active.title = "all"
    workbook.active.append(list(ANNOTATION_COLUMNS))
    for relative, label in IMAGES.items():
        image = Path(relative).stem.replace(" ", "")
        patient, side, code, view = image.split("_")
        kind = "DM" if code == "DM" else "CESM"
        workbook.active.append([image, int(patient[1:]), side, kind, 50, 2, 4, "", view, "", "",
                                label])  # fmt: skip
    workbook.save(folder / "Radiology manual annotations.xlsx")
    if name:
        _write_via(folder / name, REGIONS)
    return folder


def _write_via(path: Path, regions: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(VIA_COLUMNS)
        for file_name, shape in regions:
            count = sum(1 for other, _ in regions if other == file_name)
            count = 0 if shape == "{}" else count
            writer.writerow([file_name, 1000, "{}", count, 0, shape, "{}"])


@pytest.fixture()
def cdd_set(tmp_path) -> Path:
    return _write_set(tmp_path / "CDD-CESM")


def _masks(manifest: Path) -> dict[str, np.ndarray]:
    return {
        row.path.name: np.asarray(Image.open(row.lesion_mask))
        for row in read_training_manifest(manifest).rows
        if row.lesion_mask is not None
    }


def test_every_region_of_an_image_is_drawn_into_one_mask_on_its_grid(cdd_set, tmp_path):
    out = tmp_path / "imports" / "cdd.csv"
    summary = write_import(import_cdd_cesm(cdd_set), out)
    masks = _masks(out)
    assert set(masks) == {"P1_L_DM_CC.jpg", "P1_L_CM_CC.jpg", "P2_R_DM_CC.jpg", "P2_R_CM_CC .jpg"}
    assert all(mask.shape == (ROWS, COLUMNS) for mask in masks.values())
    square = np.zeros((ROWS, COLUMNS), np.uint8)
    square[3:8, 2:6] = 255  # x 2..6, y 3..8: the pixels whose centres lie inside
    np.testing.assert_array_equal(masks["P1_L_DM_CC.jpg"], square)
    two = masks["P1_L_CM_CC.jpg"] > 0  # a rectangle and a circle: one mask
    assert two[1:3, 1:4].all() and two[15, 10] and two.sum() == 6 + 12
    assert all(row.parent == lesion_masks_folder_for(out) for row in _mask_paths(out))
    lesion = summary["lesion_masks"]
    assert lesion["images_per_modality"] == {"LE": 2, "DES": 2}
    assert lesion["regions_by_shape"] == dict.fromkeys(
        ("polygon", "rect", "circle", "ellipse", "polyline"), 1
    )
    assert lesion["source"] == SEGMENTATIONS_NAME and lesion["folder"] == "cdd.lesion_masks"
    left = {(item["item"], item["reason"]) for item in lesion["regions_left_out"]}
    assert left == EXPECTED_REGIONS_LEFT_OUT
    assert summary["notes"] == {"image listed in the segmentations without regions (no mask)": 1}
    assert summary["left_out_count"] == 2  # P4's two images: conflicting labels, as before


def _mask_paths(manifest: Path) -> list[Path]:
    return [r.lesion_mask for r in read_training_manifest(manifest).rows if r.lesion_mask]


def test_without_a_segmentation_file_no_masks_and_the_summary_says_so(tmp_path, capsys):
    from Training.cli import main

    folder = _write_set(tmp_path / "CDD-CESM", name="")
    out = tmp_path / "cdd.csv"
    assert main(["import", "cdd-cesm", str(folder), "--out", str(out)]) == 0
    assert LESION_MASK_COLUMN not in out.read_text()  # the manifest keeps its ten columns
    assert not lesion_masks_folder_for(out).exists()
    assert f"lesion masks: none (no {SEGMENTATIONS_NAME} found" in capsys.readouterr().out
    summary = json.loads(summary_path_for(out).read_text())
    assert summary["lesion_masks"]["images_per_modality"] == {}


def test_segmentations_given_elsewhere_or_named_loosely_are_found(tmp_path) -> None:
    folder = _write_set(tmp_path / "CDD-CESM", name="radiology hand drawn segmentations V2.csv")
    assert find_segmentations(folder).name == "radiology hand drawn segmentations V2.csv"
    (folder / "radiology hand drawn segmentations V2.csv").unlink()
    for version in (9, 10, 3):  # without the expected v2: the highest version, not text order
        _write_via(folder / f"Radiology_hand_drawn_segmentations_v{version}.csv", [])
    assert find_segmentations(folder).name == "Radiology_hand_drawn_segmentations_v10.csv"
    elsewhere = tmp_path / "regions.csv"
    _write_via(elsewhere, [("P1_L_DM_CC.jpg", SQUARE)])
    result = import_cdd_cesm(folder, segmentations=elsewhere)
    assert [p.name for p in result.mask_drawings] == ["P1_L_DM_CC.jpg"]
    assert result.settings["segmentations"] == "regions.csv"


def test_console_lists_left_out_regions_without_patient_ids(cdd_set, tmp_path, capsys):
    from Training.cli import main

    assert main(["import", "cdd-cesm", str(cdd_set), "--out", str(tmp_path / "c.csv")]) == 0
    printed = capsys.readouterr().out
    assert (
        "lesion masks (images): LE 2, DES 2 (Radiology_hand_drawn_segmentations_v2.csv" in printed
    )
    assert "lesion regions left out: 9 (" in printed
    assert "segmentations row 14: file name not a CDD-CESM image (scout.jpg)" in printed
    assert not PATIENT_TOKEN.search(printed), printed


def test_masks_folder_is_replaced_only_when_it_is_an_earlier_imports_own(cdd_set, tmp_path):
    out = tmp_path / "cdd.csv"
    write_import(import_cdd_cesm(cdd_set), out)
    folder = lesion_masks_folder_for(out)
    assert (folder / MASKS_INDEX).is_file()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_import(import_cdd_cesm(cdd_set), out)
    write_import(import_cdd_cesm(cdd_set), out, overwrite=True)  # its own: replaced
    (folder / "my_notes.txt").write_text("mine")  # a user's file put in it
    with pytest.raises(OutputExistsError, match="not an earlier import's lesion masks"):
        write_import(import_cdd_cesm(cdd_set), out, overwrite=True)
    assert (folder / "my_notes.txt").read_text() == "mine"
    (folder / "my_notes.txt").unlink()
    (cdd_set / SEGMENTATIONS_NAME).unlink()  # no masks now: the stale folder goes
    write_import(import_cdd_cesm(cdd_set), out, overwrite=True)
    assert not folder.exists()
    mine = tmp_path / "other.lesion_masks"
    mine.mkdir()
    (mine / "a_lesion_mask.png").write_bytes(b"user's")
    (cdd_set / SEGMENTATIONS_NAME).write_text("#filename,region_shape_attributes\n")
    with pytest.raises(OutputExistsError, match="not an earlier import's"):
        write_import(import_cdd_cesm(cdd_set), tmp_path / "other.csv", overwrite=True)
    assert (mine / "a_lesion_mask.png").read_bytes() == b"user's"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "malformed JSON"),
        ('{"name": "cuboid"}', "unknown shape"),
        ('{"name": "point", "cx": 1, "cy": 1}', "point marks no area"),
        ('{"name": "circle", "cx": 1, "cy": 1}', "non-numeric or missing coordinates"),
        ('{"name": "circle", "cx": true, "cy": 1, "r": 2}', "non-numeric or missing coordinates"),
        ('{"name": "circle", "cx": NaN, "cy": 1, "r": 2}', "non-numeric or missing coordinates"),
        ('{"name": "polygon", "all_points_x": [1, 2], "all_points_y": [1]}',
         "non-numeric or missing coordinates"),
        ('{"name": "polyline", "all_points_x": [1, 5], "all_points_y": [1, 5]}',
         "region marks no area"),
        ('{"name": "ellipse", "cx": 1, "cy": 1, "rx": 0, "ry": 2}', "region marks no area"),
        pytest.param('{"name": "circle", "cx": 1, "cy": 1, "r": 1' + "0" * 400 + "}",
                     "coordinate out of range", id="int-too-large-for-a-float"),  # OverflowError
        ('{"name": "circle", "cx": 1e308, "cy": 1, "r": 1e308}', "coordinate out of range"),
        ('{"name": "rect", "x": 1e308, "y": 1, "width": 1e308, "height": 2}',
         "coordinate out of range"),
        pytest.param("[" * 100_000 + "]" * 100_000, "malformed JSON",
                     id="nested-too-deeply"),  # was a RecursionError
    ],
)  # fmt: skip
def test_regions_that_cannot_be_drawn_say_why(text: str, kind: str) -> None:
    with pytest.raises(RegionError) as error:
        parse_region(text)
    assert error.value.kind == kind


def test_an_empty_shape_is_no_region() -> None:
    assert parse_region("{}") is None and parse_region("") is None


def test_ellipse_theta_turns_clockwise_on_screen_as_in_via() -> None:
    """VIA draws with the canvas's ``ellipse(cx, cy, rx, ry, theta)``: y points down, so a
    positive theta turns the x radius down and to the right."""
    tilted = Region(
        "ellipse", {"cx": 20.0, "cy": 20.0, "rx": 12.0, "ry": 2.0, "theta": math.pi / 4}
    )
    mask = draw_mask((40, 40), [tilted]) > 0
    assert mask[27, 27] and mask[13, 13]  # down-right and up-left of the centre
    assert not mask[13, 27] and not mask[27, 13]
    upright = Region(
        "ellipse", {"cx": 20.0, "cy": 20.0, "rx": 12.0, "ry": 2.0, "theta": math.pi / 2}
    )
    swapped = Region("ellipse", {"cx": 20.0, "cy": 20.0, "rx": 2.0, "ry": 12.0})
    np.testing.assert_array_equal(draw_mask((40, 40), [upright]), draw_mask((40, 40), [swapped]))


def test_circle_and_rect_take_the_pixels_whose_centres_are_inside() -> None:
    circle = draw_mask((30, 30), [Region("circle", {"cx": 15.0, "cy": 10.0, "r": 6.0})]) > 0
    rows, cols = np.mgrid[0:30, 0:30] + 0.5
    np.testing.assert_array_equal(circle, (cols - 15) ** 2 + (rows - 10) ** 2 <= 36)
    rect = Region("rect", {"x": 2.0, "y": 4.0, "width": 5.0, "height": 3.0})
    expected = np.zeros((10, 10), np.uint8)
    expected[4:7, 2:7] = 255
    np.testing.assert_array_equal(draw_mask((10, 10), [rect]), expected)
    clipped = draw_mask((10, 10), [Region("circle", {"cx": 0.0, "cy": 0.0, "r": 3.0})])
    assert clipped[0, 0] == 255 and clipped.shape == (10, 10)  # partly outside: clipped


def test_json_quoted_twice_by_a_csv_tool_is_read_as_meant() -> None:
    circle = Region("circle", {"cx": 5.0, "cy": 4.0, "r": 2.0})
    assert parse_region('{""name"":""circle"",""cx"":5,""cy"":4,""r"":2}') == circle
    assert parse_region('"{""name"":""circle"",""cx"":5,""cy"":4,""r"":2}"') == circle


def test_a_region_inside_the_image_without_a_pixel_centre_is_not_called_outside(cdd_set):
    _write_via(
        cdd_set / SEGMENTATIONS_NAME,
        [
            (
                "P1_L_DM_CC.jpg",
                _shape(name="polygon", all_points_x=[2, 6, 9], all_points_y=[3] * 3),
            ),
            ("P1_L_DM_CC.jpg", _shape(name="rect", x=4.6, y=4.6, width=0.2, height=0.2)),
            ("P1_L_DM_CC.jpg", _shape(name="circle", cx=-9, cy=5, r=2)),
        ],
    )
    left = [(item.item, item.kind) for item in import_cdd_cesm(cdd_set).regions_left_out]
    assert left == [
        ("segmentations row 2", "region covers no pixel centre"),  # collinear points
        ("segmentations row 3", "region covers no pixel centre"),  # smaller than a pixel
        ("segmentations row 4", "region entirely outside the image"),
    ]


def test_names_with_a_folder_or_leading_zeros_match_and_never_print_a_patient(
    cdd_set, tmp_path, capsys
) -> None:
    """VIA keeps the path an image was loaded from; a patient number may be zero-padded.
    The console masks the patient however the file spells it."""
    from Training.cli import main

    _write_via(
        cdd_set / SEGMENTATIONS_NAME,
        [
            ("images/P1_L_DM_CC.jpg", SQUARE),  # drawn on P1_L_DM_CC.jpg
            ("C:\\VIA\\P1_L_CM_CC.jpg", SQUARE),
            ("P01_L_DM_MLO.jpg", SQUARE),  # no such image
            ("scans/P9_R_CM_CC.jpg", SQUARE),
            ("P 7 notes.jpg", SQUARE),
        ],
    )
    out = tmp_path / "c.csv"
    assert main(["import", "cdd-cesm", str(cdd_set), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert set(_masks(out)) == {"P1_L_DM_CC.jpg", "P1_L_CM_CC.jpg"}
    assert "lesion regions left out: 3 (" in printed
    assert "(<patient>_L_DM_MLO.jpg)" in printed and "(scans/<patient>_R_CM_CC.jpg)" in printed
    assert "(<patient> notes.jpg)" in printed
    assert not PATIENT_TOKEN.search(printed) and "P 7" not in printed, printed


def test_a_long_polygon_and_a_utf16_export_are_read(cdd_set, tmp_path) -> None:
    """A freehand outline can exceed the csv module's 128 KiB cell limit (it stopped the
    import); Excel's "Unicode text" is UTF-16 with tabs (it was read as garbage)."""
    steps = np.linspace(0, 2 * np.pi, 20_000, endpoint=False)
    long = _shape(name="polygon", all_points_x=[round(8 + 5 * math.cos(t), 3) for t in steps],
                  all_points_y=[round(12 + 5 * math.sin(t), 3) for t in steps])  # fmt: skip
    assert len(long) > 131_072
    _write_via(cdd_set / SEGMENTATIONS_NAME, [("P1_L_DM_CC.jpg", long)])
    assert list(import_cdd_cesm(cdd_set).mask_drawings) == [cdd_set / LOW / "P1_L_DM_CC.jpg"]
    unicode_text = tmp_path / "regions.csv"
    with open(unicode_text, "w", newline="", encoding="utf-16") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(VIA_COLUMNS)
        writer.writerow(["P1_L_CM_CC.jpg", 1000, "{}", 1, 0, SQUARE, "{}"])
    result = import_cdd_cesm(cdd_set, segmentations=unicode_text)
    assert list(result.mask_drawings) == [cdd_set / SUB / "P1_L_CM_CC.jpg"]
    assert not result.regions_left_out


def test_outlines_are_filled_as_a_per_pixel_test_would_fill_them_in_one_pass_per_row() -> None:
    """The row-by-row fill gives the pixels a test of every pixel centre against the outline
    gives (``skimage.draw.polygon``) for simple outlines, clipped at the image's edges."""
    from skimage import draw

    from Training.importers.masks import Region

    rng = np.random.default_rng(5)
    size = (90, 70)
    for points in (3, 7, 40, 400):
        angles = np.sort(rng.uniform(0, 2 * np.pi, points))
        radius = rng.uniform(5, 45, points)
        xs, ys = 35.3 + radius * np.cos(angles), 40.6 + radius * np.sin(angles)
        region = Region("polygon", {"all_points_x": tuple(xs), "all_points_y": tuple(ys)})
        ours, reference = np.zeros(size, bool), np.zeros(size, bool)
        ours[region.pixels(size)] = True
        reference[draw.polygon(ys - 0.5, xs - 0.5, size)] = True
        assert ours.any() and np.array_equal(ours, reference), points
