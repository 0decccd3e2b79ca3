"""Render the extension's catalog screenshot: the 2×2 slice views after a demo-model run.

Uses the real MRML scene and slice logics from slicer-core (no Slicer application, no
OpenGL), the library's Slicer logic and the bundled demo model on the Sample Data phantom
exam with its DES MLO left out (so a synthetic image shows). The four views are placed
where Slicer's TwoOverTwo layout puts them (top Red | Slice4, bottom Green | Yellow, taken
from slicer-core's own vtkMRMLLayoutLogic) and fitted by the logic, as in the app.
Run from the repository root:

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

from VirtualBiopsyLib.slicer import bridge
from VirtualBiopsyLib.slicer.logic import RunOptions, VirtualBiopsyLogic
from VirtualBiopsyLib.slicer.sample_data import load_sample_exam

OUTPUT = Path("VirtualBiopsy/Resources/Screenshots/VirtualBiopsy-views.png")
CAPTION = "Synthetic phantom case, demo model (synthetic training data) - research use only"
GAP = 6


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
    nodes = load_sample_exam(scene, work / "phantom")
    scene.RemoveNode(nodes.pop("DES_MLO"))  # missing: the module synthesizes it
    VirtualBiopsyLogic(
        scene, work_root=work / "run", fit_view=bridge.slice_logic_fitter(logics)
    ).run(nodes, RunOptions(python=sys.executable))
    tiles = {view: _render(scene, logic, work / f"{view}.png") for view, logic in logics.items()}
    width, height = next(iter(tiles.values())).size
    sheet = Image.new("RGB", (2 * width + GAP, 2 * height + GAP + 30), (30, 30, 30))
    for view, tile in tiles.items():
        row, column = bridge.VIEW_POSITIONS[view]
        sheet.paste(tile, (column * (width + GAP), row * (height + GAP)))
    ImageDraw.Draw(sheet).text((6, 2 * height + 16), CAPTION, fill=(255, 255, 255))
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(OUTPUT, optimize=True)
    print(f"wrote {OUTPUT} {sheet.size}")


def _render(scene: slicer.vtkMRMLScene, logic: slicer.vtkMRMLSliceLogic, path: Path) -> Image:
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
