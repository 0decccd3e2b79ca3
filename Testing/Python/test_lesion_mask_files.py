"""Lesion masks named by a manifest that point at what is not a mask file: a FIFO, a
device, a symlink loop. Training refuses each by name and goes on; it never hangs,
fills the memory or stops reading the manifest."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from Training.cache import PreprocessedCache
from Training.datasets import ImagePair
from Training.lesion_masks import UNREADABLE, pair_lesion_masks
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams
from VirtualBiopsyLib.roles import View
from VirtualBiopsyLib.training_manifest import read_training_manifest

SHAPE = (120, 90)


def _des(folder: Path) -> Path:
    rows, cols = np.indices(SHAPE)
    breast = ((rows - 60) / 55) ** 2 + (cols / 80) ** 2 < 1
    texture = np.random.default_rng(0).integers(80, 140, SHAPE)
    path = folder / "P1_R_CM_CC.png"
    Image.fromarray(np.where(breast, texture, 0).astype(np.uint8)).save(path)
    return path


def _good_mask(folder: Path) -> Path:
    mask = np.zeros(SHAPE, np.uint8)
    mask[50:70, 20:40] = 255
    path = folder / "good_lesion_mask.png"
    Image.fromarray(mask).save(path)
    return path


@pytest.fixture
def deadline():
    """Fail instead of hanging when a mask read blocks (the bug this file guards)."""

    def expire(signum, frame):
        raise TimeoutError("reading a lesion mask blocked")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_or_device_named_as_a_mask_is_refused_at_once(
    tmp_path: Path, caplog, deadline
) -> None:
    """A FIFO would block the run forever and ``/dev/zero`` fill its memory; each is
    refused as unreadable, by name, and the good mask beside them is still used."""
    des, good = _des(tmp_path), _good_mask(tmp_path)
    fifo = tmp_path / "fifo_lesion_mask.png"
    os.mkfifo(fifo)
    pairs = [ImagePair("P1", View.CC, des, des, 1, None, mask) for mask in (fifo, good)]
    if Path("/dev/null").exists():
        pairs.append(ImagePair("P1", View.CC, des, des, 1, None, Path("/dev/null")))
    cache = PreprocessedCache(tmp_path / "cache", PreprocessingParams(size=32))
    with caplog.at_level(logging.WARNING, logger="Training.lesion_masks"):
        masks = pair_lesion_masks(pairs, cache, tmp_path / "manifest.csv")
    assert masks.annotated == 1 and masks.masks[1] is not None and masks.masks[1].any()
    assert masks.refused == {UNREADABLE: len(pairs) - 1}
    refusals = [m for m in caplog.messages if "not a regular file" in m]
    assert any(str(fifo) in m for m in refusals)
    assert len(refusals) == len(pairs) - 1


def test_a_symlink_loop_in_the_mask_column_is_refused_by_name_not_a_crash(
    tmp_path: Path, caplog
) -> None:
    """``Path.resolve`` raises on a loop (before Python 3.13): the manifest must still
    read, and the loop is refused where the mask is opened, naming it."""
    des, good = _des(tmp_path), _good_mask(tmp_path)
    loop = tmp_path / "loop_lesion_mask.png"
    loop.symlink_to(loop.name)
    manifest = tmp_path / "manifest.csv"
    header = "patient_id,study_uid,laterality,view,modality,path,label,acr_density,phase,"
    manifest.write_text(
        header + "synthetic,lesion_mask\n"
        f"P1,1.2,R,CC,LE,{des.name},malignant,b,early,false,{good.name}\n"
        f"P1,1.2,R,CC,DES,{des.name},malignant,b,early,false,{loop.name}\n"
        f"P2,1.3,R,CC,DES,{loop.name},malignant,b,early,false,\n"
    )
    rows = read_training_manifest(manifest).rows
    assert rows[1].lesion_mask is not None and rows[1].lesion_mask.name == loop.name
    assert rows[2].path.name == loop.name  # an image path too: refused when it is read
    pair = ImagePair("P1", View.CC, rows[0].path, rows[1].path, 1, rows[0].lesion_mask, loop)
    cache = PreprocessedCache(tmp_path / "cache", PreprocessingParams(size=32))
    with caplog.at_level(logging.WARNING, logger="Training.lesion_masks"):
        masks = pair_lesion_masks([pair], cache, manifest)
    assert masks.refused == {UNREADABLE: 1} and masks.masks == [None]
    assert any(loop.name in m and "symbolic links" in m for m in caplog.messages)


def test_an_import_of_the_same_stem_never_takes_another_imports_masks(tmp_path: Path) -> None:
    """``cdd.csv`` and ``cdd.txt`` share ``cdd.lesion_masks/``: with --overwrite the
    second import replaced (or, without masks, removed) the first one's masks, which then
    served the first manifest silently. It is refused, naming the other manifest; the
    first import's masks are untouched, and an import of its own name still replaces them."""
    from Training.importers.cdd_cesm import import_cdd_cesm
    from Training.importers.summary import write_import
    from VirtualBiopsyLib.errors import OutputExistsError
    from VirtualBiopsyLib.phantom import generate_cohort

    generate_cohort(tmp_path / "a", patients=3, seed=1, layout="cdd-cesm")
    generate_cohort(tmp_path / "b", patients=3, seed=2, layout="cdd-cesm")
    first = tmp_path / "imports" / "cdd.csv"
    write_import(import_cdd_cesm(tmp_path / "a"), first)
    masks = {p.name: p.read_bytes() for p in (tmp_path / "imports" / "cdd.lesion_masks").iterdir()}
    second = import_cdd_cesm(tmp_path / "b")
    for result in (second, replace(second, mask_drawings={})):
        with pytest.raises(OutputExistsError, match=r"lesion masks of .*cdd\.csv"):
            write_import(result, tmp_path / "imports" / "cdd.txt", overwrite=True)
        after = (tmp_path / "imports" / "cdd.lesion_masks").iterdir()
        assert {p.name: p.read_bytes() for p in after} == masks
    assert not (tmp_path / "imports" / "cdd.txt").exists()
    write_import(second, first, overwrite=True)  # its own name: replaced, as before
    rows = read_training_manifest(first).rows
    assert all(row.lesion_mask is not None and row.lesion_mask.is_file() for row in rows)


def test_a_manifest_written_through_a_linked_folder_names_its_images_and_masks(
    tmp_path: Path,
) -> None:
    """``--out deep/link/x.csv`` with ``link`` pointing elsewhere: the reader resolves
    ``link/..`` from the link's target, so the written paths must be relative to it."""
    from VirtualBiopsyLib.roles import Modality, View
    from VirtualBiopsyLib.training_manifest import (
        BiopsyLabel,
        TrainingManifestRow,
        write_training_manifest,
    )

    (tmp_path / "exams").mkdir()
    des, mask = _des(tmp_path / "exams"), _good_mask(tmp_path / "exams")
    (tmp_path / "elsewhere" / "one" / "imports").mkdir(parents=True)
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "link").symlink_to(tmp_path / "elsewhere" / "one" / "imports")
    row = TrainingManifestRow(
        "P1", "1.2", "R", View.CC, Modality.DES, des, BiopsyLabel.BENIGN, "b", "early",
        lesion_mask=mask,
    )  # fmt: skip
    written = write_training_manifest(tmp_path / "deep" / "link" / "x.csv", [row])
    read = read_training_manifest(written).rows[0]
    assert (read.path, read.lesion_mask) == (des.resolve(), mask.resolve())
