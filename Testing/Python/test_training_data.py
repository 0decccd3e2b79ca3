"""Manifest reading, the preprocessed-image cache and augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from Training.augment import RandomAffine2d
from Training.cache import PreprocessedCache
from Training.config import AugmentConfig
from Training.datasets import (
    ManifestError,
    group_cases,
    image_pairs,
    patient_key,
    read_manifest,
)
from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams
from VirtualBiopsyLib.roles import Laterality, View

HEADER = "patient_id,study_uid,laterality,view,modality,path,label,acr_density,phase\n"


def _manifest(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "manifest.csv"
    path.write_text(HEADER + "".join(f"{row}\n" for row in rows))
    return path


def _exam_rows(
    patient: str,
    label: str,
    laterality: str = "L",
    phase: str = "early",
    slots: tuple[str, ...] = ("LE_CC", "LE_MLO", "DES_CC", "DES_MLO"),
) -> list[str]:
    rows = []
    for slot in slots:
        modality, view = slot.split("_")
        rows.append(
            f"{patient},1.2.{patient[-1]},{laterality},{view},{modality},"
            f"img/{patient}_{laterality}_{phase}_{slot}.dcm,{label},b,{phase}"
        )
    return rows


def test_manifest_rows_resolve_paths_against_the_manifest_folder(tmp_path: Path) -> None:
    manifest = read_manifest(_manifest(tmp_path, _exam_rows("P1", "malignant")))
    assert len(manifest.rows) == 4
    assert manifest.rows[0].path == (tmp_path / "img" / "P1_L_early_LE_CC.dcm").resolve()
    assert manifest.rows[0].label == 1 and len(manifest.sha256) == 64
    assert not manifest.synthetic


def test_missing_column_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("patient_id,path\nP1,a.dcm\n")
    with pytest.raises(ManifestError, match=r"bad\.csv.*label"):
        read_manifest(path)


def test_bad_label_names_the_line(tmp_path: Path) -> None:
    rows = _exam_rows("P1", "malignant")
    rows[2] = rows[2].replace("malignant", "maybe")
    with pytest.raises(ManifestError, match="line 4.*maybe"):
        read_manifest(_manifest(tmp_path, rows))


def test_cases_keep_one_phase_and_pairs_need_both_modalities(tmp_path: Path) -> None:
    rows = (
        _exam_rows("P1", "benign")
        + _exam_rows("P1", "benign", phase="late")
        + _exam_rows("P2", "malignant", laterality="R", slots=("LE_CC", "LE_MLO"))
    )
    manifest = read_manifest(_manifest(tmp_path, rows))
    cases = group_cases(manifest.rows, phase="early")
    assert sorted(len(case.slots) for case in cases) == [2, 4]
    assert all(patient_key(case.patient_id) == case.patient for case in cases)
    assert all(case.patient_id not in case.key for case in cases)
    pairs = image_pairs(manifest.rows, View.CC)
    assert len(pairs) == 2  # P1 early and late; P2 has no DES
    assert {pair.patient_id for pair in pairs} == {"P1"}


class _CountingLoader:
    """A stand-in reader: a fixed image, counting how often it is called."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path) -> MammogramImage:
        self.calls += 1
        info = ImageInfo(path=path, format="dicom", laterality=Laterality.R)
        pixels = np.linspace(0, 1, 40 * 30, dtype=np.float32).reshape(40, 30)
        return MammogramImage(info, pixels, windowed=True)


def test_cache_builds_each_image_once_and_keys_by_content(tmp_path: Path) -> None:
    image = tmp_path / "a.dcm"
    image.write_bytes(b"first content")
    loader = _CountingLoader()
    cache = PreprocessedCache(tmp_path / "cache", PreprocessingParams(size=16), loader)
    first = cache.load(image)
    again = cache.load(image)
    assert loader.calls == 1 and (cache.hits, cache.misses) == (1, 1)
    assert first.shape == (16, 16) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)  # a cold and a warm cache give the same
    copy = tmp_path / "renamed.dcm"
    copy.write_bytes(b"first content")
    cache.load(copy)
    assert loader.calls == 1  # same bytes, same entry
    image.write_bytes(b"edited content")
    cache.load(image)
    assert loader.calls == 2  # new content, new entry


def test_cache_key_depends_on_preprocessing_parameters(tmp_path: Path) -> None:
    image = tmp_path / "a.dcm"
    image.write_bytes(b"x")
    small = PreprocessedCache(tmp_path / "c", PreprocessingParams(size=16), _CountingLoader())
    large = PreprocessedCache(tmp_path / "c", PreprocessingParams(size=32), _CountingLoader())
    assert small.key(image) != large.key(image)
    assert large.load(image).shape == (32, 32)


def test_cache_entries_are_plain_npy_files_and_corrupt_ones_are_rebuilt(tmp_path: Path) -> None:
    image = tmp_path / "a.dcm"
    image.write_bytes(b"x")
    loader = _CountingLoader()
    cache = PreprocessedCache(tmp_path / "cache", PreprocessingParams(size=16), loader)
    cache.load(image)
    entry = cache.entry_path(cache.key(image))
    assert np.load(entry, allow_pickle=False).dtype == np.float16
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    entry.write_bytes(b"garbage")
    assert cache.load(image).shape == (16, 16)
    assert loader.calls == 2


def test_augmentation_moves_paired_images_together_and_repeats_with_the_seed() -> None:
    le = torch.rand(3, 1, 32, 32)
    des = le.clone()
    augment = RandomAffine2d(AugmentConfig(), np.random.default_rng(1))
    le_out, des_out = augment(le, des)
    assert torch.equal(le_out, des_out)
    assert not torch.allclose(le_out, le)
    replay = RandomAffine2d(AugmentConfig(), np.random.default_rng(1))(le)
    assert torch.equal(replay, le_out)


def test_augmentation_draws_stay_in_the_papers_ranges() -> None:
    augment = RandomAffine2d(AugmentConfig(), np.random.default_rng(0))
    draws = [augment.draw(100, 100) for _ in range(200)]
    assert max(abs(d.angle) for d in draws) <= 15
    assert max(abs(t) for d in draws for t in d.translate) <= 10
    assert all(0.9 <= d.scale <= 1.1 for d in draws)


def test_disabled_augmentation_is_the_identity() -> None:
    images = torch.rand(2, 1, 8, 8)
    augment = RandomAffine2d(AugmentConfig(enabled=False), np.random.default_rng(0))
    assert augment(images) is images
