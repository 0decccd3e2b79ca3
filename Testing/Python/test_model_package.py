"""Model package: round trip, lazy loading, and every refusal (tampering, format, schema)."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import VirtualBiopsyLib
from VirtualBiopsyLib.errors import ModelPackageError, OutputExistsError
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams
from VirtualBiopsyLib.models import package as package_module
from VirtualBiopsyLib.models.classifiers import build_classifier
from VirtualBiopsyLib.models.cyclegan import DEMO_GENERATOR, build_generator
from VirtualBiopsyLib.models.package import (
    DEMO_INTENDED_USE,
    FoldModels,
    ModelPackage,
    demo_package_path,
    load_package,
    write_package,
)
from VirtualBiopsyLib.roles import SLOTS, Modality, View

REPO_ROOT = Path(__file__).resolve().parents[2]
VAL_MCC = [
    {"LE_CC": 0.21, "LE_MLO": 0.12, "DES_CC": 0.63, "DES_MLO": 0.55},
    {"LE_CC": -0.05, "LE_MLO": 0.30, "DES_CC": 0.48, "DES_MLO": 0.61},
]
MODALITY_MCC = [{"LE": 0.18, "DES": 0.66}, {"LE": 0.25, "DES": 0.59}]
IMAGES = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))


def _trained_like(network: torch.nn.Module) -> torch.nn.Module:
    """Give every parameter and buffer distinct values so a mix-up would show."""
    with torch.no_grad():
        for tensor in network.state_dict().values():  # what a package stores
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.01)
    return network.eval()


@pytest.fixture
def networks() -> dict[str, object]:
    torch.manual_seed(0)
    folds = [
        FoldModels(
            classifiers={slot: _trained_like(build_classifier("demo")) for slot in SLOTS},
            val_mcc=VAL_MCC[index],
            modality_mcc={Modality(m): v for m, v in MODALITY_MCC[index].items()},
        )
        for index in range(2)
    ]
    generator = _trained_like(build_generator(**DEMO_GENERATOR))
    return {"folds": folds, "generators": {View.CC: generator}}


@pytest.fixture
def package_dir(tmp_path: Path, networks: dict[str, object]) -> Path:
    return write_package(
        tmp_path / "TinyModel",
        name="tiny",
        version="0.0.1",
        architecture="demo",
        folds=networks["folds"],
        generators=networks["generators"],
        preprocessing=PreprocessingParams(size=64, stretch="percentile", flip_left=False),
        provenance={"dataset_manifest_sha256": "0" * 64, "test_metrics": {"auc": 0.5}},
        is_demo=True,
    )


def _manifest(package_dir: Path) -> dict:
    return json.loads((package_dir / "model.json").read_text())


def _rewrite_manifest(package_dir: Path, manifest: dict) -> None:
    (package_dir / "model.json").write_text(json.dumps(manifest))


def test_round_trip_gives_the_same_outputs(package_dir: Path, networks: dict) -> None:
    package = load_package(package_dir)
    with torch.no_grad():
        for index, fold in enumerate(networks["folds"]):
            for slot in SLOTS:
                loaded = package.load_classifier(index, slot)  # batch norms folded
                expected = fold.classifiers[slot](IMAGES)
                assert torch.allclose(loaded(IMAGES), expected, atol=1e-5, rtol=1e-5)
        synthetic_des = package.load_generator(View.CC)(IMAGES)
        assert torch.equal(synthetic_des, networks["generators"][View.CC](IMAGES))


def test_round_trip_keeps_the_description(package_dir: Path) -> None:
    package = load_package(package_dir)
    assert isinstance(package, ModelPackage)
    assert (package.name, package.version, package.architecture) == ("tiny", "0.0.1", "demo")
    assert package.image_size == 64
    assert package.preprocessing == PreprocessingParams(
        size=64, stretch="percentile", flip_left=False
    )
    assert package.threshold == 0.5
    assert package.is_demo is True
    assert package.intended_use == DEMO_INTENDED_USE
    assert [fold.slot_mcc for fold in package.folds] == VAL_MCC
    assert package.folds[1].modality_mcc == {Modality.LE: 0.25, Modality.DES: 0.59}
    assert set(package.generators) == {View.CC}
    assert (package.generators[View.CC].ngf, package.generators[View.CC].n_blocks) == (8, 2)
    assert package.sha256 == hashlib.sha256((package_dir / "model.json").read_bytes()).hexdigest()
    assert package.provenance["test_metrics"] == {"auc": 0.5}
    assert package.provenance["code_version"] == VirtualBiopsyLib.__version__
    assert package.slots == SLOTS
    assert (package_dir / "model.json").stat().st_mode & 0o777 == 0o644  # readable by all


def test_demo_package_is_labelled_demo_everywhere(package_dir: Path) -> None:
    manifest = _manifest(package_dir)
    assert manifest["research_use_notice"] == VirtualBiopsyLib.RESEARCH_USE_NOTICE
    assert manifest["synthetic_notice"] == VirtualBiopsyLib.SYNTHETIC_NOTICE
    assert "synthetic phantom data" in manifest["intended_use"]
    weight_files = sorted(p.name for p in package_dir.glob("*.safetensors"))
    assert len(weight_files) == 9 and all("demo" in name for name in weight_files)
    with safe_open(str(package_dir / weight_files[0]), framework="pt") as weights:
        assert weights.metadata()["is_demo"] == "true"


def test_missing_generator_view_returns_none(package_dir: Path) -> None:
    assert load_package(package_dir).load_generator("MLO") is None


def test_package_without_generators(tmp_path: Path, networks: dict) -> None:
    path = write_package(
        tmp_path / "NoGan", name="x", version="1", architecture="demo", folds=networks["folds"]
    )
    package = load_package(path)
    assert package.generators == {}
    assert package.is_demo is False
    assert "Research only" in package.intended_use
    assert package.load_generator(View.CC) is None


def test_networks_load_lazily_and_the_package_keeps_none(package_dir: Path, tmp_path: Path) -> None:
    """Weights are read when a network is asked for, not when the package is; the package
    record holds no networks (a run keeps what it loads: inference.pipeline.LoadedModels)."""
    copy = Path(shutil.copytree(package_dir, tmp_path / "copy"))
    package = load_package(copy)
    (copy / package.folds[1].classifiers["DES_MLO"].file).unlink()
    with pytest.raises(ModelPackageError, match="missing"):
        package.load_classifier(1, "DES_MLO")
    first = package.load_classifier(0, "DES_MLO")
    assert not first.training
    assert package.load_classifier(0, "DES_MLO") is not first
    assert package.load_generator("CC") is not package.load_generator(View.CC)


def test_loading_needs_no_pickle(package_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("unpickling attempted")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    package = load_package(package_dir)
    with torch.no_grad():
        assert package.load_classifier(0, "LE_CC")(IMAGES).shape == (2, 2)
        assert package.load_generator("CC")(IMAGES).shape == IMAGES.shape


def test_verifying_a_package_does_not_import_torch(package_dir: Path) -> None:
    code = (
        "import sys; from VirtualBiopsyLib.models.package import load_package; "
        f"load_package({str(package_dir)!r}); print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# --- refusals --------------------------------------------------------------------------


def test_tampered_weights_are_refused(package_dir: Path) -> None:
    target = package_dir / "demo_fold1_DES_CC.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match=r"demo_fold1_DES_CC\.safetensors: SHA-256"):
        load_package(package_dir)


def test_weights_changed_after_verification_are_refused(package_dir: Path) -> None:
    package = load_package(package_dir)
    target = package_dir / "demo_generator_LE_to_DES_CC.safetensors"
    target.write_bytes(target.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(ModelPackageError, match=r"generator_LE_to_DES_CC.*SHA-256 mismatch"):
        package.load_generator("CC")


def test_missing_weight_file_is_refused(package_dir: Path) -> None:
    (package_dir / "demo_fold0_LE_MLO.safetensors").unlink()
    with pytest.raises(ModelPackageError, match=r"demo_fold0_LE_MLO\.safetensors.*missing"):
        load_package(package_dir)


def test_unknown_format_version_is_refused(package_dir: Path) -> None:
    manifest = _manifest(package_dir)
    manifest["format_version"] = 2
    _rewrite_manifest(package_dir, manifest)
    with pytest.raises(ModelPackageError, match=r"model\.json: unknown format_version 2"):
        load_package(package_dir)


def test_invalid_json_is_refused(package_dir: Path) -> None:
    (package_dir / "model.json").write_text('{"format_version": 1,,}')
    with pytest.raises(ModelPackageError, match=r"model\.json: invalid JSON at line 1"):
        load_package(package_dir)


def test_missing_manifest_and_missing_folder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match="folder not found"):
        load_package(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelPackageError, match=r"model\.json: missing"):
        load_package(tmp_path / "empty")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("folds"), "folds"),
        (lambda m: m.update(threshold="high"), "threshold"),
        (lambda m: m.update(architecture="alexnet"), "architecture"),
        (
            lambda m: m["folds"][0]["classifiers"].update(
                XX_CC=m["folds"][0]["classifiers"]["LE_CC"]
            ),
            "XX_CC",
        ),
        (
            lambda m: m["folds"][0]["classifiers"]["LE_CC"].update(file="../outside.safetensors"),
            "outside",
        ),
        (lambda m: m["folds"][0]["classifiers"]["LE_CC"].update(file="weights.pth"), "pth"),
    ],
    ids=["no-folds", "threshold-type", "architecture", "unknown-slot", "path-escape", "pickle"],
)
def test_schema_violations_are_refused(package_dir: Path, edit, message: str) -> None:
    manifest = _manifest(package_dir)
    edit(manifest)
    _rewrite_manifest(package_dir, manifest)
    with pytest.raises(ModelPackageError, match=rf"model\.json: .*{message}"):
        load_package(package_dir)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.pop("folds"),
        lambda m: m.update(threshold="high"),
        lambda m: m["folds"][0]["classifiers"]["LE_CC"].update(file="../outside.safetensors"),
        lambda m: m["generators"]["CC"].update(ngf="8"),
    ],
    ids=["no-folds", "threshold-type", "path-escape", "ngf-type"],
)
def test_light_checks_refuse_without_jsonschema(
    package_dir: Path, monkeypatch: pytest.MonkeyPatch, edit
) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import jsonschema → ImportError
    manifest = _manifest(package_dir)
    edit(manifest)
    _rewrite_manifest(package_dir, manifest)
    with pytest.raises(ModelPackageError, match=r"model\.json"):
        load_package(package_dir)


def test_non_finite_mcc_is_refused(package_dir: Path, networks: dict) -> None:
    manifest_text = (package_dir / "model.json").read_text()
    (package_dir / "model.json").write_text(
        manifest_text.replace('"val_mcc": 0.21', '"val_mcc": NaN')
    )
    with pytest.raises(ModelPackageError, match=r"model\.json: .*val_mcc"):
        load_package(package_dir)
    fold = networks["folds"][0]
    nan_fold = FoldModels(fold.classifiers, {**fold.val_mcc, "DES_CC": float("nan")}, {"LE": 0.1})
    with pytest.raises(ValueError, match="fold 0 DES_CC: validation MCC nan"):
        write_package(
            package_dir.parent / "NaN", name="x", version="1", architecture="demo", folds=[nan_fold]
        )


def test_weights_that_do_not_fit_the_architecture_are_refused(package_dir: Path) -> None:
    manifest = _manifest(package_dir)
    manifest["architecture"] = "resnet18"  # the files still hold demo networks
    _rewrite_manifest(package_dir, manifest)
    package = load_package(package_dir)
    with pytest.raises(
        ModelPackageError, match=r"demo_fold0_LE_CC\.safetensors: weights do not fit"
    ):
        package.load_classifier(0, "LE_CC")


def test_generator_size_mismatch_is_refused(package_dir: Path) -> None:
    manifest = _manifest(package_dir)
    manifest["generators"]["CC"]["ngf"] = 16
    _rewrite_manifest(package_dir, manifest)
    with pytest.raises(ModelPackageError, match="do not fit the ResnetGenerator"):
        load_package(package_dir).load_generator("CC")


def test_unknown_fold_or_slot_is_refused(package_dir: Path) -> None:
    package = load_package(package_dir)
    with pytest.raises(ModelPackageError, match="no fold 5"):
        package.load_classifier(5, "LE_CC")
    manifest = _manifest(package_dir)
    del manifest["folds"][0]["classifiers"]["DES_MLO"]
    _rewrite_manifest(package_dir, manifest)
    partial = load_package(package_dir)
    assert partial.slots == ("LE_CC", "LE_MLO", "DES_CC")
    with pytest.raises(ModelPackageError, match="fold 0 has no DES_MLO"):
        partial.load_classifier(0, "DES_MLO")


# --- writing ---------------------------------------------------------------------------


def test_existing_package_is_not_overwritten(package_dir: Path, networks: dict) -> None:
    before = (package_dir / "model.json").read_bytes()
    with pytest.raises(OutputExistsError, match="TinyModel"):
        write_package(
            package_dir, name="y", version="2", architecture="demo", folds=networks["folds"]
        )
    assert (package_dir / "model.json").read_bytes() == before


def test_overwrite_replaces_atomically_and_leaves_no_temporaries(
    package_dir: Path, networks: dict
) -> None:
    write_package(
        package_dir,
        name="second",
        version="2",
        architecture="demo",
        folds=networks["folds"][:1],
        overwrite=True,
    )
    package = load_package(package_dir)
    assert (package.name, len(package.folds), package.generators) == ("second", 1, {})
    assert sorted(p.name for p in package_dir.parent.iterdir()) == ["TinyModel"]
    assert not list(package_dir.glob("*.tmp")) and not list(package_dir.glob("*generator*"))


def test_failed_write_leaves_nothing_behind(tmp_path: Path, networks: dict) -> None:
    fold = networks["folds"][0]
    with pytest.raises(ValueError, match="'demo'.*'resnet18'"):
        write_package(
            tmp_path / "Bad", name="x", version="1", architecture="resnet18", folds=[fold]
        )
    bad_mcc = FoldModels(fold.classifiers, {"LE_CC": 0.1}, fold.modality_mcc)
    with pytest.raises(ValueError, match="no validation MCC for LE_MLO"):
        write_package(tmp_path / "Bad", name="x", version="1", architecture="demo", folds=[bad_mcc])
    assert list(tmp_path.iterdir()) == []


def test_written_manifest_matches_the_published_schema(package_dir: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(package_module.SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(_manifest(package_dir), schema)


def test_demo_package_path_points_into_resources() -> None:
    path = demo_package_path()
    assert path == REPO_ROOT / "VirtualBiopsyLib" / "Resources" / "DemoModel"


def test_a_folder_without_model_json_is_named_even_as_dot(tmp_path, monkeypatch) -> None:
    """`--model .` or `--baseline ""` in a folder that is no package: the message names the
    folder, not just "model.json"."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelPackageError, match=re.escape(f"{tmp_path}/model.json: missing")):
        load_package("")
