"""report.png and the case writer: what the report shows, and the files written side by side.

The report is drawn with Pillow (``VirtualBiopsyLib.inference.report``); these tests read
what it wrote (its texts, its pixels) and check it still shows everything the case's
reader needs: every probability, the notices (research use, demo model, SYNTHETIC), the
images with the saliency overlay, and missing slots. The writer tests check that the
files written by the writer thread and the calling thread are the ones result.json lists,
and that a failing file fails the case without leaving a folder. Untrained tiny package:
the numbers mean nothing clinically.
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from PIL import Image

from VirtualBiopsyLib import RESEARCH_USE_NOTICE
from VirtualBiopsyLib.inference import output
from VirtualBiopsyLib.inference.fixtures import write_slot_folder, write_untrained_package
from VirtualBiopsyLib.inference.output import OutputFolder, write_case
from VirtualBiopsyLib.inference.pipeline import Pipeline
from VirtualBiopsyLib.inference.report import (
    SYNTHETIC_RED,
    _grid_cells,
    _inferno,
    draw_report,
    render_report,
)
from VirtualBiopsyLib.inference.runner import gather_cases
from VirtualBiopsyLib.models.package import load_package
from VirtualBiopsyLib.roles import SLOTS


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("package")
    return load_package(write_untrained_package(root / "tiny", n_folds=3, image_size=64))


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):
    folder = write_slot_folder(
        tmp_path_factory.mktemp("exam") / "exam", ["LE_CC", "LE_MLO", "DES_MLO"], laterality="L"
    )
    [case] = gather_cases([folder]).cases
    return case


@pytest.fixture(scope="module")
def result(package, case):
    with Pipeline(package, synthesis_precision="float32") as pipeline:
        return pipeline.run(case)


def _words(texts: list[str]) -> str:
    return re.sub(r"\s+", " ", " ".join(texts))


def test_report_shows_every_probability_and_the_notices(result, tmp_path):
    drawing = draw_report(result)
    shown = _words(drawing.texts)
    fused = result.fused
    assert f"p(malignant) = {fused.mean:.2f}" in shown
    assert f"std {fused.std:.2f}, SE {fused.sem:.2f} over 3 folds" in shown
    assert f"threshold {result.threshold:.2f}" in shown
    assert result.label.upper() in drawing.texts
    for slot in SLOTS:
        stats = result.image_probabilities[slot]
        assert f"{slot} p = {stats.mean:.2f} ± {stats.std:.2f}" in shown  # the caption
    for modality, stats in result.modality_probabilities.items():
        assert f"{modality} (views) {stats.mean:.2f} ± {stats.std:.2f}" in shown  # the table
    assert RESEARCH_USE_NOTICE in shown
    assert "SYNTHETIC from LE_CC" in shown  # the banner on the synthetic DES_CC only
    assert shown.count("SYNTHETIC from") == 1
    assert "Grad-CAM saliency" in shown
    assert not any("DEMO MODEL" in text for text in drawing.texts)
    demo = dataclasses.replace(result, model=dataclasses.replace(result.model, is_demo=True))
    assert "DEMO MODEL" in _words(draw_report(demo).texts)
    path = render_report(result, tmp_path / "report.png")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (1500, 960) and png.mode == "RGB"
    assert not list(tmp_path.glob(".*"))  # written through a temporary file


def test_every_text_is_drawn_on_the_canvas(result):
    """The texts are not only recorded: the footer notice and the numbers panel hold
    dark (text) pixels where they are drawn."""
    pixels = np.asarray(draw_report(result).image.convert("L"), dtype=np.int16)
    footer = pixels[900:945, 10:1200]  # the research-use notice, bottom left
    numbers = pixels[100:880, 980:1480]  # label, probabilities, table, warnings
    assert (footer < 128).sum() > 2000
    assert (numbers < 128).sum() > 10000


def test_saliency_overlay_is_drawn_in_inferno_over_the_image(result):
    with_overlay = np.asarray(draw_report(result).image, dtype=np.int16)
    plain = dataclasses.replace(result, saliency={})
    without = np.asarray(draw_report(plain).image, dtype=np.int16)
    left, top, right, bottom = (round(v) for v in _grid_cells(1500, 960)[0][0])
    panel_with = with_overlay[top:bottom, left:right]
    panel_without = without[top:bottom, left:right]
    changed = np.abs(panel_with - panel_without).sum(axis=2) > 6
    assert changed.sum() > 500  # the overlay is visible on LE_CC
    grey = panel_without[..., 0] == panel_without[..., 2]
    assert grey.mean() > 0.9  # without it, the picture is grey …
    tinted = panel_with[changed]
    assert (tinted[:, 0] > tinted[:, 2]).mean() > 0.5  # … with it, inferno's warm hues
    assert _inferno().shape == (256, 3)


def test_a_missing_slot_says_so(package, case):
    with Pipeline(package, synthesis=False, saliency=False) as pipeline:
        plain = pipeline.run(case)
    drawing = draw_report(plain)
    assert "DES_CC: missing" in drawing.texts and "DES_CC\nmissing" in drawing.texts
    assert "no saliency" in _words(drawing.texts)
    rgb = np.asarray(drawing.image).reshape(-1, 3)
    assert (np.abs(rgb.astype(int) - 0xDD).sum(axis=1) == 0).sum() > 50_000  # grey panel
    target = np.array([int(SYNTHETIC_RED[i : i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(rgb.astype(int) - target).sum(axis=1) <= 6).sum() < 50  # nothing synthetic


def test_files_written_side_by_side_are_the_ones_listed(result, tmp_path, monkeypatch):
    import threading

    writers: dict[str, str] = {}
    real = output.write_picture

    def recording(picture, path, *args, **kwargs):
        writers[path.name] = threading.current_thread().name
        return real(picture, path, *args, **kwargs)

    monkeypatch.setattr(output, "write_picture", recording)
    folder = write_case(result, tmp_path)
    data = json.loads((folder / "result.json").read_text())
    listed = set(data["outputs"].values())
    on_disk = {p.name for p in folder.iterdir()} - {"result.json"}
    assert listed == on_disk == {"report.png", *writers}
    assert len(writers) == 1 + len(SLOTS)  # synthetic DES_CC and four saliency maps


def test_a_failing_file_fails_the_case_and_leaves_no_folder(result, tmp_path, monkeypatch):
    def failing(picture, path, *args, **kwargs):
        if path.name.startswith("saliency_DES"):
            raise OSError(28, "No space left on device", str(path))
        return original(picture, path, *args, **kwargs)

    original = output.write_picture
    monkeypatch.setattr(output, "write_picture", failing)
    with OutputFolder(tmp_path) as folder, pytest.raises(OSError, match="No space left"):
        folder.write_case(result)
    left = [p.name for p in tmp_path.iterdir() if not p.name.startswith(".virtual-biopsy-run")]
    assert left == []  # neither the case folder nor its partial folder


@pytest.mark.parametrize("flipped", [False, True])
def test_the_reports_sampled_view_of_a_map_is_the_full_map_strided(flipped):
    """SlotPicture.display samples a 256²-style map at every stride-th original pixel;
    it must agree with drawing the whole map back (Geometry.map_to_original) and
    taking every stride-th pixel."""
    from VirtualBiopsyLib.images.preprocessing import Geometry
    from VirtualBiopsyLib.inference.pictures import SlotPicture

    geometry = Geometry(
        (300, 200), padded_size=300, row_offset=0, col_offset=100, size=64, flipped=flipped
    )
    values = np.random.default_rng(3).random((64, 64), dtype=np.float32)
    picture = SlotPicture(values, (0.1, 0.1), geometry=geometry)
    for stride in (1, 3, 7):
        shown = picture.display(stride)
        assert shown.dtype == np.float32
        np.testing.assert_allclose(shown, picture.pixels[::stride, ::stride], atol=1e-6)


def test_inferno_table_is_matplotlibs():
    from matplotlib import colormaps

    expected = colormaps["inferno"](np.arange(256))[:, :3]
    np.testing.assert_allclose(_inferno(), expected, atol=0.5 / 255 + 1e-7)


def test_drawing_a_report_imports_no_matplotlib(result, tmp_path):
    """Importing matplotlib's figure machinery cost a one-shot predict 0.4 s; the report
    must not bring it back (checked in a fresh interpreter)."""
    import pickle
    import subprocess
    import sys

    saved = tmp_path / "result.pickle"  # our own object, written by this test
    saved.write_bytes(pickle.dumps(result))
    script = (
        "import pickle, sys; from pathlib import Path\n"
        "from VirtualBiopsyLib.inference.report import render_report\n"
        f"result = pickle.loads(Path({str(saved)!r}).read_bytes())\n"
        f"render_report(result, Path({str(tmp_path / 'report.png')!r}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "report.png").is_file()
