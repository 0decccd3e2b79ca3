"""Importers: real data sets in, a training manifest out (``virtual-biopsy-train import``).

- :mod:`~Training.importers.cdd_cesm` — the public CDD-CESM set as downloaded (JPEG folders
  and the radiologists' annotation sheet);
- :mod:`~Training.importers.dicom_exams` — a hospital's CESM DICOM exams in any folder
  layout, joined with a clinical sheet (:mod:`~Training.importers.clinical_sheet`);
- :mod:`~Training.importers.segmentations` — CDD-CESM's hand-drawn lesion regions (a VIA
  CSV), drawn into lesion masks by :mod:`~Training.importers.masks` in a folder beside
  the manifest;
- :mod:`~Training.importers.summary` — what was imported and every image or row left out,
  with the reason, on stdout (patient IDs masked) and in a JSON file beside the manifest.

Roles of images come from the library's readers (the code ``virtual-biopsy inspect``
runs); the manifest format is :mod:`VirtualBiopsyLib.training_manifest`.
"""
