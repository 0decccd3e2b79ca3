"""Synthetic CESM cohort generator (the phantom): a deterministic test fixture and demo.

No real CESM data can reach the project's machines, so the phantom makes exams that look
and behave enough like CESM to exercise every code path: in memory (:func:`render_exam`,
:func:`render_breast`) or on disk as DICOM or the CDD-CESM JPEG layout
(:func:`generate_cohort`). Everything it makes is synthetic and says so; figures computed
on it are not evidence of clinical performance (``VirtualBiopsyLib.SYNTHETIC_NOTICE``).

>>> from VirtualBiopsyLib.phantom import render_exam
>>> render_exam(0, "malignant", "c")["DES_CC"].shape
(356, 299)
"""

from __future__ import annotations

from VirtualBiopsyLib.phantom.cohort import generate_cohort
from VirtualBiopsyLib.phantom.exam import RenderedBreast, render_breast, render_exam

__all__ = ["RenderedBreast", "generate_cohort", "render_breast", "render_exam"]
