"""The model package: one directory with ``model.json`` and ``.safetensors`` weights.

``model.json`` says what the weights are (architecture, preprocessing, per fold the four
classifiers with their validation MCCs and the modality MCCs, generators per view),
where they came from (provenance) and what they are for (research only; the demo model
says it was trained on synthetic phantom data). Loading checks the format version, the
schema and the SHA-256 of every weight file, and refuses anything else with a
:class:`~VirtualBiopsyLib.errors.ModelPackageError` naming the file. Networks are built
and loaded lazily, once per run. Hashing and parsing need no torch.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import VirtualBiopsyLib
from VirtualBiopsyLib.atomic_io import staged_folder, write_bytes_atomic
from VirtualBiopsyLib.calibration import MAX_LOGIT_SHIFT, shift_probability
from VirtualBiopsyLib.errors import ModelPackageError, OutputExistsError
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams
from VirtualBiopsyLib.limits import (
    GENERATOR_MAXIMA,
    MAX_JSON_DEPTH,
    MAX_NETWORK_INPUT_SIZE,
    LimitExceededError,
    json_depth,
    limit,
    read_regular_file,
)
from VirtualBiopsyLib.models.names import (
    CLASSIFIER_ARCHITECTURES,
    GENERATOR_HYPERPARAMETERS,
    GENERATOR_MINIMA,
    POOLINGS,
    SMALLEST_CLASSIFIER_INPUT,
    pooling_problem,
    unet_size_problem,
)
from VirtualBiopsyLib.models.safetensors_io import (
    read_state_dict,
    sha256_bytes,
    verify_file,
    write_state_dict,
)
from VirtualBiopsyLib.roles import SLOTS, Modality, View, parse_slot

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT_VERSION = 1
MANIFEST_NAME = "model.json"
ARCHITECTURES: tuple[str, ...] = CLASSIFIER_ARCHITECTURES
DEFAULT_THRESHOLD = 0.5
MIN_IMAGE_SIZE = 8  # the schema's image_size minimum
VERIFY_WORKERS = 4  # files hashed side by side by load_package
_BUILD_LOCK = threading.Lock()  # one network built at a time (see _load_weights)
_IMPORT_LOCK = threading.Lock()  # torchvision imported by one thread (import_builders)
_SKELETONS: dict[tuple[object, ...], nn.Module] = {}  # per kind of network, on "meta"
RESEARCH_INTENDED_USE = (
    "Research only: multimodal virtual biopsy of breast lesions from CESM exams. "
    "Not a medical device; not for diagnosis or treatment decisions."
)
DEMO_INTENDED_USE = (
    "Demo model trained on synthetic phantom data; not for any clinical or research conclusion."
)
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "model-package.schema.json"
_REQUIRED_FIELDS = (
    "format_version",
    "name",
    "version",
    "architecture",
    "image_size",
    "preprocessing",
    "folds",
    "generators",
    "threshold",
    "provenance",
    "intended_use",
    "is_demo",
)


@dataclass(frozen=True)
class ClassifierEntry:
    """One classifier f[m,v] of one fold: its weight file, validation MCC and, for a DES
    classifier, the logit shift of its output on synthetic DES
    (:mod:`VirtualBiopsyLib.calibration`; None: used as it is)."""

    file: str
    sha256: str
    val_mcc: float
    synthetic_logit_shift: float | None = None

    def on_synthetic(self, probability: float) -> float:
        """This classifier's probability for a synthetic DES input, recalibrated."""
        return shift_probability(probability, self.synthetic_logit_shift)


@dataclass(frozen=True)
class GeneratorEntry:
    """The generator G_v of one view: its architecture name and the sizes to rebuild it."""

    file: str
    sha256: str
    architecture: str  # "resnet" (the paper's CycleGAN generator) or "unet"
    hyperparameters: dict[str, int]

    @property
    def ngf(self) -> int | None:
        return self.hyperparameters.get("ngf")

    @property
    def n_blocks(self) -> int | None:
        return self.hyperparameters.get("n_blocks")


@dataclass(frozen=True)
class FoldEntry:
    """One cross-validation fold: classifiers per slot and view-fused modality MCCs."""

    classifiers: dict[str, ClassifierEntry]
    modality_mcc: dict[Modality, float]

    @property
    def slot_mcc(self) -> dict[str, float]:
        """Validation MCC per slot, the view-fusion weights of Eq. 7."""
        return {slot: entry.val_mcc for slot, entry in self.classifiers.items()}


@dataclass
class FoldModels:
    """What :func:`write_package` stores for one fold (trained networks and their MCCs)."""

    classifiers: Mapping[str, nn.Module]
    val_mcc: Mapping[str, float]
    modality_mcc: Mapping[Modality | str, float]
    synthetic_logit_shift: Mapping[str, float] = field(default_factory=dict)


@dataclass
class ModelPackage:
    """A verified model package (a plain record). Each ``load_*`` call builds a network
    from its checked weights; keeping loaded networks for a run is the caller's job
    (:class:`~VirtualBiopsyLib.inference.pipeline.LoadedModels`).

    >>> package = load_package(demo_package_path())            # doctest: +SKIP
    >>> package.is_demo, len(package.folds)                     # doctest: +SKIP
    (True, 5)
    >>> model = package.load_classifier(0, "DES_CC")            # doctest: +SKIP
    >>> model.probability(torch.rand(1, 1, 256, 256)).shape     # doctest: +SKIP
    torch.Size([1])
    """

    directory: Path
    name: str
    version: str
    architecture: str
    image_size: int
    preprocessing: PreprocessingParams
    threshold: float
    is_demo: bool
    sha256: str
    folds: list[FoldEntry]
    generators: dict[View, GeneratorEntry]
    provenance: dict[str, Any]
    intended_use: str
    manifest: dict[str, Any] = field(repr=False)
    pooling: str = "avg"  # the classifiers' global pooling (the paper: average)

    @property
    def slots(self) -> tuple[str, ...]:
        """Slots with a classifier in every fold."""
        return tuple(s for s in SLOTS if all(s in fold.classifiers for fold in self.folds))

    def import_builders(self) -> None:
        """Import what building this package's classifiers needs, once per process.

        For the torchvision architectures that is torchvision, about a second of
        single-threaded Python work: a caller can run this on a thread while other work
        (reading images, synthesis) keeps the cores busy. Safe beside ``load_*`` calls.
        """
        if self.architecture == "demo":
            return
        from VirtualBiopsyLib.models.torchvision_compat import import_torchvision

        with _IMPORT_LOCK:
            import_torchvision()

    def load_classifier(
        self, fold: int, slot: str, device: str | torch.device = "cpu"
    ) -> nn.Module:
        """The classifier of ``slot`` in fold ``fold``, in eval mode on ``device``.

        For inference only: its batch norms are folded into the convolutions
        (:func:`~VirtualBiopsyLib.models.classifiers.fold_batch_norms`), so it cannot be
        trained further; training builds its own networks.
        """
        from VirtualBiopsyLib.models.classifiers import build_classifier, fold_batch_norms

        entry = self._classifier_entry(fold, slot)
        network = self._load_weights(
            ("classifier", self.architecture, self.pooling),
            lambda: build_classifier(self.architecture, pooling=self.pooling),
            entry.file,
            entry.sha256,
            device,
        )
        return fold_batch_norms(network)

    def load_generator(
        self,
        view: View | str,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> nn.Module | None:
        """The LE→DES generator of ``view`` in eval mode, or None if the package has none.

        ``dtype`` (default float32): the weights' type; the input must have the same.
        """
        entry = self.generators.get(View(view))
        if entry is None:
            return None
        from VirtualBiopsyLib.models.generators import build_named_generator

        network = self._load_weights(
            ("generator", entry.architecture, *sorted(entry.hyperparameters.items())),
            lambda: build_named_generator(entry.architecture, entry.hyperparameters),
            entry.file,
            entry.sha256,
            device,
        )
        return network.to(dtype) if dtype is not None else network

    def _classifier_entry(self, fold: int, slot: str) -> ClassifierEntry:
        if not 0 <= fold < len(self.folds):
            raise ModelPackageError(
                f"{self.directory}: no fold {fold} (the package has {len(self.folds)})"
            )
        entry = self.folds[fold].classifiers.get(slot)
        if entry is None:
            raise ModelPackageError(f"{self.directory}: fold {fold} has no {slot} classifier")
        return entry

    def _load_weights(
        self,
        kind: tuple[object, ...],
        build: Callable[[], nn.Module],
        file: str,
        sha256: str,
        device: str | torch.device,
    ) -> nn.Module:
        """Build the network without random initialisation and adopt the file's tensors.

        Built on the meta device, the network allocates nothing until ``assign=True`` hands
        it the loaded tensors: for twenty ResNet18s this saves seconds of initialisation
        and one copy of every weight. Each ``kind`` of network is built once per process
        and copied after (a copy of a network without storage is a third of a build,
        whose random initialisation runs even on the meta device). Safe to call from
        several threads: skeletons are made one at a time (Python work), torchvision is
        imported by one thread only (:meth:`import_builders`; a generator never waits
        for it), files are read and checked side by side.
        """
        import torch

        path = self.directory / file
        try:
            state = read_state_dict(path, expected_sha256=sha256)
        except ModelPackageError as error:  # say which network the file is
            raise ModelPackageError(f"{self._role_of(file)}: {error}") from error
        if kind[0] == "classifier":
            self.import_builders()
        with _BUILD_LOCK:
            skeleton = _SKELETONS.get(kind)
            if skeleton is None:
                with torch.device("meta"):
                    skeleton = _SKELETONS[kind] = build()
            network = copy.deepcopy(skeleton)
        try:
            network.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as error:
            summary = " ".join(str(error).split())[:400]
            raise ModelPackageError(
                f"{self._role_of(file)}: {path}: weights do not fit the "
                f"{type(network).__name__} described in {MANIFEST_NAME} ({summary})"
            ) from error
        if not all(parameter.is_floating_point() for parameter in network.parameters()):
            raise ModelPackageError(f"{self._role_of(file)}: {path}: integer weights")
        if any(t.is_meta for t in (*network.parameters(), *network.buffers())):
            with _BUILD_LOCK:  # a tensor the file does not hold: initialise it normally
                network = build()
            network.load_state_dict(state, strict=True)
        return network.to(device).eval()

    def _role_of(self, file: str) -> str:
        """``"fold 2 LE_CC classifier"`` or ``"CC generator"``: what a weight file is."""
        for index, fold in enumerate(self.folds):
            for slot, entry in fold.classifiers.items():
                if entry.file == file:
                    return f"fold {index} {slot} classifier"
        for view, entry in self.generators.items():
            if entry.file == file:
                return f"{View(view).value} generator"
        return file


def demo_package_path() -> Path:
    """Where the bundled demo package lives (trained on synthetic phantom data only).

    >>> demo_package_path().name
    'DemoModel'
    """
    return Path(__file__).resolve().parent.parent / "Resources" / "DemoModel"


def load_package(directory: Path | str) -> ModelPackage:
    """Read and verify a model package; raise :class:`ModelPackageError` if anything is off.

    Checks, in order: ``model.json`` exists and is JSON, its format version is known, it
    matches the schema, every weight file exists beside it with the recorded SHA-256.

    >>> package = load_package("MyModel")                      # doctest: +SKIP
    >>> package.architecture, package.threshold                 # doctest: +SKIP
    ('resnet18', 0.5)
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST_NAME
    raw = _read_manifest_bytes(directory, manifest_path)
    manifest = _parse_json(raw, manifest_path)
    _check_format_version(manifest, manifest_path)
    _validate_schema(manifest, manifest_path)
    package = _build_package(directory, manifest, sha256_bytes(raw), manifest_path)
    _verify_checksums(package)
    return package


def write_package(
    directory: Path | str,
    *,
    name: str,
    version: str,
    architecture: str,
    folds: Sequence[FoldModels],
    generators: Mapping[View | str, nn.Module] | None = None,
    preprocessing: PreprocessingParams | Mapping[str, Any] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    provenance: Mapping[str, Any] | None = None,
    is_demo: bool = False,
    intended_use: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a model package directory atomically and return its path.

    The package is assembled in a temporary sibling folder and moved into place, so a
    crash never leaves half a package; an existing non-empty folder is replaced only
    with ``overwrite=True``. Weight file names say fold, slot or view (and ``demo``).

    >>> from VirtualBiopsyLib.models.classifiers import build_classifier
    >>> fold = FoldModels(
    ...     classifiers={s: build_classifier("demo") for s in SLOTS},
    ...     val_mcc={"LE_CC": 0.2, "LE_MLO": 0.1, "DES_CC": 0.6, "DES_MLO": 0.5},
    ...     modality_mcc={"LE": 0.2, "DES": 0.6})
    >>> path = write_package("Demo", name="demo", version="0.1", architecture="demo",
    ...                      folds=[fold], is_demo=True)        # doctest: +SKIP
    """
    directory = Path(directory)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")
    if not folds:
        raise ValueError("a model package needs at least one fold")
    _refuse_existing(directory, overwrite)
    params = _preprocessing_params(preprocessing)
    # an existing folder was vetted by _refuse_existing: replace it once the new one is whole
    with staged_folder(directory, replace=True) as staging:
        prefix = "demo_" if is_demo else ""
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": version,
            "architecture": architecture,
            "classifier_pooling": _pooling_of(folds),
            "image_size": params.size,
            "preprocessing": params.to_dict(),
            "folds": [
                _write_fold(staging, index, fold, architecture, prefix)
                for index, fold in enumerate(folds)
            ],
            "generators": _write_generators(staging, generators or {}, prefix),
            "threshold": float(threshold),
            "provenance": _provenance(provenance),
            "intended_use": intended_use
            or (DEMO_INTENDED_USE if is_demo else RESEARCH_INTENDED_USE),
            "is_demo": bool(is_demo),
            "research_use_notice": VirtualBiopsyLib.RESEARCH_USE_NOTICE,
        }
        if is_demo:
            manifest["synthetic_notice"] = VirtualBiopsyLib.SYNTHETIC_NOTICE
        _validate_schema(manifest, staging / MANIFEST_NAME)
        text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
        write_bytes_atomic(staging / MANIFEST_NAME, text.encode("utf-8"))
    return directory


# --- writing ---------------------------------------------------------------------------


def _refuse_existing(directory: Path, overwrite: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise OutputExistsError(f"{directory}: exists and is not a folder")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{directory}: folder exists and is not empty; pass overwrite=True to replace it"
        )


def _preprocessing_params(
    preprocessing: PreprocessingParams | Mapping[str, Any] | None,
) -> PreprocessingParams:
    if preprocessing is None:
        return PreprocessingParams()
    if isinstance(preprocessing, PreprocessingParams):
        return preprocessing
    return PreprocessingParams.from_dict(dict(preprocessing))


def _write_fold(
    staging: Path, index: int, fold: FoldModels, architecture: str, prefix: str
) -> dict[str, Any]:
    classifiers = {}
    for slot in SLOTS:
        network = fold.classifiers.get(slot)
        if network is None:
            continue
        if slot not in fold.val_mcc:
            raise ValueError(f"fold {index}: no validation MCC for {slot}")
        network_architecture = getattr(network, "architecture", architecture)
        if network_architecture != architecture:
            raise ValueError(
                f"fold {index} {slot}: network is {network_architecture!r}, "
                f"package is {architecture!r}"
            )
        stem = architecture if architecture == "demo" else f"{prefix}{architecture}"
        file = f"{stem}_fold{index}_{slot}.safetensors"
        digest = write_state_dict(
            network.state_dict(), staging / file, _metadata("classifier", architecture, prefix)
        )
        val_mcc = _mcc(fold.val_mcc[slot], f"fold {index} {slot}")
        classifiers[slot] = {"file": file, "sha256": digest, "val_mcc": val_mcc}
        if slot in fold.synthetic_logit_shift:
            shift = _logit_shift(fold.synthetic_logit_shift[slot], f"fold {index} {slot}")
            classifiers[slot]["synthetic_logit_shift"] = shift
    des = {s for s in classifiers if parse_slot(s)[0] is Modality.DES}
    unusable = set(fold.synthetic_logit_shift) - des
    if unusable:
        raise ValueError(f"fold {index}: a synthetic-DES shift for {sorted(unusable)}")
    unknown = set(fold.classifiers) - set(SLOTS)
    if unknown:
        raise ValueError(f"fold {index}: unknown slots {sorted(unknown)}")
    modality_mcc = {
        Modality(m).value: _mcc(v, f"fold {index} {Modality(m).value}")
        for m, v in fold.modality_mcc.items()
    }
    return {"classifiers": classifiers, "modality_mcc": modality_mcc}


def _mcc(value: float, what: str) -> float:
    """A validation MCC as stored: a finite number in [-1, 1]."""
    mcc = float(value)
    if not -1.0 <= mcc <= 1.0:  # also rejects NaN
        raise ValueError(f"{what}: validation MCC {value!r} is not a number in [-1, 1]")
    return mcc


def _logit_shift(value: float, what: str) -> float:
    """A synthetic-DES logit shift as stored: a finite number within ±MAX_LOGIT_SHIFT."""
    shift = float(value)
    if not -MAX_LOGIT_SHIFT <= shift <= MAX_LOGIT_SHIFT:  # also rejects NaN
        raise ValueError(
            f"{what}: synthetic-DES logit shift {value!r} is not within ±{MAX_LOGIT_SHIFT:g}"
        )
    return shift


def _write_generators(
    staging: Path, generators: Mapping[View | str, nn.Module], prefix: str
) -> dict[str, Any]:
    from VirtualBiopsyLib.models.generators import generator_spec

    entries = {}
    for view, network in generators.items():
        view_name = View(view).value
        kind, hyper = generator_spec(network)
        file = f"{prefix}generator_LE_to_DES_{view_name}.safetensors"
        digest = write_state_dict(
            network.state_dict(), staging / file, _metadata("generator", kind, prefix)
        )
        entries[view_name] = {"file": file, "sha256": digest, "architecture": kind, **hyper}
    return entries


def _pooling_of(folds: Sequence[FoldModels]) -> str:
    """The one global pooling every classifier of the package uses."""
    poolings = {
        getattr(network, "pooling", "avg")
        for fold in folds
        for network in fold.classifiers.values()
    }
    if len(poolings) != 1:
        raise ValueError(f"classifiers of one package must share a pooling, got {sorted(poolings)}")
    return poolings.pop()


def _metadata(kind: str, architecture: str, prefix: str) -> dict[str, str]:
    return {
        "kind": kind,
        "architecture": architecture,
        "is_demo": str(bool(prefix)).lower(),
        "notice": VirtualBiopsyLib.RESEARCH_USE_NOTICE,
    }


def _provenance(provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "dataset_manifest_sha256": None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": VirtualBiopsyLib.__version__,
        "training_config": None,
        "test_metrics": None,
    }
    record.update(provenance or {})
    return record


# --- reading ---------------------------------------------------------------------------


def _read_manifest_bytes(directory: Path, manifest_path: Path) -> bytes:
    if not directory.is_dir():
        raise ModelPackageError(f"{directory}: model package folder not found")
    try:
        return read_regular_file(
            manifest_path, limit("VIRTUAL_BIOPSY_MAX_JSON_BYTES"), "VIRTUAL_BIOPSY_MAX_JSON_BYTES"
        )
    except LimitExceededError as error:
        raise ModelPackageError(f"{manifest_path}: refused: it {error}") from error
    except FileNotFoundError as error:
        raise ModelPackageError(  # absolute: `--model ""` or `.` would name just model.json
            f"{manifest_path.absolute()}: missing; not a model package"
        ) from error
    except OSError as error:
        raise ModelPackageError(f"{manifest_path}: cannot read ({error.strerror})") from error


def _parse_json(raw: bytes, manifest_path: Path) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        depth = json_depth(text)
        if depth > MAX_JSON_DEPTH:
            raise ModelPackageError(
                f"{manifest_path}: JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH})"
            )
        manifest = json.loads(text)
    except UnicodeDecodeError as error:
        raise ModelPackageError(f"{manifest_path}: not UTF-8 text") from error
    except json.JSONDecodeError as error:
        raise ModelPackageError(
            f"{manifest_path}: invalid JSON at line {error.lineno} column {error.colno} "
            f"({error.msg})"
        ) from error
    except ValueError as error:  # e.g. an integer longer than Python converts
        raise ModelPackageError(f"{manifest_path}: invalid JSON ({error})") from error
    if not isinstance(manifest, dict):
        raise ModelPackageError(f"{manifest_path}: expected a JSON object at the top level")
    return manifest


def _check_format_version(manifest: dict[str, Any], manifest_path: Path) -> None:
    version = manifest.get("format_version")
    if version is None:
        raise ModelPackageError(f"{manifest_path}: no format_version field")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ModelPackageError(
            f"{manifest_path}: unknown format_version {version!r}; this VirtualBiopsy "
            f"{VirtualBiopsyLib.__version__} reads format {FORMAT_VERSION}"
        )


def _validate_schema(manifest: dict[str, Any], manifest_path: Path) -> None:
    """JSON-Schema validation when jsonschema is installed, else required-field checks.

    Either way, :func:`_build_package` checks the types of every field it uses.
    """
    missing = [name for name in _REQUIRED_FIELDS if name not in manifest]
    if missing:
        raise ModelPackageError(f"{manifest_path}: missing field(s) {', '.join(missing)}")
    try:
        import jsonschema
    except ImportError:
        return
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(manifest))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ModelPackageError(f"{manifest_path}: schema violation at {where}: {error.message}")


def _build_package(
    directory: Path, manifest: dict[str, Any], sha256: str, manifest_path: Path
) -> ModelPackage:
    try:
        architecture = str(manifest["architecture"])
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}")
        preprocessing = PreprocessingParams.from_dict(dict(manifest["preprocessing"]))
        folds = [_fold_entry(fold) for fold in manifest["folds"]]
        if not folds:
            raise ValueError("no folds")
        generators = {
            View(view): _generator_entry(entry) for view, entry in manifest["generators"].items()
        }
        image_size = int(manifest["image_size"])
        if not MIN_IMAGE_SIZE <= image_size <= MAX_NETWORK_INPUT_SIZE:
            raise ValueError(f"image_size must be {MIN_IMAGE_SIZE} to {MAX_NETWORK_INPUT_SIZE}")
        if image_size < SMALLEST_CLASSIFIER_INPUT[architecture]:  # would fail in its forward
            raise ValueError(
                f"image_size {image_size} is too small for {architecture} classifiers "
                f"(at least {SMALLEST_CLASSIFIER_INPUT[architecture]})"
            )
        threshold = float(manifest["threshold"])
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold {threshold} outside (0, 1)")
        pooling = _pooling(manifest.get("classifier_pooling", "avg"))
        problem = pooling_problem(architecture, pooling)
        if problem is not None:  # refused here, not when inference first builds one
            raise ValueError(f"classifier_pooling {pooling!r} with {architecture}: {problem}")
        return ModelPackage(
            directory=directory,
            name=str(manifest["name"]),
            version=str(manifest["version"]),
            architecture=architecture,
            image_size=image_size,
            preprocessing=preprocessing,
            threshold=threshold,
            is_demo=_boolean(manifest["is_demo"]),
            sha256=sha256,
            folds=folds,
            generators=generators,
            provenance=dict(manifest["provenance"]),
            intended_use=str(manifest["intended_use"]),
            manifest=manifest,
            pooling=pooling,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ModelPackageError(f"{manifest_path}: invalid content ({error})") from error


def _fold_entry(fold: dict[str, Any]) -> FoldEntry:
    classifiers = {}
    for slot, entry in fold["classifiers"].items():
        if slot not in SLOTS:
            raise ValueError(f"unknown slot {slot!r}")
        shift = entry.get("synthetic_logit_shift")
        classifiers[slot] = ClassifierEntry(
            file=_file_name(entry["file"]),
            sha256=_digest(entry["sha256"]),
            val_mcc=_mcc(entry["val_mcc"], f"{slot} val_mcc"),
            synthetic_logit_shift=None if shift is None else _logit_shift(shift, slot),
        )
    if not classifiers:
        raise ValueError("a fold without classifiers")
    modality_mcc = {Modality(m): _mcc(v, f"{m} MCC") for m, v in fold["modality_mcc"].items()}
    return FoldEntry(classifiers=classifiers, modality_mcc=modality_mcc)


def _generator_entry(entry: dict[str, Any]) -> GeneratorEntry:
    architecture = str(entry.get("architecture", "resnet"))  # format 1 before U-Nets
    names = GENERATOR_HYPERPARAMETERS.get(architecture)
    if names is None:
        raise ValueError(f"unknown generator architecture {architecture!r}")
    hyperparameters = {
        name: _positive_int(entry[name], name, GENERATOR_MINIMA[name], GENERATOR_MAXIMA[name])
        for name in names
    }
    if architecture == "unet":
        problem = unet_size_problem(**hyperparameters)
        if problem is not None:  # refused here, not when inference first builds it
            raise ValueError(problem)
    return GeneratorEntry(
        file=_file_name(entry["file"]),
        sha256=_digest(entry["sha256"]),
        architecture=architecture,
        hyperparameters=hyperparameters,
    )


def _pooling(value: Any) -> str:
    if value not in POOLINGS:
        raise ValueError(f"unknown classifier_pooling {value!r}")
    return str(value)


def _file_name(value: Any) -> str:
    """A plain file name inside the package: no folders, no '..', safetensors only."""
    name = str(value)
    if Path(name).name != name or name.startswith(".") or not name.endswith(".safetensors"):
        raise ValueError(f"weight file {name!r} must be a .safetensors file inside the package")
    return name


def _digest(value: Any) -> str:
    digest = str(value)
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"sha256 {digest!r} is not 64 lower-case hex digits")
    return digest


def _positive_int(value: Any, name: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} {value} is above the maximum of {maximum}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"is_demo must be true or false, got {value!r}")
    return value


def _verify_checksums(package: ModelPackage) -> None:
    """Every weight file against its SHA-256, several files at once (hashlib works
    outside the GIL); each file is hashed once per identity in a process
    (:func:`~VirtualBiopsyLib.models.safetensors_io.verify_file`). The first bad file in
    manifest order is the one reported."""
    entries: list[ClassifierEntry | GeneratorEntry] = [
        entry for fold in package.folds for entry in fold.classifiers.values()
    ]
    entries.extend(package.generators.values())
    files = list(dict.fromkeys((package.directory / e.file, e.sha256) for e in entries))
    for path, _ in files:
        if not path.exists():
            raise ModelPackageError(f"{path}: weights file listed in {MANIFEST_NAME} is missing")
    workers = max(1, min(VERIFY_WORKERS, os.cpu_count() or 1, len(files)))
    with ThreadPoolExecutor(workers, thread_name_prefix="virtual-biopsy-sha256") as pool:
        checks = [pool.submit(verify_file, path, sha256) for path, sha256 in files]
        for check in checks:
            try:
                check.result()
            except ModelPackageError:
                for other in checks:
                    other.cancel()  # the package is refused: no need to hash the rest
                raise
