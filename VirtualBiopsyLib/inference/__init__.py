"""Inference: the virtual biopsy of a case, its saliency maps, result files and report.

Names are loaded on first use (torch comes with :class:`Pipeline` only), so reading a
``result.json`` or drawing a report needs no torch. The pipeline returns plain records
(:class:`CaseResult`); the output layer (:func:`write_case`, :class:`OutputFolder`)
writes them.

>>> from VirtualBiopsyLib.inference import Pipeline, predict_paths  # doctest: +SKIP
>>> run = predict_paths([Path("exam")], Path("out"))                 # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Pipeline": "VirtualBiopsyLib.inference.pipeline",
    "CaseResult": "VirtualBiopsyLib.inference.result",
    "FoldStats": "VirtualBiopsyLib.inference.result",
    "read_result_json": "VirtualBiopsyLib.inference.result",
    "write_case": "VirtualBiopsyLib.inference.output",
    "OutputFolder": "VirtualBiopsyLib.inference.output",
    "predict_paths": "VirtualBiopsyLib.inference.runner",
    "gather_cases": "VirtualBiopsyLib.inference.runner",
    "grad_cam": "VirtualBiopsyLib.inference.saliency",
    "render_report": "VirtualBiopsyLib.inference.report",
    "JsonLinesProgress": "VirtualBiopsyLib.inference.progress",
    "CallbackProgress": "VirtualBiopsyLib.inference.progress",
    "ProgressReporter": "VirtualBiopsyLib.inference.progress",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'VirtualBiopsyLib.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
