"""What each phantom patient's exam holds (the cohort plan) and rendering its breasts.

Kept apart from writing (:mod:`~VirtualBiopsyLib.phantom.cohort` for DICOM,
:mod:`~VirtualBiopsyLib.phantom.cdd_cesm` for the JPEG layout) so both writers share
it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from VirtualBiopsyLib.phantom.anatomy import ACR_CATEGORIES
from VirtualBiopsyLib.phantom.exam import RenderedBreast, render_breast
from VirtualBiopsyLib.roles import Laterality

MALIGNANT_SHARE = 0.7  # as in the paper's classification subset (83 of 115)
#: Share of each ACR density category after the first four patients (typical screening mix).
ACR_WEIGHTS: dict[str, float] = dict(zip(ACR_CATEGORIES, (0.1, 0.4, 0.4, 0.1), strict=True))


@dataclass(frozen=True)
class PatientPlan:
    """What one phantom patient's exam holds and how its files are encoded."""

    number: int  # 1-based
    acr_density: str
    cases: tuple[tuple[Laterality, str], ...]  # (laterality, label) per imaged breast
    has_des: bool
    late_phase: bool
    high_energy: bool
    style: str  # "ge" or "standard" Image Type values
    photometric: str
    transfer_syntax: str  # "explicit", "jpeg2000" or "jpegls"
    file_suffix: str  # ".dcm" or "" (PACS exports often have none)
    age: int


def _labels(seed: int, n_cases: int) -> list[str]:
    """About 70 % malignant, at least one benign once there are two cases, shuffled."""
    n_benign = max(1, round((1 - MALIGNANT_SHARE) * n_cases)) if n_cases >= 2 else 0
    labels = ["benign"] * n_benign + ["malignant"] * (n_cases - n_benign)
    np.random.default_rng([seed, 0x1AB]).shuffle(labels)
    return labels


def _densities(seed: int, patients: int) -> list[str]:
    """ACR categories: the first four patients cover a–d, the rest follow typical shares."""
    rng = np.random.default_rng([seed, 0xACE])
    first = list(rng.permutation(ACR_CATEGORIES))[: min(4, patients)]
    rest = rng.choice(ACR_CATEGORIES, size=max(0, patients - 4), p=list(ACR_WEIGHTS.values()))
    return [str(category) for category in [*first, *rest]]


def plan_cohort(patients: int, seed: int) -> list[PatientPlan]:
    """Per-patient plans; every variant appears in a cohort of eight or more patients.

    >>> plans = plan_cohort(8, seed=1)
    >>> sorted({plan.acr_density for plan in plans})
    ['a', 'b', 'c', 'd']
    >>> any(not plan.has_des for plan in plans), any(len(plan.cases) == 2 for plan in plans)
    (True, True)
    """
    if patients < 1:
        raise ValueError("a cohort needs at least one patient")
    bilateral = [index % 4 == 1 for index in range(patients)]
    labels = iter(_labels(seed, patients + sum(bilateral)))
    densities = _densities(seed, patients)
    plans = []
    for index in range(patients):
        rng = np.random.default_rng([seed, index, 0x9A7])
        first_side = Laterality.L if rng.random() < 0.5 else Laterality.R
        sides = (Laterality.L, Laterality.R) if bilateral[index] else (first_side,)
        has_des = index % 7 != 5
        style = "ge" if index % 2 == 0 else "standard"
        plans.append(
            PatientPlan(
                number=index + 1,
                acr_density=densities[index],
                cases=tuple((side, next(labels)) for side in sides),
                has_des=has_des,
                late_phase=has_des and index % 5 == 2,
                high_energy=style == "ge" and index % 3 == 0,
                style=style,
                photometric="MONOCHROME1" if index % 6 == 3 else "MONOCHROME2",
                transfer_syntax={2: "jpeg2000", 3: "jpegls"}.get(index % 4, "explicit"),
                file_suffix="" if index % 5 == 4 else ".dcm",
                age=int(rng.integers(35, 80)),
            )
        )
    return plans


def render_patient(plan: PatientPlan, seed: int, size: str) -> list[RenderedBreast]:
    """The rendered breasts of one patient (deterministic in ``seed`` and the plan)."""
    breasts = []
    for case_index, (laterality, label) in enumerate(plan.cases):
        rng = np.random.default_rng([seed, plan.number, case_index])
        breasts.append(
            render_breast(
                rng,
                label,
                plan.acr_density,
                size,
                laterality,
                late_phase=plan.late_phase,
                high_energy=plan.high_energy,
            )
        )
    return breasts
