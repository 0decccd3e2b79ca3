"""How a 2-D volume node's array maps to the picture a slice view shows.

Slicer shows a single-slice volume in the axial (Red) view with patient Right on the
screen's left and Anterior at the top. So screen-right is RAS -x and screen-down is RAS
-y. A mammogram loaded from DICOM or PNG gets IJK-to-RAS directions diag(-1, -1, 1) and
its array rows are already the picture; a node made with an identity matrix is shown
mirrored. :class:`PictureOrientation` turns any axis-aligned node array into the picture
the user sees, and back, so exported files and imported maps never come out mirrored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from VirtualBiopsyLib.errors import ImageError

#: IJK-to-RAS directions of a picture whose array rows run top to bottom: i → L, j → P.
PICTURE_DIRECTIONS = np.diag([-1.0, -1.0, 1.0])
_SCREEN_RIGHT = np.array([-1.0, 0.0, 0.0])
_SCREEN_DOWN = np.array([0.0, -1.0, 0.0])


@dataclass(frozen=True)
class PictureOrientation:
    """Array operations from a node's (j, i) array to the (row, column) picture."""

    transpose: bool = False
    flip_rows: bool = False
    flip_columns: bool = False

    def to_picture(self, array: np.ndarray) -> np.ndarray:
        """Node array (j, i) → picture (row, column) as the slice view shows it."""
        picture = array.T if self.transpose else array
        if self.flip_rows:
            picture = picture[::-1, :]
        if self.flip_columns:
            picture = picture[:, ::-1]
        return np.ascontiguousarray(picture)

    def from_picture(self, picture: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_picture`, for maps computed on the exported picture."""
        array = picture
        if self.flip_columns:
            array = array[:, ::-1]
        if self.flip_rows:
            array = array[::-1, :]
        return np.ascontiguousarray(array.T if self.transpose else array)


def ijk_to_ras_directions(volume_node: Any) -> np.ndarray:
    """3×3 unit direction columns (i, j, k) of a volume node, as numpy."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASDirectionMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(3)] for r in range(3)])


def picture_orientation(volume_node: Any) -> PictureOrientation:
    """How to read a node's array as the picture; refuses oblique (rotated) volumes."""
    directions = ijk_to_ras_directions(volume_node)
    i_axis, j_axis = directions[:, 0], directions[:, 1]
    transpose = abs(float(j_axis @ _SCREEN_RIGHT)) > abs(float(i_axis @ _SCREEN_RIGHT))
    column_axis, row_axis = (j_axis, i_axis) if transpose else (i_axis, j_axis)
    right, down = float(column_axis @ _SCREEN_RIGHT), float(row_axis @ _SCREEN_DOWN)
    if min(abs(right), abs(down)) < 0.99:
        raise ImageError(
            volume_node.GetName(),
            "the image plane is rotated; VirtualBiopsy needs an axis-aligned 2-D mammogram",
        )
    return PictureOrientation(transpose, flip_rows=down < 0, flip_columns=right < 0)


def picture_from_node(volume_node: Any) -> tuple[np.ndarray, tuple[float, float]]:
    """The picture (rows × columns) a 2-D volume node shows, and its (row, column) mm spacing.

    >>> import numpy, slicer
    >>> node = slicer.vtkMRMLScene().AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    >>> slicer.util.updateVolumeFromArray(node, numpy.arange(6.0).reshape(1, 2, 3))
    >>> picture_from_node(node)[0].tolist()  # identity matrix: the view shows it mirrored
    [[5.0, 4.0, 3.0], [2.0, 1.0, 0.0]]
    """
    import slicer.util

    if volume_node.GetImageData() is None:
        raise ImageError(volume_node.GetName(), "the volume has no image data")
    array = slicer.util.arrayFromVolume(volume_node)
    if array.ndim != 3 or array.shape[0] != 1:
        raise ImageError(
            volume_node.GetName(),
            f"expected one 2-D image (1 slice), got an array of shape {tuple(array.shape)}: "
            "a series of several images loads as one stacked volume; load it from Slicer's "
            "DICOM database (each image is then read from its own file) or load the images "
            "as separate files",
        )
    orientation = picture_orientation(volume_node)
    spacing_i, spacing_j, _ = volume_node.GetSpacing()
    spacing = (spacing_i, spacing_j) if orientation.transpose else (spacing_j, spacing_i)
    return orientation.to_picture(array[0]), (float(spacing[0]), float(spacing[1]))


def set_picture_geometry(volume_node: Any, spacing_rc: tuple[float, float]) -> None:
    """Give a node built from a picture array the directions that show it unmirrored."""
    volume_node.SetSpacing(float(spacing_rc[1]), float(spacing_rc[0]), 1.0)
    volume_node.SetOrigin(0.0, 0.0, 0.0)
    volume_node.SetIJKToRASDirections(*(float(v) for v in PICTURE_DIRECTIONS.flatten()))
