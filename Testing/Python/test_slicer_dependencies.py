"""Dependency installation logic of the Slicer module (no pip, no network)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from VirtualBiopsyLib.slicer import dependencies
from VirtualBiopsyLib.slicer.dependencies import (
    InstallPlan,
    ensure_dependencies,
    install_plan,
    module_requirements,
    requirement_name,
)

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_bundled_copy_matches_pyproject():
    """The installed extension has no pyproject.toml; its copy must not drift."""
    assert list(dependencies.BUNDLED_REQUIREMENTS) == dependencies.project_requirements(PYPROJECT)


def test_never_replaces_slicer_packages_or_pip_installs_torch():
    names = [requirement_name(r) for r in module_requirements(PYPROJECT)]
    for forbidden in ("numpy", "simpleitk", "torch", "torchvision"):
        assert forbidden not in names
    assert {"pydicom", "monai", "safetensors", "scikit-image"} <= set(names)


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
    installed = {requirement_name(r): "99.0" for r in dependencies.BUNDLED_REQUIREMENTS}
    installed["monai"] = "1.2.0"  # too old: >=1.3
    del installed["safetensors"]
    del installed["torch"]
    plan = install_plan(PYPROJECT, fake_versions(installed))
    assert plan.packages == ["monai>=1.3", "safetensors>=0.4"]
    assert plan.torch == {"torch": ">=2.2", "torchvision": ">=0.17"}
    everything = install_plan(
        PYPROJECT,
        fake_versions({requirement_name(r): "99.0" for r in dependencies.BUNDLED_REQUIREMENTS}),
    )
    assert everything.nothing_to_do


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
    plan = InstallPlan({"torch": ">=2.2", "torchvision": ">=0.17"}, ["monai>=1.3"])

    ok = ensure_dependencies(
        plan, lambda text: questions.append(text) or True, torch_installer, pip_calls.append
    )

    assert ok
    assert len(questions) == 1
    assert "monai>=1.3" in questions[0] and "PyTorch" in questions[0]
    assert torch_installer.calls == [(False, ">=2.2", ">=0.17")]
    assert pip_calls == [["monai>=1.3"]]


@pytest.mark.parametrize("declined", ["user", "torch-installer", "no-extension"])
def test_nothing_installed_when_declined(declined):
    pip_calls = []
    torch_installer = (
        None
        if declined == "no-extension"
        else FakeTorchInstaller(None if declined == "torch-installer" else "torch")
    )
    plan = InstallPlan({"torch": ">=2.2"}, ["monai>=1.3"])
    ok = ensure_dependencies(
        plan, lambda text: declined != "user", torch_installer, pip_calls.append
    )
    assert not ok
    assert pip_calls == []
