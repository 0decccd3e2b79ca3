"""Small, untrained model packages and slot folders for tests, benchmarks and examples.

Untrained weights exercise every path of the pipeline (loading, synthesis, fusion,
saliency, outputs) in seconds; their probabilities mean nothing, and the packages say
so (``provenance.note``). The trained demo package comes from ``Training``.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> package_dir = write_untrained_package(root / "tiny", n_folds=2, image_size=64)
>>> exam_dir = write_slot_folder(root / "exam", ["LE_CC", "LE_MLO", "DES_MLO"])
>>> sorted(p.name for p in exam_dir.iterdir())
['DES_MLO.nrrd', 'LE_CC.nrrd', 'LE_MLO.nrrd', 'case.json']
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from VirtualBiopsyLib.atomic_io import write_text_atomic
from VirtualBiopsyLib.nrrd_io import write_nrrd
from VirtualBiopsyLib.roles import SLOTS

UNTRAINED_NOTE = "untrained weights for tests and timing only; probabilities mean nothing"


def write_untrained_package(
    directory: Path,
    *,
    architecture: str = "demo",
    n_folds: int = 2,
    image_size: int = 64,
    generator: dict[str, int] | None = None,
    with_generators: bool = True,
    is_demo: bool = False,
    threshold: float = 0.5,
    seed: int = 0,
    synthetic_logit_shift: float | None = None,
) -> Path:
    """A model package with freshly initialised networks (deterministic for ``seed``);
    ``synthetic_logit_shift`` gives the DES classifiers of fold k the synthetic-DES shift
    ``synthetic_logit_shift + 0.25 k`` (none by default)."""
    import torch

    from VirtualBiopsyLib.images.preprocessing import PreprocessingParams
    from VirtualBiopsyLib.models.classifiers import build_classifier
    from VirtualBiopsyLib.models.cyclegan import DEMO_GENERATOR, build_generator
    from VirtualBiopsyLib.models.package import FoldModels, write_package

    torch.manual_seed(seed)
    mcc = {"LE_CC": 0.20, "LE_MLO": 0.10, "DES_CC": 0.60, "DES_MLO": 0.50}
    folds = [
        FoldModels(
            classifiers={slot: build_classifier(architecture) for slot in SLOTS},
            val_mcc={slot: value + 0.01 * fold for slot, value in mcc.items()},
            modality_mcc={"LE": 0.15, "DES": 0.55},
            synthetic_logit_shift=(
                {}
                if synthetic_logit_shift is None
                else {s: synthetic_logit_shift + 0.25 * fold for s in ("DES_CC", "DES_MLO")}
            ),
        )
        for fold in range(n_folds)
    ]
    generator_kwargs = generator or DEMO_GENERATOR
    generators = (
        {view: build_generator(**generator_kwargs) for view in ("CC", "MLO")}
        if with_generators
        else {}
    )
    return write_package(
        directory,
        name="untrained-test",
        version="0.0",
        architecture=architecture,
        folds=folds,
        generators=generators,
        preprocessing=PreprocessingParams(size=image_size),
        threshold=threshold,
        provenance={"note": UNTRAINED_NOTE},
        is_demo=is_demo,
    )


def write_slot_folder(
    folder: Path,
    slots: Iterable[str] = SLOTS,
    *,
    label: str = "malignant",
    density: str = "b",
    seed: int = 0,
    laterality: str = "L",
    patient_id: str = "PHANTOM-0001",
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    spacing_mm: float = 0.2,
    size: str = "small",
) -> Path:
    """The Slicer hand-over form: ``LE_CC.nrrd`` … (a phantom exam) and ``case.json``."""
    from VirtualBiopsyLib.phantom import render_exam

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    exam = render_exam(seed, label, density, size=size, laterality=laterality)
    for slot in slots:
        pixels = np.asarray(exam[slot], dtype=np.float32)
        write_nrrd(folder / f"{slot}.nrrd", pixels, (spacing_mm, spacing_mm))
    identity = {"patient_id": patient_id, "study_uid": study_uid, "laterality": laterality}
    write_text_atomic(folder / "case.json", json.dumps(identity))
    return folder
