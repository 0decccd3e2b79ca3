"""Import torchvision's pure-Python parts when its compiled ops do not match torch.

The registry's torchvision 0.28.0 is a CUDA build; with the CPU torch 2.13.0 its C
extension fails to register ``torchvision::nms`` and ``import torchvision`` raises
``RuntimeError: operator torchvision::nms does not exist``. Declaring the op schemas
and importing again lets the models and transforms import. ``torchvision.ops`` and
``torchvision.io`` stay unusable; this project does not use them. Where the real ops
load (a matching build), nothing is declared.
"""

from __future__ import annotations

import sys
import types

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library: torch.library.Library | None = None  # kept alive: dropping it unregisters the ops


def import_torchvision() -> types.ModuleType:
    """Return the ``torchvision`` module, declaring missing op schemas only when needed."""
    global _library
    try:
        import torchvision

        return torchvision
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    if _library is None:
        _library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _library.define(schema)
    import torchvision

    return torchvision
