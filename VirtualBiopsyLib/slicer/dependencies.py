"""Which Python packages the Slicer module needs beyond Slicer's own, and installing them.

torch and torchvision come from the PyTorch extension's installer
(``PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
torchVersionRequirement=">=2.2", torchvisionVersionRequirement=">=0.17")``), which picks
the CPU or CUDA build that fits the machine; pip-installing torch directly would fetch a
multi-GB build that may not match. numpy and SimpleITK are Slicer's own and are never
replaced. Everything else comes from ``pyproject.toml`` and is installed with one
confirmation that lists every package (``slicer.packaging.pip_ensure`` on Slicer ≥ 5.12,
``slicer.util.pip_install`` before). Nothing is installed at import time.

>>> "numpy" in [requirement_name(r) for r in module_requirements()]
False
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

#: Shipped with Slicer; replacing them breaks the application.
SLICER_PROVIDED = frozenset({"numpy", "simpleitk"})
#: Installed by the PyTorch extension, matched to the machine's CUDA.
TORCH_PACKAGES = frozenset({"torch", "torchvision"})
#: The run-time requirements as in pyproject.toml (used when it is not installed beside
#: the library, as in an installed extension; a test keeps the two equal).
BUNDLED_REQUIREMENTS: tuple[str, ...] = (
    "numpy>=1.26",
    "pydicom>=3.0",
    "SimpleITK>=2.3",
    "pynrrd>=1.0",
    "isal>=1.6",
    "pillow>=10",
    "openpyxl>=3.1",
    "pylibjpeg>=2.0",
    "pylibjpeg-openjpeg>=2.3",
    "pylibjpeg-libjpeg>=2.1",
    "pyjpegls>=1.4",
    "torch>=2.2",
    "torchvision>=0.17",
    "monai>=1.3",
    "safetensors>=0.4",
    "scikit-learn>=1.4",
    "scikit-image>=0.22",
    "scipy>=1.11",
    "matplotlib>=3.8",
    "tqdm>=4.66",
)


def requirement_name(requirement: str) -> str:
    """Normalised distribution name of a requirement string (PEP 503)."""
    name = re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_specifier(requirement: str) -> str:
    """The version part of a requirement, e.g. ``">=2.2"`` for ``"torch>=2.2"``."""
    return requirement.strip()[len(re.split(r"[\s<>=!~;\[(]", requirement.strip())[0]) :].strip()


def source_pyproject() -> Path | None:
    """``pyproject.toml`` of a source checkout, if the library runs from one."""
    candidate = Path(__file__).resolve().parents[2] / "pyproject.toml"
    return candidate if candidate.is_file() else None


def project_requirements(pyproject: Path | str | None = None) -> list[str]:
    """``[project].dependencies`` of ``pyproject.toml``, or the bundled copy without one."""
    path = Path(pyproject) if pyproject is not None else source_pyproject()
    if path is None:
        return list(BUNDLED_REQUIREMENTS)
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Slicer 5.12 ships Python 3.12
        import tomli as tomllib
    with path.open("rb") as stream:
        return list(tomllib.load(stream)["project"]["dependencies"])


def module_requirements(pyproject: Path | str | None = None) -> list[str]:
    """What pip must provide inside Slicer: the project's, less Slicer's own and torch."""
    skip = SLICER_PROVIDED | TORCH_PACKAGES
    return [r for r in project_requirements(pyproject) if requirement_name(r) not in skip]


def torch_requirements(pyproject: Path | str | None = None) -> dict[str, str]:
    """Version specifiers to pass to ``installTorch``: ``{"torch": ">=2.2", …}``."""
    found = {requirement_name(r): r for r in project_requirements(pyproject)}
    return {name: requirement_specifier(found[name]) for name in sorted(TORCH_PACKAGES)}


def missing_requirements(
    requirements: Iterable[str], version_of: Callable[[str], str] = metadata.version
) -> list[str]:
    """Requirements that are not installed or whose installed version does not fit."""
    from packaging.requirements import Requirement

    missing = []
    for text in requirements:
        requirement = Requirement(text)
        try:
            installed = version_of(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            missing.append(text)
    return missing


def confirmation_text(torch_needed: bool, packages: Sequence[str]) -> str:
    """The one question the user answers before anything is installed."""
    lines = ["VirtualBiopsy needs these Python packages, which are not installed yet:", ""]
    if torch_needed:
        lines.append("• PyTorch (torch, torchvision), installed by the PyTorch extension")
    lines += [f"• {package}" for package in packages]
    lines += ["", "They are downloaded from the Python Package Index (pypi.org). Install now?"]
    return "\n".join(lines)


class TorchInstaller(Protocol):
    """What the PyTorch extension's ``PyTorchUtilsLogic`` offers (the part we use)."""

    def installTorch(  # noqa: N802 - the extension's name
        self,
        askConfirmation: bool = False,  # noqa: N803
        forceComputationBackend: Any = None,  # noqa: N803
        torchVersionRequirement: str | None = None,  # noqa: N803
        torchvisionVersionRequirement: str | None = None,  # noqa: N803
    ) -> Any:
        """Install torch; returns the torch module or None when the user declined."""


@dataclass
class InstallPlan:
    """What is missing, so the module can ask once and install in the right order."""

    torch: dict[str, str]  # empty when torch and torchvision fit already
    packages: list[str]

    @property
    def nothing_to_do(self) -> bool:
        return not self.torch and not self.packages


def install_plan(
    pyproject: Path | str | None = None, version_of: Callable[[str], str] = metadata.version
) -> InstallPlan:
    """Compare the requirements with what is installed (no network, no pip)."""
    torch_specs = torch_requirements(pyproject)
    torch_missing = missing_requirements(
        [f"{name}{spec}" for name, spec in torch_specs.items()], version_of
    )
    packages = missing_requirements(module_requirements(pyproject), version_of)
    return InstallPlan(torch_specs if torch_missing else {}, packages)


def ensure_dependencies(
    plan: InstallPlan,
    confirm: Callable[[str], bool],
    torch_installer: TorchInstaller | None,
    pip_install: Callable[[list[str]], Any],
) -> bool:
    """Ask once, then install torch through the PyTorch extension and the rest with pip.

    Returns False when the user declined or the PyTorch extension is missing. The module
    passes ``slicer.util.confirmOkCancelDisplay``, ``PyTorchUtilsLogic()`` and
    ``slicer.packaging.pip_ensure`` (or ``slicer.util.pip_install``).

    >>> ensure_dependencies(InstallPlan({}, []), confirm=None, torch_installer=None,
    ...                     pip_install=None)
    True
    """
    if plan.nothing_to_do:
        return True
    if not confirm(confirmation_text(bool(plan.torch), plan.packages)):
        return False
    if plan.torch:
        if torch_installer is None:
            return False
        torch = torch_installer.installTorch(
            askConfirmation=False,
            torchVersionRequirement=plan.torch.get("torch"),
            torchvisionVersionRequirement=plan.torch.get("torchvision"),
        )
        if torch is None:
            return False
    if plan.packages:
        pip_install(list(plan.packages))
    return True
