"""Patient-disjoint, label-stratified cross-validation: the paper's protocol and ours.

Both protocols deal the patients into ``2 × n_folds`` stratified chunks with
scikit-learn's ``StratifiedGroupKFold``, grouped by patient and stratified by label (a
patient is malignant if any of their breasts is); every image of a patient is in one
split. The same splits serve the classifiers and the generators, as in the paper.

- ``"paper"``: fold *k* tests on chunk ``2k``, validates on chunk ``2k + 1`` and trains on
  the other eight: 80/10/10 per fold, as the paper reports. The five test sets are
  disjoint but hold only half of the patients; the other half is never tested.
- ``"every-patient"``: fold *k* tests on chunks ``2k`` and ``2k + 1``, validates on chunk
  ``2k + 2`` (mod ``2 × n_folds``) and trains on the other seven: 70/10/20. Every patient
  is tested exactly once, so the test predictions of all folds pool into one
  out-of-fold prediction per patient.

>>> from Training.splits import make_splits
>>> labels = {f"p{i:02d}": i % 2 for i in range(20)}
>>> folds = make_splits(labels, n_folds=5, seed=0)
>>> len(folds), [len(f.test) for f in folds]
(5, [2, 2, 2, 2, 2])
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from Training.datasets import ManifestError, ManifestRow, patient_key
from VirtualBiopsyLib.atomic_io import write_text_atomic

SPLIT_SCHEME = (
    "StratifiedGroupKFold(n_splits=2*n_folds, shuffle=True) over patients grouped by patient "
    "and stratified by label; protocol 'paper': fold k tests chunk 2k, validates chunk 2k+1, "
    "trains on the rest (80/10/10); protocol 'every-patient': fold k tests chunks 2k and "
    "2k+1, validates chunk 2k+2 (mod 2*n_folds), trains on the rest (70/10/20)."
)


@dataclass(frozen=True)
class FoldSplit:
    """Patient keys (see :func:`Training.datasets.patient_key`) of one fold's three splits."""

    fold: int
    train: frozenset[str]
    val: frozenset[str]
    test: frozenset[str]

    def split_of(self, patient: str) -> str | None:
        """``"train"``, ``"val"``, ``"test"`` or ``None`` for a patient key."""
        for name in ("train", "val", "test"):
            if patient in getattr(self, name):
                return name
        return None

    def to_dict(self) -> dict[str, object]:
        return {
            "fold": self.fold,
            "train": sorted(self.train),
            "val": sorted(self.val),
            "test": sorted(self.test),
        }


def patient_labels(rows: list[ManifestRow]) -> dict[str, int]:
    """Label per patient key: malignant (1) if any image of the patient is malignant."""
    labels: dict[str, int] = {}
    for row in rows:
        key = patient_key(row.patient_id)
        labels[key] = max(labels.get(key, 0), row.label)
    return labels


def make_splits(
    labels: Mapping[str, int], n_folds: int = 5, seed: int = 2026, protocol: str = "paper"
) -> list[FoldSplit]:
    """Deal patients into ``n_folds`` folds by ``protocol`` (see the module docstring).

    ``labels`` maps a patient key to 0 (benign) or 1 (malignant). Needs at least
    ``2 × n_folds`` patients.
    """
    patients = sorted(labels)
    n_chunks = 2 * n_folds
    if len(patients) < n_chunks:
        raise ManifestError(
            f"{len(patients)} patients cannot fill {n_folds} folds of 80/10/10 "
            f"(at least {n_chunks} needed)"
        )
    y = np.array([labels[p] for p in patients])
    splitter = StratifiedGroupKFold(n_splits=n_chunks, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # small cohorts: some chunks lack a class; that is fine
        warnings.filterwarnings("ignore", message="The least populated class")
        try:
            chunks = [
                frozenset(patients[i] for i in test_index)
                for _, test_index in splitter.split(np.zeros(len(patients)), y, groups=patients)
            ]
        except ValueError as error:  # e.g. no class has 2 × n_folds patients
            raise ManifestError(f"cannot split {len(patients)} patients: {error}") from None
    everyone = frozenset(patients)
    folds = []
    for fold in range(n_folds):
        if protocol == "every-patient":
            test = chunks[2 * fold] | chunks[2 * fold + 1]
            val = chunks[(2 * fold + 2) % n_chunks]
        elif protocol == "paper":
            test, val = chunks[2 * fold], chunks[2 * fold + 1]
        else:
            raise ValueError(f"unknown split protocol {protocol!r}")
        folds.append(FoldSplit(fold, everyone - test - val, val, test))
    return folds


def save_splits(folds: list[FoldSplit], path: Path, protocol: str = "paper") -> None:
    payload = {
        "scheme": SPLIT_SCHEME,
        "protocol": protocol,
        "folds": [fold.to_dict() for fold in folds],
    }
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def load_splits(path: Path) -> list[FoldSplit]:
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        return [
            FoldSplit(
                int(item["fold"]),
                frozenset(item["train"]),
                frozenset(item["val"]),
                frozenset(item["test"]),
            )
            for item in payload["folds"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ManifestError(f"{path}: unreadable splits file ({error})") from None
