"""The import graph of VirtualBiopsyLib: no cycles, and every arrow points down the layers.

Layers (docs/interfaces.md): base (roles, errors, limits, atomic files, fusion, fold
ensemble, calibration) → images (readers, cases, preprocessing, NRRD, phantom) → models (torch) →
inference → front ends (command line, Slicer bridge). Every ``import`` statement counts,
also those inside functions (a lazy import still ties the modules together); imports
only for type checking count for the layers (a type from a higher layer is still a
dependency on it) but not for cycles (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "VirtualBiopsyLib"
PACKAGE = "VirtualBiopsyLib"

# (prefix of a module name, layer); the longest matching prefix wins
LAYERS: tuple[tuple[str, int], ...] = (
    (f"{PACKAGE}", 0),  # the package itself: version and notices
    (f"{PACKAGE}.roles", 0),
    (f"{PACKAGE}.errors", 0),
    (f"{PACKAGE}.limits", 0),
    (f"{PACKAGE}.atomic_io", 0),
    (f"{PACKAGE}.fusion", 0),
    (f"{PACKAGE}.ensemble", 0),
    (f"{PACKAGE}.calibration", 0),
    (f"{PACKAGE}.processes", 0),
    (f"{PACKAGE}.images", 1),
    (f"{PACKAGE}.phantom", 1),
    (f"{PACKAGE}.nrrd_io", 1),
    (f"{PACKAGE}.training_manifest", 1),
    (f"{PACKAGE}.models", 2),
    (f"{PACKAGE}.inference", 3),
    (f"{PACKAGE}.cli", 4),
    (f"{PACKAGE}.__main__", 4),
    (f"{PACKAGE}.commands", 4),
    (f"{PACKAGE}.slicer", 4),
)
LAYER_NAMES = ("base", "images", "models", "inference", "front ends")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LIBRARY.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    matches = [
        (len(prefix), layer)
        for prefix, layer in LAYERS
        if module == prefix or module.startswith(prefix + ".")
    ]
    if not matches:
        raise AssertionError(f"{module} is in no layer; add it to LAYERS and the docs")
    return max(matches)[1]


def _resolve(module: str, known: set[str]) -> str:
    """The library module an import names (``from A import b``: A.b when that is one)."""
    return module if module in known else module.rsplit(".", 1)[0]


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            inside.update(id(child) for statement in node.body for child in ast.walk(statement))
    return inside


def import_graph(runtime_only: bool = False) -> dict[str, set[str]]:
    files = {module_name(p): p for p in LIBRARY.rglob("*.py")}
    known = set(files)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_only(tree) if runtime_only else set()
        for node in ast.walk(tree):
            targets: list[str] = []
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names]
                targets = [_resolve(t, known) for t in targets]
            for target in targets:
                ours = target == PACKAGE or target.startswith(PACKAGE + ".")
                if ours and target != name:
                    graph[name].add(target if target in known else _resolve(target, known))
    return graph


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_imports_point_down_the_layers_only():
    upward = [
        f"{source} ({LAYER_NAMES[layer_of(source)]}) imports {target} "
        f"({LAYER_NAMES[layer_of(target)]})"
        for source, targets in import_graph().items()
        for target in targets
        if layer_of(target) > layer_of(source)
    ]
    assert upward == []


# Cycles not yet removed, each with its owner's note. The test fails on any other cycle
# and on a listed one that is gone (so this list only shrinks).
KNOWN_CYCLES: dict[frozenset[str], str] = {}  # none left; a new cycle fails the test


def find_cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: set[frozenset[str]] = set()

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.add(frozenset(path[path.index(target) :]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return cycles


def test_the_import_graph_has_no_cycles():
    cycles = find_cycles(import_graph(runtime_only=True))
    assert sorted(map(sorted, cycles - set(KNOWN_CYCLES))) == []
    assert sorted(map(sorted, set(KNOWN_CYCLES) - cycles)) == []  # fixed: drop it from the list


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == {frozenset({"a", "b", "c"})}


@pytest.mark.parametrize(
    ("source", "target", "upward"),
    [
        ("VirtualBiopsyLib.images.readers", "VirtualBiopsyLib.inference.result", True),
        ("VirtualBiopsyLib.slicer.bridge", "VirtualBiopsyLib.inference.result", False),
        ("VirtualBiopsyLib.models.package", "VirtualBiopsyLib.atomic_io", False),
    ],
)
def test_the_layer_rule_itself(source, target, upward):
    """The check would catch an upward arrow (so the tests above can fail)."""
    assert (layer_of(target) > layer_of(source)) is upward
