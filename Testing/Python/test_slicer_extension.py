"""The Slicer extension's files, checked against Slicer's own API names and the catalog.

Slicer itself cannot run here, so these tests read the module file (AST) and the .ui
(XML) and compare every Slicer API and widget class they use with
``Testing/Data/slicer-api.json`` (names read from Slicer's source), validate the
catalog entry against its JSON schema, and check that CMake installs every library file.
"""

from __future__ import annotations

import ast
import json
import re
import struct
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import jsonschema
import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
MODULE_FILE = REPOSITORY / "VirtualBiopsy" / "VirtualBiopsy.py"
UI_FILE = REPOSITORY / "VirtualBiopsy" / "Resources" / "UI" / "VirtualBiopsy.ui"
ICON_FILE = REPOSITORY / "VirtualBiopsy" / "Resources" / "Icons" / "VirtualBiopsy.png"
LIBRARY = REPOSITORY / "VirtualBiopsyLib"
DATA = REPOSITORY / "Testing" / "Data"  # reference files, see Testing/Data/README.md


def _reference(name: str) -> Path:
    path = DATA / name
    assert path.is_file(), f"reference file {name} missing from {DATA}"
    return path


@pytest.fixture(scope="module")
def slicer_api() -> dict:
    return json.loads(_reference("slicer-api.json").read_text())


def _names(signatures: list[str]) -> set[str]:
    return {signature.split("(")[0] for signature in signatures}


def _arguments(signatures: list[str]) -> dict[str, set[str]]:
    found = {}
    for signature in signatures:
        name, _, rest = signature.partition("(")
        found[name] = {a.strip().lstrip("*") for a in rest.rstrip(")").split(",") if a.strip()}
    return found


@pytest.fixture(scope="module")
def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.insert(0, node.id)
        return ".".join(parts)
    return None


def _calls(tree: ast.Module, prefix: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and (_dotted(node.func) or "").startswith(prefix)
    ]


def test_module_calls_only_existing_slicer_util_functions(module_tree, slicer_api):
    util = _arguments(slicer_api["slicer.util"])
    calls = _calls(module_tree, "slicer.util.")
    assert calls, "the module should use slicer.util (loadUI, childWidgetVariables, …)"
    for call in calls:
        name = _dotted(call.func).removeprefix("slicer.util.")
        assert name in util, f"slicer.util.{name} is not a Slicer API"
        for keyword in call.keywords:
            assert keyword.arg in util[name] or "kwargs" in util[name], (
                f"slicer.util.{name} has no argument {keyword.arg}"
            )


def test_module_calls_only_existing_packaging_functions(module_tree, slicer_api):
    packaging = _arguments(slicer_api["slicer.packaging"])
    calls = _calls(module_tree, "slicer.packaging.")
    assert calls, "the module installs packages with slicer.packaging.pip_ensure"
    for call in calls:
        name = _dotted(call.func).removeprefix("slicer.packaging.")
        assert name in packaging
        assert {k.arg for k in call.keywords} <= packaging[name]


def test_module_uses_template_classes_and_parameter_wrapper(module_tree, slicer_api):
    classes = {
        node.name: [_dotted(b) for b in node.bases]
        for node in module_tree.body
        if isinstance(node, ast.ClassDef)
    }
    assert classes["VirtualBiopsy"] == ["ScriptedLoadableModule"]
    assert classes["VirtualBiopsyWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert "VirtualBiopsyLogic" not in classes  # one logic: VirtualBiopsyLib.slicer.logic
    assert classes["VirtualBiopsyTest"] == ["ScriptedLoadableModuleTest"]
    wrapper_exports = set(slicer_api["slicer.parameterNodeWrapper exports"])
    imported = {
        alias.name
        for node in module_tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "slicer.parameterNodeWrapper"
        for alias in node.names
    }
    assert "parameterNodeWrapper" in imported and imported <= wrapper_exports
    decorated = [
        node.name
        for node in module_tree.body
        if isinstance(node, ast.ClassDef)
        and any(_dotted(d) == "parameterNodeWrapper" for d in node.decorator_list)
    ]
    assert decorated == ["VirtualBiopsyParameterNode"]
    i18n = _names(slicer_api["slicer.i18n"])
    for node in module_tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "slicer.i18n":
            assert {alias.name for alias in node.names} <= i18n


def test_one_logic_class_and_the_module_uses_it(module_tree):
    """VirtualBiopsyLogic is defined once, in the library; the module file makes it."""
    from VirtualBiopsyLib.slicer import logic

    defined = [
        path
        for path in [MODULE_FILE, *LIBRARY.rglob("*.py")]
        if "class VirtualBiopsyLogic" in path.read_text(encoding="utf-8")
    ]
    assert defined == [Path(logic.__file__)]
    imports = {
        alias.name
        for node in ast.walk(module_tree)
        if isinstance(node, ast.ImportFrom) and node.module == "VirtualBiopsyLib.slicer.logic"
        for alias in node.names
    }
    assert "VirtualBiopsyLogic" in imports


def test_module_file_loads_on_older_pythons(module_tree):
    """An older Slicer (Python 3.9) must load the file and say which Slicer it needs."""
    source = MODULE_FILE.read_text(encoding="utf-8")
    ast.parse(source, feature_version=(3, 9))
    assert "from __future__ import annotations" in source  # annotations never evaluated
    parameter_class = next(
        n
        for n in module_tree.body
        if isinstance(n, ast.ClassDef) and n.name == "VirtualBiopsyParameterNode"
    )
    for field in parameter_class.body:  # parameterNodeWrapper evaluates these
        if isinstance(field, ast.AnnAssign):
            assert "|" not in ast.unparse(field.annotation)
    top_level = [
        n.module if isinstance(n, ast.ImportFrom) else n.names[0].name
        for n in module_tree.body
        if isinstance(n, ast.Import | ast.ImportFrom)
    ]
    assert not any(name.startswith("VirtualBiopsyLib") for name in top_level)
    assert "Slicer 5.12 or later" in source and "MINIMUM_SLICER = (5, 12)" in source


def test_slicer_packaging_is_imported_explicitly(module_tree):
    """``import slicer`` does not load ``slicer.packaging`` (Base/Python/slicer/__init__.py,
    v5.12.3, imports neither it nor its names)."""
    imported = {
        alias.name
        for node in ast.walk(module_tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert "slicer.packaging" in imported


def test_pytorch_utils_called_as_the_extension_defines(slicer_api):
    from VirtualBiopsyLib.slicer.dependencies import ensure_dependencies

    key = next(k for k in slicer_api if k.startswith("PyTorchUtils"))
    install = next(
        m for m in slicer_api[key]["PyTorchUtilsLogic"]["methods"] if m.startswith("installTorch(")
    )
    accepted = _arguments([install])["installTorch"]
    tree = ast.parse(Path(ensure_dependencies.__code__.co_filename).read_text())
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "installTorch"
    ]
    assert calls
    for call in calls:
        assert {k.arg for k in call.keywords} <= accepted


HEAVY_MODULES = {
    "torch",
    "torchvision",
    "monai",
    "scipy",
    "skimage",
    "sklearn",
    "matplotlib",
    "SimpleITK",
    "pydicom",
    "numpy",
    "pip",
    "subprocess",
}


def test_module_imports_nothing_heavy_at_file_scope(module_tree):
    top_level = set()
    for node in module_tree.body:
        if isinstance(node, ast.Import):
            top_level |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            top_level.add((node.module or "").split(".")[0])
    assert not top_level & HEAVY_MODULES
    assert top_level <= {
        "__future__",
        "logging",
        "pathlib",
        "shutil",
        "sys",
        "typing",
        "qt",
        "slicer",
        "vtk",
        "ctk",
        "VirtualBiopsyLib",
    }
    statements = [type(n).__name__ for n in module_tree.body]
    assert set(statements) <= {
        "Expr",
        "Import",
        "ImportFrom",
        "ClassDef",
        "FunctionDef",
        "Assign",
        "AnnAssign",
    }
    for node in module_tree.body:  # module-level assignments are constants, never calls
        if isinstance(node, ast.Assign | ast.AnnAssign):
            assert not any(isinstance(n, ast.Call) for n in ast.walk(node))


def test_library_import_stays_light():
    """Slicer imports VirtualBiopsyLib when the module loads: no torch may come with it."""
    import subprocess
    import sys

    code = (
        "import sys, VirtualBiopsyLib, VirtualBiopsyLib.slicer.logic, "
        "VirtualBiopsyLib.slicer.dependencies, VirtualBiopsyLib.slicer.case_review, "
        "VirtualBiopsyLib.slicer.sample_data, VirtualBiopsyLib.slicer.inputs; "
        "print(sorted(m for m in ('torch', 'torchvision', 'monai') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPOSITORY, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def ui_tree() -> ElementTree.ElementTree:
    return ElementTree.parse(UI_FILE)


def test_ui_widget_classes_exist_in_slicer(ui_tree, slicer_api):
    known = set(slicer_api["widget classes used in Slicer's own .ui files"])
    used = {widget.get("class") for widget in ui_tree.iter("widget")}
    assert used <= known, f"unknown widget classes: {used - known}"
    custom = {c.findtext("class") for c in ui_tree.iter("customwidget")}
    assert {c for c in used if not c.startswith("Q")} <= custom


def _widgets(ui_tree) -> dict[str, ElementTree.Element]:
    return {w.get("name"): w for w in ui_tree.iter("widget")}


def _property(widget: ElementTree.Element, name: str) -> str | None:
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            return "".join(prop.itertext()).strip()
    return None


def test_ui_has_the_panel_controls(ui_tree):
    widgets = _widgets(ui_tree)
    expected = {
        "leCCSelector": "qMRMLNodeComboBox",
        "leMLOSelector": "qMRMLNodeComboBox",
        "desCCSelector": "qMRMLNodeComboBox",
        "desMLOSelector": "qMRMLNodeComboBox",
        "modelPathLineEdit": "ctkPathLineEdit",
        "synthesizeCheckBox": "QCheckBox",
        "saliencyCheckBox": "QCheckBox",
        "deviceComboBox": "QComboBox",
        "runButton": "QPushButton",
        "cancelButton": "QPushButton",
        "progressBar": "QProgressBar",
        "statusLabel": "QLabel",
        "resultsTableView": "qMRMLTableView",
        "noticeLabel": "QLabel",
        "caseReviewCollapsibleButton": "ctkCollapsibleButton",
        "findInSceneButton": "QPushButton",
        "reviewFolderButton": "ctkDirectoryButton",
        "runReviewButton": "QPushButton",
        "cancelReviewButton": "QPushButton",
        "reviewTableView": "qMRMLTableView",
        "exportCsvButton": "QPushButton",
        "reviewStatusLabel": "QLabel",
    }
    for name, widget_class in expected.items():
        assert widgets[name].get("class") == widget_class
    for selector in ("leCCSelector", "leMLOSelector", "desCCSelector", "desMLOSelector"):
        assert _property(widgets[selector], "nodeTypes") == "vtkMRMLScalarVolumeNode"
    scene_receivers = {
        c.findtext("receiver")
        for c in ui_tree.iter("connection")
        if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    assert {"leCCSelector", "desMLOSelector", "resultsTableView", "reviewTableView"} <= (
        scene_receivers
    )


def test_module_uses_only_widgets_of_its_ui(ui_tree, module_tree):
    """Every ``self.ui.<name>`` the module file touches is a widget of the .ui file."""
    used = {
        node.attr
        for node in ast.walk(module_tree)
        if isinstance(node, ast.Attribute) and _dotted(node.value) == "self.ui"
    }
    assert used, "the module should use its .ui widgets"
    assert used <= set(_widgets(ui_tree)), f"not in the .ui: {used - set(_widgets(ui_tree))}"


def test_ui_parameter_bindings_match_parameter_node(ui_tree, module_tree, slicer_api):
    """Each SlicerParameterName names a parameter, on a widget class the connectors support."""
    supported = {
        name.split(".")[-1]
        for name in slicer_api["parameterNodeWrapper GUI connector widget classes"]
    }
    parameter_class = next(
        n
        for n in module_tree.body
        if isinstance(n, ast.ClassDef) and n.name == "VirtualBiopsyParameterNode"
    )
    parameters = {n.target.id for n in parameter_class.body if isinstance(n, ast.AnnAssign)}
    bound = {}
    for widget in ui_tree.iter("widget"):
        name = _property(widget, "SlicerParameterName")
        if name is not None:
            assert widget.get("class") in supported
            bound[name] = widget
    # modelFolder is a str kept in step by the widget: Slicer's ctkPathLineEdit connector
    # writes str(pathlib.Path()) == "." into the field for an empty path
    # (Base/Python/slicer/parameterNodeWrapper/guiConnectors.py, v5.12.3 lines 673-705)
    assert set(bound) == parameters - {"modelFolder"}
    assert "modelFolder" not in bound


def test_icon_is_a_128_pixel_png():
    data = ICON_FILE.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (128, 128)


def test_catalog_entry_validates_and_category_accepted(slicer_api):
    schema = json.loads(_reference("slicer-extension-catalog-entry-schema-v1.0.2.json").read_text())
    entry = json.loads((REPOSITORY / "VirtualBiopsy.json").read_text())
    jsonschema.validate(entry, schema)
    categories = next(v for k, v in slicer_api.items() if k.startswith("Extensions Index"))
    assert entry["category"] in categories
    assert entry["build_dependencies"] == ["PyTorch"]


def _cmake_set(text: str, variable: str) -> str:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"set({variable} …) missing"
    return match.group(1).strip().strip('"')


def test_root_cmake_metadata(slicer_api):
    text = (REPOSITORY / "CMakeLists.txt").read_text()
    assert "project(VirtualBiopsy)" in text
    categories = next(v for k, v in slicer_api.items() if k.startswith("Extensions Index"))
    assert _cmake_set(text, "EXTENSION_CATEGORY") in categories
    assert _cmake_set(text, "EXTENSION_DEPENDS") == "PyTorch"
    for variable in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert _cmake_set(text, variable).startswith("https://raw.githubusercontent.com/")
    icon_path = _cmake_set(text, "EXTENSION_ICONURL").split("/main/", 1)[1]
    assert (REPOSITORY / icon_path).is_file()
    for line in (
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        "add_subdirectory(VirtualBiopsyLib)",
        "add_subdirectory(VirtualBiopsy)",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ):
        assert line in text
    assert (REPOSITORY / "LICENSE.txt").is_file()


def _cmake_list(path: Path, variable: str) -> list[str]:
    return _cmake_set(path.read_text(), variable).split()


def library_files_on_disk() -> tuple[list[str], list[str]]:
    """(python scripts, resources) of VirtualBiopsyLib, as CMake lists them."""
    scripts = sorted(
        p.relative_to(LIBRARY).as_posix()
        for p in LIBRARY.rglob("*.py")
        if "__pycache__" not in p.parts
    )
    resources = sorted(
        p.relative_to(LIBRARY).as_posix()
        for folder in ("Resources", "schemas")
        if (LIBRARY / folder).is_dir()
        for p in (LIBRARY / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    return scripts, resources


def test_library_cmake_lists_every_file():
    cmake = LIBRARY / "CMakeLists.txt"
    text = cmake.read_text()
    assert "NAME ${MODULE_NAME}" in text and "WITH_SUBDIR" in text
    assert _cmake_set(text, "MODULE_NAME") == "VirtualBiopsyLib"
    scripts, resources = library_files_on_disk()
    listed_scripts = _cmake_list(cmake, "MODULE_PYTHON_SCRIPTS")
    listed_resources = _cmake_list(cmake, "MODULE_PYTHON_RESOURCES")
    assert listed_scripts == scripts, (
        "run: .venv/bin/python Testing/Python/test_slicer_extension.py --write-cmake; "
        f"not in CMake: {sorted(set(scripts) - set(listed_scripts))}; "
        f"gone from disk: {sorted(set(listed_scripts) - set(scripts))}"
    )
    assert listed_resources == resources, (
        f"not in CMake: {sorted(set(resources) - set(listed_resources))}; "
        f"gone from disk: {sorted(set(listed_resources) - set(resources))}"
    )


def test_module_cmake_lists_module_files():
    cmake = REPOSITORY / "VirtualBiopsy" / "CMakeLists.txt"
    text = cmake.read_text()
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT" in text
    for entry in _cmake_list(cmake, "MODULE_PYTHON_SCRIPTS") + _cmake_list(
        cmake, "MODULE_PYTHON_RESOURCES"
    ):
        assert (cmake.parent / entry.replace("${MODULE_NAME}", "VirtualBiopsy")).is_file()


def render_library_cmake() -> str:
    """VirtualBiopsyLib/CMakeLists.txt listing every library file now on disk."""
    scripts, resources = library_files_on_disk()

    def block(items: list[str]) -> str:
        return "".join(f"  {item}\n" for item in items)

    return f"""#-----------------------------------------------------------------------------
# VirtualBiopsyLib: the library every front end shares, installed like Slicer's DICOMLib
# (a package beside the module, importable as ``VirtualBiopsyLib``). Every file is listed
# explicitly; Testing/Python/test_slicer_extension.py fails when this list and the files
# on disk differ. Regenerate with:
#   .venv/bin/python Testing/Python/test_slicer_extension.py --write-cmake
set(MODULE_NAME VirtualBiopsyLib)

#-----------------------------------------------------------------------------
set(MODULE_PYTHON_SCRIPTS
{block(scripts)}  )

set(MODULE_PYTHON_RESOURCES
{block(resources)}  )

#-----------------------------------------------------------------------------
slicerMacroBuildScriptedModule(
  NAME ${{MODULE_NAME}}
  SCRIPTS ${{MODULE_PYTHON_SCRIPTS}}
  RESOURCES ${{MODULE_PYTHON_RESOURCES}}
  WITH_SUBDIR
  )
"""


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write-cmake"]:
        target = LIBRARY / "CMakeLists.txt"
        temporary = target.with_suffix(".txt.tmp")
        temporary.write_text(render_library_cmake())
        temporary.replace(target)
        print(f"wrote {target}")
    else:
        sys.exit("usage: test_slicer_extension.py --write-cmake")
