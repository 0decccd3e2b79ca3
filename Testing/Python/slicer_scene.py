"""A fresh MRML scene as the Slicer tests need it (slicer-core's real scene, no app).

``slicer.util`` helpers read the global ``slicer.mrmlScene``, so it is replaced; the colour
logic gives display nodes Slicer's default grey table; with ``slice_views`` the scene gets
the slice composite nodes of the app's 2×2 layout (Red, Slice4, Green, Yellow), which the
module's view code fills.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import slicer

from VirtualBiopsyLib.slicer import bridge


@contextlib.contextmanager
def fresh_scene(slice_views: bool = False) -> Iterator[Any]:
    """The new global scene for the block; cleared afterwards."""
    slicer.mrmlScene = slicer.vtkMRMLScene()
    color_logic = slicer.vtkMRMLColorLogic()
    color_logic.SetMRMLScene(slicer.mrmlScene)
    if slice_views:
        for view in bridge.VIEW_SLOTS:
            slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceCompositeNode").SetLayoutName(view)
    try:
        yield slicer.mrmlScene
    finally:
        color_logic.SetMRMLScene(None)
        slicer.mrmlScene.Clear(True)
