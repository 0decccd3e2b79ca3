"""Render the extension's catalog screenshot: the 2×2 slice views after a demo-model run.

Uses the real MRML scene and slice logics from slicer-core (no Slicer application, no
OpenGL), the library's Slicer logic and the bundled demo model on a phantom case whose
DES MLO is missing (so a synthetic image shows). Run from the repository root:

    .venv/bin/python Utilities/make_screenshot.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import slicer
import slicer.util
import vtk
from PIL import Image, ImageDraw

from VirtualBiopsyLib.inference.fixtures import write_slot_folder
from VirtualBiopsyLib.slicer import bridge
from VirtualBiopsyLib.slicer.logic import RunOptions, VirtualBiopsyLogic

OUTPUT = Path("VirtualBiopsy/Resources/Screenshots/VirtualBiopsy-views.png")
CAPTION = "Synthetic phantom case, demo model (synthetic training data) - research use only"


def main() -> None:
    work = Path(tempfile.mkdtemp())
    slicer.mrmlScene = scene = slicer.vtkMRMLScene()
    color_logic = slicer.vtkMRMLColorLogic()  # keep references: they must outlive rendering
    color_logic.SetMRMLScene(scene)
    application_logic = slicer.vtkMRMLApplicationLogic()
    application_logic.SetMRMLScene(scene)
    logics = {}
    for view in bridge.VIEW_SLOTS:
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        node = logic.AddSliceNode(view)
        node.SetOrientationToAxial()
        node.SetDimensions(320, 320, 1)
        logics[view] = logic
    slots = ("LE_CC", "LE_MLO", "DES_CC")
    phantom = write_slot_folder(work / "phantom", list(slots), laterality="L", size="small")
    for slot in slots:
        picture, spacing = bridge.read_picture_nrrd(phantom / f"{slot}.nrrd")
        node = bridge.add_picture_volume(scene, picture, spacing, f"P1_L_{slot}", None)
        node.RemoveAttribute("VirtualBiopsy.Result")
    VirtualBiopsyLogic(scene, work_root=work / "run").run(options=RunOptions(python=sys.executable))
    tiles = [_render(scene, logic, work / f"{view}.png") for view, logic in logics.items()]
    width, height = tiles[0].size
    sheet = Image.new("RGB", (2 * width + 6, 2 * height + 36), (30, 30, 30))
    for index, tile in enumerate(tiles):
        sheet.paste(tile, ((index % 2) * (width + 6), (index // 2) * (height + 6)))
    ImageDraw.Draw(sheet).text((6, 2 * height + 16), CAPTION, fill=(255, 255, 255))
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(OUTPUT, optimize=True)
    print(f"wrote {OUTPUT} {sheet.size}")


def _render(scene: slicer.vtkMRMLScene, logic: slicer.vtkMRMLSliceLogic, path: Path) -> Image:
    logic.FitSliceToAll()
    writer = vtk.vtkPNGWriter()
    writer.SetInputConnection(logic.GetImageDataConnection())
    writer.SetFileName(str(path))
    writer.Write()
    tile = Image.open(path).convert("RGB")
    background = scene.GetNodeByID(logic.GetSliceCompositeNode().GetBackgroundVolumeID())
    name = background.GetName() if background else ""
    colour = (255, 230, 0) if "SYNTHETIC" in name else (255, 255, 255)
    ImageDraw.Draw(tile).text((6, 6), name, fill=colour)
    return tile


if __name__ == "__main__":
    main()
