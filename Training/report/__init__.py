"""``virtual-biopsy-train report``: a study report with intervals, paired tests, calibration.

Statistics (:mod:`.bootstrap`, :mod:`.roc`, :mod:`.delong`, :mod:`.calibration`) are
plain numpy/SciPy; the report itself is built by :mod:`.build`.
"""
