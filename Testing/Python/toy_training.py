"""A toy training cohort (16² images, stand-in reader) shared by the training-run tests.

Files hold a few words saying what they show; :func:`toy_loader` draws the image from them,
so a whole 5-fold run takes seconds. Importable by child processes (job and torchrun
tests start them).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from Training.config import GeneratorConfig, RunConfig, tiny_config
from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
from VirtualBiopsyLib.roles import Laterality

HEADER = "patient_id,study_uid,laterality,view,modality,path,label,acr_density,phase,synthetic\n"
SIZE = 16


def write_cohort(folder: Path, patients: int, prefix: str) -> Path:
    """Files whose bytes say what they show; the stand-in loader draws them."""
    rows = []
    for index in range(patients):
        label = "malignant" if index % 3 else "benign"
        for slot in ("LE_CC", "LE_MLO", "DES_CC", "DES_MLO"):
            modality, view = slot.split("_")
            name = f"{prefix}{index:02d}_{slot}.img"
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(f"{label},{modality},{index},{view}")
            rows.append(
                f"{prefix}{index:02d},1.2.{index},R,{view},{modality},{name},{label},"
                f"{'abcd'[index % 4]},early,true"
            )
    manifest = folder / "manifest.csv"
    manifest.write_text(HEADER + "\n".join(rows) + "\n")
    return manifest


def toy_loader(path: Path) -> MammogramImage:
    """A noisy square; malignant DES images carry a bright spot."""
    label, modality, _, _ = path.read_text().split(",")
    seed = int(hashlib.sha256(path.read_bytes()).hexdigest()[:8], 16)
    pixels = np.random.default_rng(seed).random((SIZE, SIZE), dtype=np.float32) * 0.3
    if modality == "DES" and label == "malignant":
        pixels[6:10, 6:10] = 1.0
    info = ImageInfo(path=path, format="dicom", laterality=Laterality.R)
    return MammogramImage(info, pixels, windowed=True)


def toy_config() -> RunConfig:
    config = tiny_config(seed=1)
    return replace(
        config,
        image_size=SIZE,
        classifier=replace(config.classifier, max_epochs=2, warmup_epochs=2),
        generator=GeneratorConfig(
            ngf=4,
            n_blocks=1,
            ndf=4,
            n_layers=2,
            max_epochs=1,
            batch_size=4,
            learning_rate=1e-3,
            pretrain_epochs=1,
        ),
    )
