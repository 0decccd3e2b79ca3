"""In-memory phantom exams: the four images of one breast (and extras), as numpy arrays.

This is the API other modules' tests and the training code use when they need CESM-like
images without files. Images are presentation-space float32 arrays in [0, 1] in DICOM
display orientation (right breast: chest wall on the image's right).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from VirtualBiopsyLib.phantom.anatomy import (
    PIXEL_SPACING_MM,
    build_view,
    draw_breast_shape,
    image_shape,
    to_display_orientation,
)
from VirtualBiopsyLib.phantom.enhancement import (
    ViewComponents,
    draw_bpe_level,
    draw_view_components,
    form_high_energy,
    form_low_energy,
    form_subtracted,
)
from VirtualBiopsyLib.phantom.lesion import LesionSpec, draw_lesion, draw_lesion_maps
from VirtualBiopsyLib.roles import VIEWS, Laterality, slot_name


@dataclass
class RenderedBreast:
    """One breast of a phantom exam with its ground truth.

    ``images`` holds the four slots (``LE_CC`` …); ``late_images`` the late-phase LE/DES of
    the CC view when asked for; ``high_energy`` the high-energy images per view when asked
    for. Masks are in display orientation like the images.
    """

    laterality: Laterality
    label: str
    acr_density: str
    bpe_level: str
    lesion: LesionSpec
    spacing_mm: float
    images: dict[str, np.ndarray]
    breast_masks: dict[str, np.ndarray]  # per view ("CC", "MLO")
    lesion_masks: dict[str, np.ndarray]  # per view
    glandular_fraction: dict[str, float]  # per view
    nipple_distance_mm: dict[str, float]  # lesion centre to nipple, per view
    late_images: dict[str, np.ndarray] = field(default_factory=dict)
    high_energy: dict[str, np.ndarray] = field(default_factory=dict)


def _as_rng(rng_or_seed: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def render_breast(
    rng_or_seed: np.random.Generator | int,
    label: str,
    acr_density: str,
    size: str = "small",
    laterality: Laterality | str = Laterality.L,
    *,
    late_phase: bool = False,
    high_energy: bool = False,
) -> RenderedBreast:
    """Render LE and DES, CC and MLO, of one breast with a lesion of ``label``.

    >>> breast = render_breast(7, "malignant", "b")
    >>> sorted(breast.images), breast.images["LE_CC"].shape
    (['DES_CC', 'DES_MLO', 'LE_CC', 'LE_MLO'], (356, 299))
    """
    rng = _as_rng(rng_or_seed)
    laterality = Laterality(laterality)
    shape_rc, spacing = image_shape(size), PIXEL_SPACING_MM[size]
    breast_shape = draw_breast_shape(rng, acr_density)
    lesion = draw_lesion(rng, label)
    bpe_level = draw_bpe_level(rng, acr_density)
    result = RenderedBreast(
        laterality,
        label,
        acr_density,
        bpe_level,
        lesion,
        spacing,
        images={},
        breast_masks={},
        lesion_masks={},
        glandular_fraction={},
        nipple_distance_mm={},
    )
    for view in VIEWS:
        anatomy = build_view(rng, breast_shape, view, shape_rc, spacing)
        maps = draw_lesion_maps(lesion, anatomy)
        components = draw_view_components(rng, anatomy, lesion, maps, bpe_level)
        _form_view(result, components, rng, late_phase, high_energy)
    return result


def _form_view(
    result: RenderedBreast,
    components: ViewComponents,
    rng: np.random.Generator,
    late_phase: bool,
    high_energy: bool,
) -> None:
    """Form the images of one view and store them, flipped to display orientation."""
    anatomy, view = components.anatomy, components.anatomy.view

    def show(array: np.ndarray) -> np.ndarray:
        return to_display_orientation(array, result.laterality)

    low_energy = form_low_energy(components, rng)
    subtracted = form_subtracted(components, rng)
    result.images[slot_name("LE", view)] = show(low_energy)
    result.images[slot_name("DES", view)] = show(subtracted)
    result.breast_masks[view.value] = show(anatomy.breast_mask)
    result.lesion_masks[view.value] = show(components.lesion_maps.mask)
    result.glandular_fraction[view.value] = anatomy.glandular_fraction
    centre = components.lesion_maps.centre_rc
    distance_px = float(
        np.hypot(centre[0] - anatomy.nipple_rc[0], centre[1] - anatomy.nipple_rc[1])
    )
    result.nipple_distance_mm[view.value] = distance_px * anatomy.spacing_mm
    if late_phase and view.value == "CC":
        result.late_images[slot_name("LE", view)] = show(form_low_energy(components, rng))
        result.late_images[slot_name("DES", view)] = show(
            form_subtracted(components, rng, phase="late")
        )
    if high_energy:
        result.high_energy[view.value] = show(form_high_energy(low_energy, subtracted))


def render_exam(
    rng_or_seed: np.random.Generator | int,
    label: str,
    acr_density: str,
    size: str = "small",
    laterality: Laterality | str = Laterality.L,
) -> dict[str, np.ndarray]:
    """The four slot images (``LE_CC``, ``LE_MLO``, ``DES_CC``, ``DES_MLO``) of one breast.

    >>> images = render_exam(0, "benign", "d")
    >>> sorted(images) == ["DES_CC", "DES_MLO", "LE_CC", "LE_MLO"]
    True
    >>> float(images["LE_CC"].min()) >= 0.0 and float(images["LE_CC"].max()) <= 1.0
    True
    """
    return render_breast(rng_or_seed, label, acr_density, size, laterality).images
