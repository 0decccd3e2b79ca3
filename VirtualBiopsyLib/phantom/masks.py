"""The phantom's lesion masks on disk: one PNG per written image of a breast with a lesion.

Training's lesion-region metrics need to know where the lesion is in each image; the
phantom knows it exactly (its truth mask), so it writes it beside the images, on each
image's own pixel grid (the array the library's reader returns for the file: the phantom
writes images in display orientation without resampling, so the truth mask is that grid).
Masks go to ``synthetic_lesion_masks/``, mirroring the image's relative path, named
``<image name without .dcm/.jpg>_lesion_mask.png``: 8-bit, 0 outside and 255 inside,
with PNG text chunks saying they are synthetic.

>>> lesion_mask_relative("dicom/PHANTOM-0001/IM0001.dcm")
'synthetic_lesion_masks/dicom/PHANTOM-0001/IM0001_lesion_mask.png'
>>> lesion_mask_relative("Subtracted images of CDD-CESM/P1_L_CM_CC .jpg")
'synthetic_lesion_masks/Subtracted images of CDD-CESM/P1_L_CM_CC _lesion_mask.png'
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from VirtualBiopsyLib import SYNTHETIC_NOTICE
from VirtualBiopsyLib.phantom.exam import RenderedBreast
from VirtualBiopsyLib.training_manifest import LESION_MASK_FOLDERS, write_lesion_mask
from VirtualBiopsyLib.training_manifest import lesion_mask_relative as manifest_mask_relative

LESION_MASKS_FOLDER = LESION_MASK_FOLDERS[1]  # "synthetic_": the phantom's, never a user's


def lesion_mask_relative(image_relative: str) -> str:
    """Where the mask of the image at ``image_relative`` goes (relative to the cohort)."""
    return manifest_mask_relative(image_relative, LESION_MASKS_FOLDER)


def breast_lesion_mask(breast: RenderedBreast, view: str) -> np.ndarray | None:
    """The truth mask of ``view`` (display orientation), or None for a breast without lesion."""
    mask = breast.lesion_masks[view]
    if breast.label == "normal" or not mask.any():
        return None
    return mask


#: PNG text chunks of the phantom's masks: who wrote them, and that they are synthetic.
PHANTOM_MASK_NOTES = {
    "Software": "VirtualBiopsy phantom (synthetic)",
    "Comment": f"Lesion mask of a synthetic phantom image. {SYNTHETIC_NOTICE}",
}


def write_breast_lesion_mask(
    out_dir: Path, image_relative: str, breast: RenderedBreast, view: str
) -> Path | None:
    """Write the mask of one written image of ``breast``; None (nothing written) without lesion."""
    mask = breast_lesion_mask(breast, view)
    if mask is None:
        return None
    return write_lesion_mask(
        out_dir / lesion_mask_relative(image_relative), mask, PHANTOM_MASK_NOTES
    )
