"""Dependency installation logic of the Slicer module (no pip, no network).

The real pip dry-run against Slicer 5.12's bundled packages runs in CI
(``Testing/SlicerEnvironment/check_slicer_512.py``, called by ``.ci/run``); these tests
check the pieces it and the module rely on.
"""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

import pytest

from VirtualBiopsyLib.slicer import dependencies
from VirtualBiopsyLib.slicer.dependencies import (
    InstallPlan,
    ensure_dependencies,
    install_plan,
    module_requirements,
    pip_constraints,
    read_constraints,
    replaced_by_report,
    requirement_name,
)

REPOSITORY = Path(__file__).resolve().parents[2]
PYPROJECT = REPOSITORY / "pyproject.toml"
BUNDLED = REPOSITORY / "Testing" / "Data" / "slicer-5.12-bundled-python.txt"


def test_bundled_copy_matches_the_slicer_extra():
    """The installed extension has no pyproject.toml; its copy must not drift."""
    assert list(dependencies.SLICER_REQUIREMENTS) == dependencies.slicer_requirements(PYPROJECT)


def test_shipped_names_match_slicer_512_bundled_file():
    assert set(read_constraints(BUNDLED)) == set(dependencies.SLICER_SHIPPED)


def test_slicer_set_has_no_training_packages_and_never_pip_installs_torch():
    names = [requirement_name(r) for r in module_requirements(PYPROJECT)]
    for forbidden in ("monai", "scikit-learn", "torch", "torchvision"):
        assert forbidden not in names
    assert {"pydicom", "safetensors", "scikit-image", "highdicom"} <= set(names)


def test_slicer_set_satisfied_by_slicer_512_versions():
    """Every requirement the module states accepts the version Slicer 5.12 ships."""
    from packaging.requirements import Requirement

    bundled = read_constraints(BUNDLED)
    for text in module_requirements(PYPROJECT):
        requirement = Requirement(text)
        version = bundled.get(requirement_name(text))
        if version is not None:
            assert requirement.specifier.contains(version), f"{text} rejects Slicer's {version}"


def _top_level_imports(folder: Path) -> set[str]:
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


#: import name → distribution, for the third-party packages the library imports.
IMPORT_DISTRIBUTIONS = {
    "numpy": "numpy",
    "scipy": "scipy",
    "pydicom": "pydicom",
    "highdicom": "highdicom",
    "PIL": "pillow",
    "SimpleITK": "simpleitk",
    "nrrd": "pynrrd",
    "isal": "isal",
    "safetensors": "safetensors",
    "skimage": "scikit-image",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "openpyxl": "openpyxl",
    "torch": "torch",
    "torchvision": "torchvision",
    "packaging": "packaging",  # shipped by Slicer
    "psutil": None,  # optional (cancel uses it when present)
    "jsonschema": None,  # optional (model.json is checked by hand without it)
    "tomli": None,  # Python < 3.11 only
    "monai": None,  # only the CycleGAN discriminator (training) imports it, lazily
    "slicer": None,
    "vtk": None,
}


def test_every_library_import_is_in_the_slicer_set():
    """What VirtualBiopsyLib imports comes with Slicer or from the slicer extra."""
    stdlib = set(sys.stdlib_module_names) | {"VirtualBiopsyLib", "__future__"}
    used = _top_level_imports(REPOSITORY / "VirtualBiopsyLib") - stdlib
    unknown = used - set(IMPORT_DISTRIBUTIONS)
    assert not unknown, f"map these imports to a distribution: {sorted(unknown)}"
    declared = {requirement_name(r) for r in dependencies.slicer_requirements(PYPROJECT)}
    shipped = set(dependencies.SLICER_SHIPPED)
    for module in used:
        distribution = IMPORT_DISTRIBUTIONS[module]
        if distribution is not None:
            assert distribution in declared | shipped, f"{module} ({distribution}) not declared"


def test_monai_is_imported_only_inside_a_function():
    """MONAI is a training package: no module-level import in the library."""
    for path in (REPOSITORY / "VirtualBiopsyLib").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                assert not any(n.split(".")[0] == "monai" for n in names), path


def test_torch_version_requirements_come_from_pyproject():
    assert dependencies.torch_requirements(PYPROJECT) == {"torch": ">=2.2", "torchvision": ">=0.17"}


def fake_versions(installed: dict[str, str]):
    def version_of(name: str) -> str:
        try:
            return installed[requirement_name(name)]
        except KeyError:
            raise metadata.PackageNotFoundError(name) from None

    return version_of


def test_install_plan_lists_missing_and_too_old():
    everything = {requirement_name(r): "99.0" for r in dependencies.SLICER_REQUIREMENTS}
    installed = dict(everything)
    installed["tqdm"] = "4.0"  # too old: >=4.66, not Slicer's own: pip may upgrade it
    del installed["safetensors"]
    del installed["torch"]
    plan = install_plan(PYPROJECT, fake_versions(installed))
    assert plan.packages == ["safetensors>=0.4", "tqdm>=4.66"]
    assert plan.torch == {"torch": ">=2.2", "torchvision": ">=0.17"}
    assert plan.blocked == []
    assert install_plan(PYPROJECT, fake_versions(everything)).nothing_to_do


def test_slicer_package_too_old_blocks_instead_of_replacing():
    """Slicer 5.10 shipped pydicom 2.4.4: VirtualBiopsy says which Slicer it needs."""
    installed = {requirement_name(r): "99.0" for r in dependencies.SLICER_REQUIREMENTS}
    installed["pydicom"] = "2.4.4"
    plan = install_plan(PYPROJECT, fake_versions(installed))
    assert plan.packages == []
    assert plan.blocked == ["pydicom>=3.0 (Slicer ships pydicom 2.4.4)"]
    assert "Slicer 5.12 or later" in dependencies.blocked_message(plan)
    pip_calls = []
    assert not ensure_dependencies(plan, lambda text: True, lambda: None, pip_calls.append)
    assert pip_calls == []


def test_constraints_hold_everything_installed_but_the_agreed_upgrades():
    installed = {"numpy": "2.4.6", "torch": "2.13.0", "tqdm": "4.10.0", "simpleitk": "2.5.5"}
    assert pip_constraints(installed, ["tqdm>=4.66", "pynrrd>=1.0"]) == [
        "numpy==2.4.6",
        "simpleitk==2.5.5",
        "torch==2.13.0",
    ]


def test_constraints_file_pins_this_environment(tmp_path):
    path = dependencies.write_constraints(tmp_path / "c.txt", ["pynrrd>=1.0"])
    lines = path.read_text().split()
    assert f"pytest=={metadata.version('pytest')}" in lines
    assert f"numpy=={metadata.version('numpy')}" in lines
    assert not any(line.startswith("pynrrd==") for line in lines)


def test_report_check_finds_a_replaced_package():
    protected = {"numpy": "2.4.6", "torch": "2.13.0"}
    report = {
        "install": [
            {"metadata": {"name": "pynrrd", "version": "1.1.3"}},
            {"metadata": {"name": "NumPy", "version": "2.5.0"}},
        ]
    }
    assert replaced_by_report(report, protected) == ["numpy: 2.4.6 -> 2.5.0"]
    assert replaced_by_report({"install": report["install"][:1]}, protected) == []
    same = {"install": [{"metadata": {"name": "torch", "version": "2.13.0"}}]}
    assert replaced_by_report(same, protected) == []  # a reinstall of the same version


class FakeTorchInstaller:
    def __init__(self, result="torch-module"):
        self.calls = []
        self.result = result

    def installTorch(  # noqa: N802 - the PyTorch extension's API names
        self,
        askConfirmation=False,  # noqa: N803
        forceComputationBackend=None,  # noqa: N803
        torchVersionRequirement=None,  # noqa: N803
        torchvisionVersionRequirement=None,  # noqa: N803
    ):
        self.calls.append((askConfirmation, torchVersionRequirement, torchvisionVersionRequirement))
        return self.result


def test_one_confirmation_then_torch_then_pip():
    questions, pip_calls = [], []
    torch_installer = FakeTorchInstaller()
    plan = InstallPlan({"torch": ">=2.2", "torchvision": ">=0.17"}, ["pynrrd>=1.0"])

    ok = ensure_dependencies(
        plan, lambda text: questions.append(text) or True, lambda: torch_installer, pip_calls.append
    )

    assert ok
    assert len(questions) == 1
    assert "pynrrd>=1.0" in questions[0] and "PyTorch" in questions[0]
    assert torch_installer.calls == [(False, ">=2.2", ">=0.17")]
    assert pip_calls == [["pynrrd>=1.0"]]


def test_torch_installer_made_only_when_torch_is_missing():
    made = []
    plan = InstallPlan({}, ["pynrrd>=1.0"])
    assert ensure_dependencies(plan, lambda text: True, lambda: made.append(1), lambda r: None)
    assert made == []


@pytest.mark.parametrize("declined", ["user", "torch-installer", "no-extension"])
def test_nothing_installed_when_declined(declined):
    pip_calls = []
    torch_installer = (
        None
        if declined == "no-extension"
        else FakeTorchInstaller(None if declined == "torch-installer" else "torch")
    )
    plan = InstallPlan({"torch": ">=2.2"}, ["pynrrd>=1.0"])
    ok = ensure_dependencies(
        plan, lambda text: declined != "user", lambda: torch_installer, pip_calls.append
    )
    assert not ok
    assert pip_calls == []
