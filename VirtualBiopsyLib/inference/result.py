"""The result of one case's virtual biopsy: a plain record and its ``result.json`` form.

A :class:`CaseResult` holds the numbers (per image, per modality, fused, each with its
spread over the cross-validation folds), where every input came from (real, synthetic
or missing), and — in memory only — the pictures worth keeping (synthetic DES and
saliency maps). :meth:`CaseResult.to_dict` / :meth:`CaseResult.from_dict` convert to
and from the ``result.json`` content, whose shape is ``schemas/result.schema.json``;
:func:`read_result_json` reads and validates a file. Writing a case folder is the
output layer's job (:func:`VirtualBiopsyLib.inference.output.write_case`).

No torch here: the Slicer bridge reads results without loading the models.

>>> data = json.loads((Path("out") / "case-3f…-L" / RESULT_FILE).read_text())  # doctest: +SKIP
>>> CaseResult.from_dict(data).label                                          # doctest: +SKIP
'malignant'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from VirtualBiopsyLib import RESEARCH_USE_NOTICE, SYNTHETIC_NOTICE, __version__
from VirtualBiopsyLib.ensemble import FoldStats
from VirtualBiopsyLib.errors import ResultFileError
from VirtualBiopsyLib.inference.pictures import SlotPicture
from VirtualBiopsyLib.roles import SLOTS, Slot, Source

RESULT_FORMAT_VERSION = 1
RESULT_FILE = "result.json"
RESULT_SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "result.schema.json"
MAX_RESULT_BYTES = 16 * 1024 * 1024  # a result.json is a few kB; refuse anything absurd
DEMO_MODEL_WARNING = (
    "DEMO MODEL: trained on synthetic phantom data only. Its numbers mean nothing "
    "about real patients."
)

__all__ = [
    "DEMO_MODEL_WARNING",
    "RESULT_FILE",
    "CaseResult",
    "FoldStats",
    "InputRecord",
    "ModelInfo",
    "read_result_json",
    "validate_result",
]


@dataclass(frozen=True)
class InputRecord:
    """Where one slot's image came from: a real file, synthesized from LE, or missing."""

    source: Source
    path: str | None = None
    generated_from: str | None = None  # the LE slot a synthetic DES was made from

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.value,
            "path": self.path,
            "generated_from": self.generated_from,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputRecord:
        return cls(Source(data["source"]), data.get("path"), data.get("generated_from"))


@dataclass(frozen=True)
class ModelInfo:
    """Which model package produced a result (its model.json hash identifies it)."""

    name: str
    version: str
    architecture: str
    sha256: str
    is_demo: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "architecture": self.architecture,
            "sha256": self.sha256,
            "is_demo": self.is_demo,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        return cls(
            str(data["name"]),
            str(data["version"]),
            str(data["architecture"]),
            str(data["sha256"]),
            bool(data["is_demo"]),
        )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class CaseResult:
    """Everything one case's virtual biopsy produced (see ``docs/interfaces.md``).

    ``pictures``, ``saliency`` and ``source_dicom`` live in memory only (the output layer
    writes them as files and lists the files in ``outputs``); everything else is in
    ``result.json``.

    >>> result = pipeline.run(case)                                 # doctest: +SKIP
    >>> result.label, round(result.fused.mean, 2)                   # doctest: +SKIP
    ('malignant', 0.81)
    >>> write_case(result, Path("out"))                             # doctest: +SKIP
    PosixPath('out/case-3f9c…-L')
    """

    key: str
    patient_id: str | None
    study_uid: str | None
    laterality: str | None
    model: ModelInfo
    inputs: dict[str, InputRecord]
    image_probabilities: dict[str, FoldStats]
    modality_probabilities: dict[str, FoldStats]
    fused: FoldStats
    threshold: float
    weights: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    pictures: dict[str, SlotPicture] = field(default_factory=dict)
    saliency: dict[str, SlotPicture] = field(default_factory=dict)
    source_dicom: dict[str, Path] = field(default_factory=dict)
    created: str = field(default_factory=_now)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """'malignant' when the fused probability reaches the package threshold."""
        return "malignant" if self.fused.mean >= self.threshold else "benign"

    @property
    def missing(self) -> list[Slot]:
        return [slot for slot in SLOTS if self.inputs[slot].source is Source.MISSING]

    @property
    def synthetic_slots(self) -> list[Slot]:
        return [slot for slot in SLOTS if self.inputs[slot].source is Source.SYNTHETIC]

    def all_warnings(self) -> list[str]:
        """The run's warnings plus the ones every demo-model result must carry."""
        extra = [DEMO_MODEL_WARNING, SYNTHETIC_NOTICE] if self.model.is_demo else []
        return extra + [w for w in self.warnings if w not in extra]

    def to_dict(self) -> dict[str, Any]:
        """The result.json content (format version ``RESULT_FORMAT_VERSION``)."""
        return {
            "format_version": RESULT_FORMAT_VERSION,
            "notice": RESEARCH_USE_NOTICE,
            "case": {
                "key": self.key,
                "patient_id": self.patient_id,
                "study_uid": self.study_uid,
                "laterality": self.laterality,
            },
            "model": self.model.to_dict(),
            "inputs": {slot.value: self.inputs[slot].to_dict() for slot in SLOTS},
            "probabilities": {
                "images": {str(s): p.to_dict() for s, p in self.image_probabilities.items()},
                "modalities": {str(m): p.to_dict() for m, p in self.modality_probabilities.items()},
                "fused": self.fused.to_dict(),
            },
            "weights": self.weights,
            "settings": dict(self.settings),
            "missing": [slot.value for slot in self.missing],
            "label": self.label,
            "threshold": self.threshold,
            "outputs": dict(self.outputs),
            "warnings": self.all_warnings(),
            "software": {"name": "VirtualBiopsy", "version": __version__},
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        """The record of a ``result.json`` (numbers only: no pictures in memory).

        ``from_dict(r.to_dict()).to_dict() == r.to_dict()`` for every result we write.
        """
        probabilities = data["probabilities"]
        case = data.get("case") or {}
        return cls(
            key=str(case.get("key", "")),
            patient_id=case.get("patient_id"),
            study_uid=case.get("study_uid"),
            laterality=case.get("laterality"),
            model=ModelInfo.from_dict(data["model"]),
            inputs={Slot(s): InputRecord.from_dict(r) for s, r in data["inputs"].items()},
            image_probabilities={
                Slot(s): FoldStats.from_dict(p) for s, p in probabilities["images"].items()
            },
            modality_probabilities={
                str(m): FoldStats.from_dict(p) for m, p in probabilities["modalities"].items()
            },
            fused=FoldStats.from_dict(probabilities["fused"]),
            threshold=float(data["threshold"]),
            weights=list(data.get("weights", [])),
            settings=dict(data.get("settings", {})),
            warnings=list(data.get("warnings", [])),
            created=str(data.get("created", "")),
            outputs={str(k): str(v) for k, v in (data.get("outputs") or {}).items()},
        )


def result_schema() -> dict[str, Any]:
    """The JSON schema of ``result.json`` (``schemas/result.schema.json``)."""
    return json.loads(RESULT_SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_result(data: Any, path: Path | str = RESULT_FILE) -> dict[str, Any]:
    """Check ``data`` against the result schema; :class:`ResultFileError` names the
    first problem. Without ``jsonschema`` installed (a bare Slicer), only the schema's
    required top-level keys are checked.
    """
    if not isinstance(data, dict):
        raise ResultFileError(path, "result.json is not a JSON object")
    schema = result_schema()
    missing = [key for key in schema["required"] if key not in data]
    if missing:
        raise ResultFileError(path, f"result.json lacks {', '.join(missing)}")
    try:
        import jsonschema
    except ImportError:
        return data
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ResultFileError(path, f"result.json: schema violation at {where}: {error.message}")
    return data


def read_result_json(path: Path | str) -> dict[str, Any]:
    """Read and validate a ``result.json`` (or the case folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_FILE
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_RESULT_BYTES + 1)
    except OSError as error:
        raise ResultFileError(path, f"cannot read result: {error.strerror or error}") from error
    if len(raw) > MAX_RESULT_BYTES:
        raise ResultFileError(path, f"larger than {MAX_RESULT_BYTES} bytes; not a result")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ResultFileError(path, f"cannot read result: {error}") from error
    return validate_result(data, path)
