"""Which Python packages the Slicer module needs beyond Slicer's own, and installing them.

The list is the ``slicer`` extra of ``pyproject.toml`` (inference only: no MONAI, no
scikit-learn, no training packages). torch and torchvision come from the PyTorch
extension's installer (``PyTorchUtils.PyTorchUtilsLogic().installTorch(...)``), which
picks the CPU or CUDA build that fits the machine; pip never installs them. The rest is
installed with one confirmation that lists every package, through
``slicer.packaging.pip_ensure`` with a constraints file that holds every installed
distribution at its installed version: pip may add packages, and may upgrade only those
listed in the dialog, never one that Slicer ships (numpy, SimpleITK, pydicom, …) or the
torch build the PyTorch extension chose. Nothing is installed at import time.

>>> "monai" in [requirement_name(r) for r in module_requirements()]
False
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

#: Installed by the PyTorch extension, matched to the machine's CUDA.
TORCH_PACKAGES = frozenset({"torch", "torchvision"})
#: Distributions Slicer 5.12 ships in its Python (Slicer v5.12.3,
#: SuperBuild/External_python-*.cmake; Testing/Data/slicer-5.12-bundled-python.txt lists
#: their versions and a test keeps these names equal to that file). pip must never
#: replace them: a too-old one means the Slicer is too old, not that pip should upgrade it.
SLICER_SHIPPED = frozenset(
    {
        "numpy",
        "scipy",
        "pydicom",
        "highdicom",
        "pyjpegls",
        "pillow",
        "simpleitk",
        "dcmqi",
        "dicomweb-client",
        "retrying",
        "six",
        "typing-extensions",
        "packaging",
        "pyparsing",
        "requests",
        "certifi",
        "charset-normalizer",
        "idna",
        "urllib3",
        "setuptools",
        "wheel",
        "pip",
        "gitpython",
        "chardet",
        "couchdb",
        "gitdb",
        "smmap",
        "deprecated",
        "pygithub",
        "pyjwt",
        "pynacl",
        "cffi",
        "cryptography",
        "pycparser",
        "python-dateutil",
        "wrapt",
    }
)
#: The ``slicer`` extra of pyproject.toml, for an installed extension (no pyproject.toml
#: beside it). ``test_slicer_dependencies.py`` keeps the two equal.
SLICER_REQUIREMENTS: tuple[str, ...] = (
    "numpy>=1.26",
    "scipy>=1.11",
    "pydicom>=3.0",
    "highdicom>=0.22",
    "pyjpegls>=1.4",
    "pillow>=10",
    "SimpleITK>=2.3",
    "pynrrd>=1.0",
    "isal>=1.6",
    "pylibjpeg>=2.0",
    "pylibjpeg-openjpeg>=2.3",
    "pylibjpeg-libjpeg>=2.1",
    "safetensors>=0.4",
    "scikit-image>=0.22",
    "matplotlib>=3.8",
    "tqdm>=4.66",
    "openpyxl>=3.1",
    "torch>=2.2",
    "torchvision>=0.17",
)
#: The extra in pyproject.toml that declares the Slicer set.
SLICER_EXTRA = "slicer"


def normalize_name(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """Normalised distribution name of a requirement string (PEP 503)."""
    return normalize_name(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])


def requirement_specifier(requirement: str) -> str:
    """The version part of a requirement, e.g. ``">=2.2"`` for ``"torch>=2.2"``."""
    return requirement.strip()[len(re.split(r"[\s<>=!~;\[(]", requirement.strip())[0]) :].strip()


def source_pyproject() -> Path | None:
    """``pyproject.toml`` of a source checkout, if the library runs from one."""
    candidate = Path(__file__).resolve().parents[2] / "pyproject.toml"
    return candidate if candidate.is_file() else None


def slicer_requirements(pyproject: Path | str | None = None) -> list[str]:
    """The ``slicer`` extra of ``pyproject.toml``, or the bundled copy without one."""
    path = Path(pyproject) if pyproject is not None else source_pyproject()
    if path is None:
        return list(SLICER_REQUIREMENTS)
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Slicer 5.12 ships Python 3.12
        import tomli as tomllib
    with path.open("rb") as stream:
        extras = tomllib.load(stream)["project"]["optional-dependencies"]
    return list(extras[SLICER_EXTRA])


def module_requirements(pyproject: Path | str | None = None) -> list[str]:
    """What pip provides inside Slicer: the Slicer set less torch and torchvision."""
    return [r for r in slicer_requirements(pyproject) if requirement_name(r) not in TORCH_PACKAGES]


def torch_requirements(pyproject: Path | str | None = None) -> dict[str, str]:
    """Version specifiers to pass to ``installTorch``: ``{"torch": ">=2.2", …}``."""
    found = {requirement_name(r): r for r in slicer_requirements(pyproject)}
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


def installed_distributions() -> dict[str, str]:
    """Normalised name → version of every distribution in this Python."""
    found: dict[str, str] = {}
    for distribution in metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            found.setdefault(normalize_name(name), distribution.version)
    return found


def pip_constraints(installed: Mapping[str, str], upgrades: Iterable[str] = ()) -> list[str]:
    """``name==version`` for every installed distribution pip must leave as it is.

    Only the packages in ``upgrades`` (the ones the user agreed to) may change.

    >>> pip_constraints({"numpy": "2.4.6", "tqdm": "4.0"}, ["tqdm>=4.66"])
    ['numpy==2.4.6']
    """
    free = {requirement_name(r) for r in upgrades}
    return [f"{name}=={version}" for name, version in sorted(installed.items()) if name not in free]


def confirmation_text(torch_needed: bool, packages: Sequence[str]) -> str:
    """The one question the user answers before anything is installed."""
    lines = ["VirtualBiopsy needs these Python packages, which are not installed yet:", ""]
    if torch_needed:
        lines.append("• PyTorch (torch, torchvision), installed by the PyTorch extension")
    lines += [f"• {package}" for package in packages]
    lines += [
        "",
        "They are downloaded from the Python Package Index (pypi.org); the packages Slicer "
        "ships keep their versions. Install now?",
    ]
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
    """What is missing, so the module can ask once and install in the right order.

    ``blocked`` lists packages Slicer ships at a version too old for VirtualBiopsy: pip
    may not replace them, so nothing is installed and the user is told which Slicer to use.
    """

    torch: dict[str, str]  # empty when torch and torchvision fit already
    packages: list[str]
    blocked: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not self.torch and not self.packages and not self.blocked


def install_plan(
    pyproject: Path | str | None = None,
    version_of: Callable[[str], str] = metadata.version,
    shipped: Iterable[str] = SLICER_SHIPPED,
) -> InstallPlan:
    """Compare the requirements with what is installed (no network, no pip)."""
    torch_specs = torch_requirements(pyproject)
    torch_missing = missing_requirements(
        [f"{name}{spec}" for name, spec in torch_specs.items()], version_of
    )
    shipped = {normalize_name(n) for n in shipped}
    packages, blocked = [], []
    for requirement in missing_requirements(module_requirements(pyproject), version_of):
        name = requirement_name(requirement)
        try:
            installed = version_of(name)
        except metadata.PackageNotFoundError:
            installed = None
        if name in shipped and installed is not None:
            blocked.append(f"{requirement} (Slicer ships {name} {installed})")
        else:
            packages.append(requirement)
    return InstallPlan(torch_specs if torch_missing else {}, packages, blocked)


def blocked_message(plan: InstallPlan) -> str:
    """What to tell the user when Slicer's own packages are too old."""
    return (
        "VirtualBiopsy needs Slicer 5.12 or later: this Slicer's own Python packages are too "
        "old, and they must not be replaced by pip:\n" + "\n".join(f"• {b}" for b in plan.blocked)
    )


def ensure_dependencies(
    plan: InstallPlan,
    confirm: Callable[[str], bool],
    torch_installer: Callable[[], TorchInstaller | None],
    pip_install: Callable[[list[str]], Any],
) -> bool:
    """Ask once, then install torch through the PyTorch extension and the rest with pip.

    ``torch_installer`` is a factory called only when torch is actually missing (so a
    Slicer without the PyTorch extension but with torch works). Returns False when the
    user declined, the PyTorch extension is missing, or Slicer's own packages are too old.
    The module passes ``slicer.util.confirmOkCancelDisplay``, a factory of
    ``PyTorchUtilsLogic()`` and ``slicer.packaging.pip_ensure`` given the file of
    :func:`write_constraints` (the user has confirmed already: no second prompt).

    >>> ensure_dependencies(InstallPlan({}, []), confirm=None, torch_installer=None,
    ...                     pip_install=None)
    True
    """
    if plan.nothing_to_do:
        return True
    if plan.blocked:
        return False
    if not confirm(confirmation_text(bool(plan.torch), plan.packages)):
        return False
    if plan.torch:
        installer = torch_installer()
        if installer is None:
            return False
        torch = installer.installTorch(
            askConfirmation=False,
            torchVersionRequirement=plan.torch.get("torch"),
            torchvisionVersionRequirement=plan.torch.get("torchvision"),
        )
        if torch is None:
            return False
    if plan.packages:
        pip_install(list(plan.packages))
    return True


def write_constraints(path: Path | str, requirements: Sequence[str]) -> Path:
    """Write the constraints file that holds every installed package (see the docstring)."""
    path = Path(path)
    lines = pip_constraints(installed_distributions(), requirements)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- pip report


def read_constraints(path: Path | str) -> dict[str, str]:
    """``name==version`` lines of a constraints file (comments ignored) → name → version."""
    pins = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if "==" in text:
            name, version = text.split("==", 1)
            pins[normalize_name(name)] = version.strip()
    return pins


def replaced_by_report(report: Mapping[str, Any], protected: Mapping[str, str]) -> list[str]:
    """Protected packages a ``pip install --dry-run --report`` would install or change.

    ``protected`` maps name → the version that must stay (Slicer's bundled versions and
    the installed torch). Returns ``"name: old -> new"`` lines; empty when nothing changes.
    """
    changed = []
    for item in report.get("install", []):
        meta = item.get("metadata", {})
        name = normalize_name(str(meta.get("name", "")))
        if name in protected and str(meta.get("version")) != protected[name]:
            changed.append(f"{name}: {protected[name]} -> {meta.get('version')}")
    return sorted(changed)


def load_report(path: Path | str) -> dict[str, Any]:
    """A pip installation report (``pip install --report FILE``)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
