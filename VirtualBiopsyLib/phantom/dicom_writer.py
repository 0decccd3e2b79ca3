"""Write phantom images as Digital Mammography X-Ray Image – For Presentation DICOM files.

The headers imitate what real CESM exams carry (GE-style and DICOM CP-1342 Image Type
values, GEMS_CESM_1 processing code, clinical window settings, 14-bit stored values,
MONOCHROME1 variants, compressed transfer syntaxes) and pass the ``dciodvfy`` IOD
validator. Every file says it is a synthetic phantom (patient name ``PHANTOM^0001``,
series description, image comments).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    generate_uid,
)

from VirtualBiopsyLib import SYNTHETIC_NOTICE, __version__
from VirtualBiopsyLib.phantom.files import write_atomically
from VirtualBiopsyLib.roles import Laterality, View

MAX_STORED = 2**14 - 1  # 14-bit stored values, as GE writes them
UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root for generated UIDs
TRANSFER_SYNTAXES = {
    "explicit": ExplicitVRLittleEndian,
    "jpeg2000": JPEG2000Lossless,
    "jpegls": JPEGLSLossless,
}
VIEW_CODES: dict[View, tuple[str, str]] = {  # DICOM CID 4014, SNOMED CT
    View.CC: ("399162004", "cranio-caudal"),
    View.MLO: ("399368009", "medio-lateral oblique"),
}
BREAST_CODE = ("76752008", "Breast")  # SNOMED CT, DICOM CID 4031
#: Patient Orientation (row direction, column direction) per laterality and view.
PATIENT_ORIENTATION: dict[tuple[Laterality, View], list[str]] = {
    (Laterality.L, View.CC): ["A", "R"],
    (Laterality.R, View.CC): ["P", "L"],
    (Laterality.L, View.MLO): ["A", "F"],
    (Laterality.R, View.MLO): ["P", "F"],
}
ENERGIES = ("LE", "DES", "HE")


def phantom_uid(*parts: object) -> str:
    """A UID derived only from ``parts`` (seed, patient, …), so cohorts are reproducible."""
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(part) for part in parts])


def image_type(energy: str, style: str, contrast_value3: bool = False) -> list[str]:
    """Image Type values of a CESM image in the GE style or the DICOM CP-1342 style.

    The standard style uses value 4 (SUBTRACTION) and value 5 (LOW_ENERGY/HIGH_ENERGY).
    Value 3 (POST_CONTRAST) is written only when ``contrast_value3`` is true: ``dciodvfy``
    of dicom3tools 1.00~20220618 (Debian) still reports it as an error for Digital
    Mammography, so by default value 3 stays empty, as in files older than CP-1342.

    >>> image_type("DES", "ge")
    ['DERIVED', 'PRIMARY', '', 'RECOMBINED']
    >>> image_type("LE", "standard")
    ['ORIGINAL', 'PRIMARY', '', '', 'LOW_ENERGY']
    """
    if style == "ge":
        return {
            "LE": ["ORIGINAL", "PRIMARY", "", "LOW_ENERGY"],
            "DES": ["DERIVED", "PRIMARY", "", "RECOMBINED"],
            "HE": ["ORIGINAL", "PRIMARY", "", "HIGH_ENERGY"],
        }[energy]
    contrast = "POST_CONTRAST" if contrast_value3 else ""
    return {
        "LE": ["ORIGINAL", "PRIMARY", contrast, "", "LOW_ENERGY"],
        "DES": ["DERIVED", "PRIMARY", contrast, "SUBTRACTION"],
        "HE": ["ORIGINAL", "PRIMARY", contrast, "", "HIGH_ENERGY"],
    }[energy]


@dataclass(frozen=True)
class DicomImageSpec:
    """The header of one phantom DICOM file (identity, role, encoding, window)."""

    patient_number: int
    study_uid: str
    series_uid: str
    sop_uid: str
    frame_of_reference_uid: str
    study_date: str  # YYYYMMDD
    study_time: str  # HHMMSS
    acquisition_time: str  # HHMMSS; late-phase images are later
    series_number: int
    instance_number: int
    laterality: Laterality
    view: View
    energy: str  # "LE", "DES" or "HE"
    phase: str  # "early" or "late"
    style: str  # "ge" or "standard"
    photometric: str  # "MONOCHROME2" or "MONOCHROME1"
    transfer_syntax: str  # a key of TRANSFER_SYNTAXES
    window_center: float
    window_width: float
    spacing_mm: float
    patient_age: int
    contrast_value3: bool = False  # POST_CONTRAST in Image Type value 3 (standard style)

    @property
    def patient_id(self) -> str:
        return f"PHANTOM-{self.patient_number:04d}"

    @property
    def patient_name(self) -> str:
        return f"PHANTOM^{self.patient_number:04d}"


def to_stored_values(presentation: np.ndarray, spec: DicomImageSpec) -> np.ndarray:
    """Map presentation values in [0, 1] to 14-bit stored values through the window.

    Applying the file's window (and the MONOCHROME1 inversion) gives back ``presentation``.
    """
    shown = presentation if spec.photometric == "MONOCHROME2" else 1.0 - presentation
    lower = spec.window_center - spec.window_width / 2.0
    stored = np.rint(lower + shown * spec.window_width)
    return np.clip(stored, 0, MAX_STORED).astype(np.uint16)


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    return item


def _add_patient_and_study(ds: Dataset, spec: DicomImageSpec) -> None:
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.PatientAge = f"{spec.patient_age:03d}Y"
    ds.PatientIdentityRemoved = "NO"
    ds.StudyInstanceUID = spec.study_uid
    ds.StudyDate, ds.StudyTime = spec.study_date, spec.study_time
    ds.StudyID = f"PH{spec.patient_number:04d}"
    ds.AccessionNumber = f"PHANTOM{spec.patient_number:05d}"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CESM synthetic phantom"


def _add_series_and_equipment(ds: Dataset, spec: DicomImageSpec) -> None:
    ds.Modality = "MG"
    ds.SeriesInstanceUID = spec.series_uid
    ds.SeriesNumber = spec.series_number
    ds.SeriesDescription = f"SYNTHETIC PHANTOM CESM {spec.energy} {spec.phase}"
    ds.BodyPartExamined = "BREAST"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.FrameOfReferenceUID = spec.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "VirtualBiopsy phantom"
    ds.ManufacturerModelName = "Synthetic CESM phantom"
    ds.DeviceSerialNumber = "PHANTOM"
    ds.SoftwareVersions = __version__
    ds.InstitutionName = "Synthetic data"
    ds.AcquisitionDeviceProcessingDescription = "CESM"
    ds.AcquisitionDeviceProcessingCode = "GEMS_CESM_1"


def _add_image(ds: Dataset, spec: DicomImageSpec) -> None:
    ds.ImageType = image_type(spec.energy, spec.style, spec.contrast_value3)
    ds.InstanceNumber = spec.instance_number
    ds.PatientOrientation = PATIENT_ORIENTATION[(spec.laterality, spec.view)]
    ds.ContentDate, ds.ContentTime = spec.study_date, spec.acquisition_time
    ds.AcquisitionDate, ds.AcquisitionTime = spec.study_date, spec.acquisition_time
    ds.AcquisitionDateTime = spec.study_date + spec.acquisition_time
    ds.ImageComments = f"Synthetic phantom image, not a patient. {SYNTHETIC_NOTICE}"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"
    ds.QualityControlImage = "NO"
    if spec.energy == "DES":
        ds.DerivationDescription = "Dual-energy recombination of LE and HE (synthetic)"
    ds.ImageLaterality = spec.laterality.value
    ds.AnatomicRegionSequence = Sequence([_code(*BREAST_CODE)])
    view_item = _code(*VIEW_CODES[spec.view])
    view_item.ViewModifierCodeSequence = Sequence([])
    ds.ViewCodeSequence = Sequence([view_item])
    ds.ViewPosition = spec.view.value
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1 if spec.photometric == "MONOCHROME2" else 1
    ds.PresentationLUTShape = "IDENTITY" if spec.photometric == "MONOCHROME2" else "INVERSE"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.WindowCenter = f"{spec.window_center:.0f}"
    ds.WindowWidth = f"{spec.window_width:.0f}"
    ds.WindowCenterWidthExplanation = "NORMAL"
    ds.VOILUTFunction = "LINEAR"
    ds.CalibrationImage = "NO"
    ds.AcquisitionContextSequence = Sequence([])


def _add_acquisition(ds: Dataset, spec: DicomImageSpec) -> None:
    high = spec.energy == "HE"
    ds.DetectorType = "DIRECT"
    ds.DetectorConfiguration = "AREA"
    ds.DetectorID = "PHANTOM"
    ds.ImagerPixelSpacing = [spec.spacing_mm, spec.spacing_mm]
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.PositionerPrimaryAngle = (
        0 if spec.view is View.CC else (45 if spec.laterality is Laterality.R else -45)
    )
    ds.OrganExposed = "BREAST"
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.KVP = 45 if high else 29
    ds.ExposureTime = 900
    ds.XRayTubeCurrent = 80
    ds.AnodeTargetMaterial = "RHODIUM" if high else "MOLYBDENUM"
    ds.FilterMaterial = "COPPER" if high else "RHODIUM"
    ds.BodyPartThickness = 55
    ds.CompressionForce = 110
    ds.DistanceSourceToDetector = 660
    ds.DistanceSourceToPatient = 620
    ds.ContrastBolusAgent = "Iodinated contrast (synthetic)"


def _add_private_view(ds: Dataset, spec: DicomImageSpec) -> None:
    """GE's clinical view string (e.g. ``LCC``) in private tag (0045,101B)."""
    if spec.style != "ge":
        return
    block = ds.private_block(0x0045, "GEMS_SENO_02", create=True)
    block.add_new(0x1B, "LO", f"{spec.laterality.value}{spec.view.value}")


def build_dataset(presentation: np.ndarray, spec: DicomImageSpec) -> Dataset:
    """The DICOM dataset of one phantom image (pixels compressed as ``spec`` asks)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = spec.sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.SOPInstanceUID = spec.sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = spec.study_date, spec.acquisition_time
    _add_patient_and_study(ds, spec)
    _add_series_and_equipment(ds, spec)
    _add_image(ds, spec)
    _add_acquisition(ds, spec)
    _add_private_view(ds, spec)
    stored = to_stored_values(presentation, spec)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = spec.photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 14, 13, 0
    ds.PixelData = stored.tobytes()
    syntax = TRANSFER_SYNTAXES[spec.transfer_syntax]
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, stored, generate_instance_uid=False)
    return ds


def write_dicom(path: Path, presentation: np.ndarray, spec: DicomImageSpec) -> Path:
    """Write one phantom image to ``path`` atomically."""
    dataset = build_dataset(presentation, spec)
    return write_atomically(path, lambda temp: dataset.save_as(temp, enforce_file_format=True))
