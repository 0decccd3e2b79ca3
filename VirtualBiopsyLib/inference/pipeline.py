"""The virtual biopsy of one case: the paper's Algorithm 1, made robust.

For a case of up to four images (LE and DES, CC and MLO):

1. read and preprocess every image that is present (one preprocessing per image);
2. per view, use the real DES, or synthesize it from the preprocessed LE with that view's
   generator G_v (CycleGAN ResNet or U-Net) when the package has one (unless synthesis is
   off); a synthetic DES is classified in preprocessed space directly and mapped back
   onto the LE's original grid only for the outputs;
3. classify every available image with every fold's classifier of its modality-view pair;
   with saliency on, the same forward pass also yields the Grad-CAM map; a synthetic
   DES's probability is recalibrated for synthetic DES (:mod:`VirtualBiopsyLib.calibration`,
   where the package has a shift for that classifier);
4. fuse per fold (:func:`VirtualBiopsyLib.fusion.fuse_case`: views, then modalities,
   MCC-weighted with that fold's validation MCCs);
5. average over folds and report the spread (std, standard error); malignant at
   p ≥ the package threshold.

What stays loaded is chosen by the work (``keep_models``): a pipeline for many cases (a
batch, a persistent worker) loads each network once and keeps it
(:class:`LoadedModels`, the default); a pipeline for one case (``keep_models=False``,
what ``predict`` takes for a single case) loads each network on the worker that uses it
and lets it go after its pass, so at most one network per worker is in memory (22
networks of the paper's package: about 1 GB). Both give the same numbers, bit for bit
(the same weights, the same passes on the same one-thread workers).

Everything runs under ``torch.inference_mode()`` except Grad-CAM's small head, and a
case's independent model passes (the two generators, then every classifier pass) run
side by side on the pipeline's worker threads
(:class:`~VirtualBiopsyLib.inference.threads.ModelWorkers`). Models and workers belong
to the pipeline and go with it (:meth:`Pipeline.close`, or ``with``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from VirtualBiopsyLib.ensemble import fold_ensemble
from VirtualBiopsyLib.errors import CaseError
from VirtualBiopsyLib.images.cases import Case
from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
from VirtualBiopsyLib.images.preprocessing import PreprocessedImage, preprocess
from VirtualBiopsyLib.images.readers import read_image
from VirtualBiopsyLib.inference.pictures import SlotPicture
from VirtualBiopsyLib.inference.progress import NullProgress, ProgressReporter
from VirtualBiopsyLib.inference.result import CaseResult, InputRecord, ModelInfo
from VirtualBiopsyLib.inference.saliency import grad_cam
from VirtualBiopsyLib.inference.threads import ModelWorkers
from VirtualBiopsyLib.models.package import ModelPackage
from VirtualBiopsyLib.roles import SLOTS, VIEWS, Modality, Slot, Source, View

log = logging.getLogger(__name__)

ImageReader = Callable[[ImageInfo], MammogramImage]
# bfloat16 synthesis (generator weights and activations in bf16): 0.34 s instead of
# 0.72–0.85 s per 256² image for the paper's generator on 2 cores with AVX512-BF16, half
# the generator's memory, and a synthetic DES within ~0.002 mean / 0.012 max absolute of
# float32 on [0, 1] (measured). "auto" takes it where the hardware computes bf16 natively
# and float32 elsewhere; classifiers always run in float32.
SYNTHESIS_PRECISIONS = ("auto", "float32", "bfloat16")


def resolve_synthesis_precision(precision: str, device: torch.device) -> str:
    """ "float32" or "bfloat16": what ``precision`` ("auto" included) means on ``device``."""
    if precision not in SYNTHESIS_PRECISIONS:
        raise ValueError(
            f"synthesis_precision must be one of {SYNTHESIS_PRECISIONS}, not {precision!r}"
        )
    if precision != "auto":
        return precision
    return "bfloat16" if native_bfloat16(device) else "float32"


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware (CPU: AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


class LoadedModels:
    """The networks of one package on one device, each loaded on first use and kept for
    the owner's lifetime (a :class:`Pipeline`: models load once for many cases).

    Not shared between threads: load in the calling thread, then hand the networks to
    workers.
    """

    def __init__(
        self, package: ModelPackage, device: torch.device, synthesis_dtype: torch.dtype
    ) -> None:
        self.package = package
        self.device = device
        self.synthesis_dtype = synthesis_dtype
        self._classifiers: dict[tuple[int, str], torch.nn.Module] = {}
        self._generators: dict[str, torch.nn.Module | None] = {}

    def classifier(self, fold: int, slot: str) -> torch.nn.Module:
        key = (fold, str(slot))
        if key not in self._classifiers:
            self._classifiers[key] = self.package.load_classifier(fold, slot, self.device)
        return self._classifiers[key]

    def generator(self, view: str) -> torch.nn.Module | None:
        key = str(view)
        if key not in self._generators:
            self._generators[key] = self.package.load_generator(
                view, self.device, self.synthesis_dtype
            )
        return self._generators[key]

    @property
    def loaded(self) -> int:
        """How many networks are in memory."""
        return len(self._classifiers) + sum(g is not None for g in self._generators.values())


@dataclass
class PreparedSlot:
    """One slot ready for the classifiers: the network input and how to draw it back."""

    slot: Slot
    source: Source
    array: np.ndarray  # preprocessed, size × size, [0, 1]
    prepared: PreprocessedImage  # geometry of the image this array lives on
    spacing: tuple[float, float]
    path: Path | None
    display: SlotPicture | None = None  # what to show and keep, on the original grid
    generated_from: Slot | None = None


class Pipeline:
    """Runs the virtual biopsy of cases with one model package (loaded once).

    >>> from VirtualBiopsyLib.models.package import load_package, demo_package_path
    >>> from VirtualBiopsyLib.images.readers import scan
    >>> from VirtualBiopsyLib.images.cases import group_cases
    >>> pipeline = Pipeline(load_package(demo_package_path()))            # doctest: +SKIP
    >>> infos = [e.info for e in scan([Path("exam")]) if e.status == "ok"]  # doctest: +SKIP
    >>> result = pipeline.run(group_cases(infos)[0])                      # doctest: +SKIP
    >>> result.label, result.inputs["DES_CC"].source.value                # doctest: +SKIP
    ('malignant', 'synthetic')
    >>> write_case(result, Path("out"))  # VirtualBiopsyLib.inference.output  # doctest: +SKIP
    >>> pipeline.close()  # the worker threads; or use ``with Pipeline(...) as pipeline``
    """

    def __init__(
        self,
        package: ModelPackage,
        device: str = "cpu",
        synthesis: bool = True,
        saliency: bool = True,
        reader: ImageReader = read_image,
        synthesis_precision: str = "auto",
        keep_models: bool = True,
    ) -> None:
        """``keep_models``: True (default) keeps every network loaded once for the
        pipeline's lifetime (many cases, a long-lived session); False loads each network
        for its pass and frees it afterwards (one case: less memory, nothing held)."""
        self.package = package
        self.device = torch.device(device)
        self.synthesis = synthesis
        self.saliency = saliency
        self.synthesis_precision = resolve_synthesis_precision(synthesis_precision, self.device)
        self.keep_models = keep_models
        self._reader = reader
        self.models = LoadedModels(package, self.device, self._synthesis_dtype)
        self._workers: ModelWorkers | None = None
        # the classifiers' builders (torchvision) import while the first case reads its
        # images and synthesizes DES, instead of after
        self._importing = threading.Thread(
            target=_import_builders, args=(package,), name="virtual-biopsy-import", daemon=True
        )
        self._importing.start()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker threads (the models stay loaded; a later run restarts them)."""
        self._importing.join()
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    @property
    def workers(self) -> ModelWorkers:
        """This pipeline's worker threads for model passes, started on first use."""
        if self._workers is None:
            self._workers = ModelWorkers(self.device.type)
        return self._workers

    @property
    def settings(self) -> dict[str, object]:
        """How this pipeline runs, recorded in every result for reproducibility."""
        return {
            "device": self.device.type,
            "synthesis": self.synthesis,
            "synthesis_precision": self.synthesis_precision,
            "saliency": self.saliency,
        }

    @property
    def _synthesis_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.synthesis_precision == "bfloat16" else torch.float32

    @property
    def model_info(self) -> ModelInfo:
        package = self.package
        return ModelInfo(
            package.name, package.version, package.architecture, package.sha256, package.is_demo
        )

    def load_networks(self) -> int:
        """Load now every network a case can use: each fold's classifier of every slot,
        and each view's generator when synthesis is on; returns how many are loaded.

        For a long-lived pipeline (the worker loads them before it says it is ready, so
        that its first case is as quick as the next); with ``keep_models=False`` nothing
        is kept, so nothing is loaded.
        """
        if not self.keep_models:
            return 0
        for fold in range(len(self.package.folds)):
            for slot in self.package.slots:
                self.models.classifier(fold, slot)
        if self.synthesis:
            for view in self.package.generators:
                self.models.generator(view)
        return self.models.loaded

    def warm_up(self) -> None:
        """Preprocess a blank image and run one pass of each kind of network on it,
        side by side, discarding the results: the imports and first-call set-up a case
        needs (SciPy behind Otsu's threshold, scikit-image's resize, oneDNN's kernels,
        the worker threads) happen now instead of in the first case. For a long-lived
        pipeline (the worker, before it says ready); about one generator pass of CPU.
        """
        size = self.package.preprocessing.size
        shape = (2 * size + 7, 2 * size - 5)  # not a multiple of the block: resized as well
        ramp = np.linspace(0.0, 1.0, shape[0] * shape[1], dtype=np.float32).reshape(shape)
        image = MammogramImage(ImageInfo(Path("warm-up"), "nrrd"), ramp, windowed=True)
        prepared = preprocess(image, self.package.preprocessing)
        le = PreparedSlot(Slot.LE_CC, Source.REAL, prepared.array, prepared, image.spacing, None)
        passes = []
        if self.synthesis and self.package.generators:
            view = next(iter(self.package.generators))
            generator = self.models.generator(view) if self.keep_models else view
            passes.append(self.workers.submit(self._synthesize, le, Slot.DES_CC, generator))
        if self.package.slots:
            slot = Slot(self.package.slots[0])
            classifier = self.models.classifier(0, slot) if self.keep_models else None
            images = torch.from_numpy(le.array)[None, None].to(self.device)
            passes.append(self.workers.submit(self._classify_one, classifier, images, 0, slot))
        for future in passes:
            future.result()

    def run(self, case: Case, progress: ProgressReporter | None = None) -> CaseResult:
        """The virtual biopsy of ``case``; raises :class:`CaseError` when it has no image."""
        progress = progress or NullProgress()
        warnings = [p for p in case.problems if not p.startswith("missing ")]
        usable, unusable = self._usable_slots(case)
        warnings += unusable
        progress.report("read", 0.0, f"{case.key}: reading {len(usable)} image(s)")
        slots = self._read_and_preprocess(usable, progress)
        warnings += [f"{slot}: {note}" for slot, info in usable.items() for note in info.warnings]
        progress.report("synthesize", 0.3, f"{case.key}: checking DES per view")
        synthetic, synthesis_notes = self._synthetic_des(slots)
        slots.update(synthetic)
        warnings += synthesis_notes
        progress.report("classify", 0.5, f"{case.key}: classifying {len(slots)} image(s)")
        fold_probabilities, cams = self._classify(slots, progress)
        warnings += _missing_warnings(slots) + _calibration_notes(slots, self.package)
        progress.report("fuse", 0.9, f"{case.key}: fusing views and modalities")
        result = self._assemble(case, slots, fold_probabilities, cams, warnings)
        progress.report("case", 1.0, f"{case.key}: {result.label}")
        return result

    # --- inputs ---------------------------------------------------------------------

    def _usable_slots(self, case: Case) -> tuple[dict[Slot, ImageInfo], list[str]]:
        """Present slots the package can classify, and a note per slot it cannot;
        CaseError if there is nothing at all."""
        present = {slot: info for slot, info in case.slots.items() if info is not None}
        if not present:
            why = f" ({'; '.join(case.problems)})" if case.problems else ""
            raise CaseError(f"no LE and no DES image in any view; nothing to classify{why}")
        usable, notes = {}, []
        for slot in SLOTS:
            if slot not in present:
                continue
            if slot in self.package.slots:
                usable[slot] = present[slot]
            else:
                notes.append(f"{slot}: the model package has no classifier for it; not used")
        if not usable:
            raise CaseError(
                f"the model package classifies none of its images ({', '.join(present)})"
            )
        return usable, notes

    def _read_and_preprocess(
        self, usable: dict[Slot, ImageInfo], progress: ProgressReporter
    ) -> dict[Slot, PreparedSlot]:
        slots = {}
        for index, (slot, info) in enumerate(usable.items()):
            image = self._reader(info)
            prepared = preprocess(image, self.package.preprocessing)
            slots[slot] = PreparedSlot(
                slot=slot,
                source=Source.SYNTHETIC if info.source is Source.SYNTHETIC else Source.REAL,
                array=prepared.array,
                prepared=prepared,
                spacing=image.spacing,
                path=info.path,
                display=_preview(image, prepared),
            )
            del image  # one full-size image in memory at a time
            progress.report("read", 0.3 * (index + 1) / len(usable), f"read {slot}")
        return slots

    def _synthetic_des(
        self, slots: dict[Slot, PreparedSlot]
    ) -> tuple[dict[Slot, PreparedSlot], list[str]]:
        """Each view's missing DES made from its LE (Algorithm 1, line 1), views side by
        side, and a note per view saying what was done."""
        pending, notes = {}, []
        for view in VIEWS:
            le_slot, des_slot = Slot.of(Modality.LE, view), Slot.of(Modality.DES, view)
            if des_slot in slots or le_slot not in slots:
                continue
            if des_slot not in self.package.slots:
                continue
            if not self.synthesis:
                notes.append(f"{des_slot} missing; synthesis switched off")
                continue
            if view not in self.package.generators:
                notes.append(f"{des_slot} missing and the package has no {view.value} generator")
                continue
            generator = self.models.generator(view) if self.keep_models else view
            pending[des_slot] = self.workers.submit(
                self._synthesize, slots[le_slot], des_slot, generator
            )
            notes.append(f"{des_slot} missing: SYNTHETIC {des_slot} generated from {le_slot}")
        return {des_slot: future.result() for des_slot, future in pending.items()}, notes

    def _synthesize(
        self, le: PreparedSlot, des_slot: Slot, generator: torch.nn.Module | View
    ) -> PreparedSlot:
        """On a worker: G_v(LE); ``generator`` is the network, or the view whose
        network this worker loads for this pass only (``keep_models=False``)."""
        if isinstance(generator, View):
            generator = self.package.load_generator(generator, self.device, self._synthesis_dtype)
        with torch.inference_mode():
            tensor = torch.from_numpy(le.array)[None, None].to(self.device, self._synthesis_dtype)
            synthetic = generator(tensor)[0, 0].float().clamp(0.0, 1.0).cpu().numpy()
        return PreparedSlot(
            slot=des_slot,
            source=Source.SYNTHETIC,
            array=np.ascontiguousarray(synthetic),
            prepared=le.prepared,
            spacing=le.spacing,
            path=le.path,
            display=SlotPicture(
                np.ascontiguousarray(synthetic), le.spacing, le.path, geometry=le.prepared.geometry
            ),
            generated_from=le.slot,
        )

    # --- classification -----------------------------------------------------------------

    def _classify(
        self, slots: dict[Slot, PreparedSlot], progress: ProgressReporter
    ) -> tuple[list[dict[str, float]], dict[Slot, np.ndarray]]:
        """Per fold, p[m,v] of every slot; per slot, the fold-mean Grad-CAM (size × size).

        A synthetic DES's probability is recalibrated with that fold's logit shift for
        synthetic DES (:meth:`ClassifierEntry.on_synthetic`; step 3 of the module doc).

        Kept models load here, in the calling thread (:class:`LoadedModels` is not
        shared between threads); otherwise each worker loads the classifier of its pass
        and frees it after. The passes run side by side and report progress as they
        finish.
        """
        n_folds = len(self.package.folds)
        passes = {}
        for slot, prepared in slots.items():
            images = torch.from_numpy(prepared.array)[None, None].to(self.device)
            for fold in range(n_folds):
                model = self.models.classifier(fold, slot) if self.keep_models else None
                future = self.workers.submit(self._classify_one, model, images, fold, slot)
                passes[future] = (slot, fold)
        fold_probabilities: list[dict[str, float]] = [{} for _ in range(n_folds)]
        fold_cams: dict[tuple[Slot, int], np.ndarray] = {}
        try:
            for done, future in enumerate(as_completed(passes), start=1):
                slot, fold = passes[future]
                probability, cam = future.result()
                if slots[slot].source is Source.SYNTHETIC:
                    probability = (
                        self.package.folds[fold].classifiers[slot].on_synthetic(probability)
                    )
                fold_probabilities[fold][slot] = probability
                if cam is not None:
                    fold_cams[slot, fold] = cam
                progress.report(
                    "classify", 0.5 + 0.4 * done / len(passes), f"{slot} fold {fold + 1}"
                )
        except BaseException:
            for future in passes:  # a bad weight file or Ctrl-C: the other passes can go
                future.cancel()
            raise
        cams = {  # summed in fold order, so the mean does not depend on finishing order
            slot: sum(fold_cams[slot, fold] for fold in range(n_folds)) / n_folds
            for slot in slots
            if (slot, 0) in fold_cams
        }
        return fold_probabilities, cams

    def _classify_one(
        self, model: torch.nn.Module | None, images: torch.Tensor, fold: int, slot: Slot
    ) -> tuple[float, np.ndarray | None]:
        """On a worker: p(malignant) and the Grad-CAM map of one fold's pass; without a
        kept ``model`` this worker loads that fold's classifier for this pass only."""
        if model is None:
            model = self.package.load_classifier(fold, slot, self.device)
        if self.saliency:
            probability, cam = grad_cam(model, images)
            return float(probability[0]), cam[0].float().cpu().numpy()
        with torch.inference_mode():
            return float(model.probability(images)[0]), None

    # --- result ----------------------------------------------------------------------------

    def _assemble(
        self,
        case: Case,
        slots: dict[Slot, PreparedSlot],
        fold_probabilities: list[dict[str, float]],
        cams: dict[Slot, np.ndarray],
        warnings: list[str],
    ) -> CaseResult:
        ensemble = fold_ensemble(fold_probabilities, self.package.folds, self.package.threshold)
        return CaseResult(
            key=case.key,
            patient_id=case.patient_id,
            study_uid=case.study_uid,
            laterality=case.laterality.value if case.laterality is not None else None,
            model=self.model_info,
            inputs=_input_records(slots),
            image_probabilities=ensemble.images,
            modality_probabilities=ensemble.modalities,
            fused=ensemble.probability,
            threshold=self.package.threshold,
            weights=ensemble.weights(),
            settings=self.settings,
            warnings=warnings,
            pictures={slot: s.display for slot, s in slots.items() if s.display is not None},
            saliency={slot: _lazy_map(cam, slots[slot]) for slot, cam in cams.items()},
            source_dicom={
                slot: s.path
                for slot, s in slots.items()
                if s.source is Source.REAL and s.path is not None and _is_dicom(s.path)
            },
        )


def _import_builders(package: ModelPackage) -> None:
    """Ahead of time, on a thread; a failure shows again, with its message, where the
    first classifier is loaded."""
    try:
        package.import_builders()
    except Exception:  # noqa: BLE001 (reported by the load that needs it)
        log.debug("importing the classifier builders failed", exc_info=True)


def _lazy_map(cam: np.ndarray, prepared: PreparedSlot) -> SlotPicture:
    """A saliency map kept at the preprocessed size, drawn on the original grid when used."""
    return SlotPicture(cam, prepared.spacing, prepared.path, geometry=prepared.prepared.geometry)


def _calibration_notes(slots: dict[Slot, PreparedSlot], package: ModelPackage) -> list[str]:
    """Say where a synthetic DES's probability was recalibrated, and by how much."""
    notes = []
    for slot, prepared in slots.items():
        if prepared.source is not Source.SYNTHETIC:
            continue
        shifts = [fold.classifiers[slot].synthetic_logit_shift for fold in package.folds]
        if any(shift is not None for shift in shifts):
            mean = float(np.mean([shift or 0.0 for shift in shifts]))
            notes.append(
                f"{slot}: probability recalibrated for synthetic DES "
                f"(logit shift per fold, mean {mean:+.2f})"
            )
    return notes


def _missing_warnings(slots: dict[Slot, PreparedSlot]) -> list[str]:
    """Say which slots fusion had to do without (weights renormalised over the rest)."""
    missing = [slot for slot in SLOTS if slot not in slots]
    if not missing:
        return []
    return [f"missing {', '.join(missing)}: fused over the available inputs only"]


def _preview(image: MammogramImage, prepared: PreprocessedImage) -> SlotPicture:
    """The report's view of a real image: strided, stretched as preprocessing stretched it.

    Only a preview is kept, so the full-size pixels can go as soon as they are
    preprocessed (one full-size image in memory at a time).
    """
    from VirtualBiopsyLib.inference.report import display_stride

    stride = display_stride(image.shape)
    pixels = np.asarray(image.pixels[::stride, ::stride], dtype=np.float32)
    low, high = prepared.stretch_range
    if (low, high) != (0.0, 1.0):
        scale = np.float32(1.0 / (high - low)) if high > low else np.float32(0.0)
        pixels = np.clip((pixels - np.float32(low)) * scale, 0.0, 1.0)
    return SlotPicture.preview(pixels, stride, image.shape, image.spacing, image.info.path)


def _input_records(slots: dict[Slot, PreparedSlot]) -> dict[Slot, InputRecord]:
    records = {}
    for slot in SLOTS:
        prepared = slots.get(slot)
        if prepared is None:
            records[slot] = InputRecord(Source.MISSING)
        elif prepared.generated_from is not None:
            records[slot] = InputRecord(Source.SYNTHETIC, None, prepared.generated_from)
        else:
            path = str(prepared.path) if prepared.path is not None else None
            records[slot] = InputRecord(prepared.source, path)
    return records


def _is_dicom(path: Path) -> bool:
    from VirtualBiopsyLib.images.readers import image_format

    return image_format(Path(path)) == "dicom"
