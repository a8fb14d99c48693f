"""The package's layers: imports run one way, without cycles, and never reach a private name.

The layers, lowest first (ARCHITECTURE.md): the foundation (files, backends, memory, argument
checks, the compiled modules), kernels, ops / geometry / meshing, networks, training / metrics /
pictures, the public API (the package's ``__init__``), and the CLI, which uses that API as a user
does. A module may import its own layer and those below, lazily (inside a function) or not. Read from the source with
``ast``, so nothing here imports the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastsdf"

# A module's layer: the first entry whose name is the module or one of its parent packages.
LAYERS = {
    "fastsdf.io": 0, "fastsdf._backend": 0, "fastsdf._memory": 0, "fastsdf._cuda_driver": 0,
    "fastsdf._validation": 0, "fastsdf._arrays": 0, "fastsdf._progress": 0, "fastsdf._parallel": 0,
    "fastsdf._C": 0, "fastsdf._cuda": 0,
    "fastsdf.kernels": 1,
    "fastsdf.ops": 2, "fastsdf.geometry": 2, "fastsdf.meshing": 2, "fastsdf.measure": 2,
    "fastsdf.nn": 3,
    "fastsdf.training": 4, "fastsdf.metrics": 4, "fastsdf.render": 4, "fastsdf.plots": 4,
    "fastsdf": 5,
    "fastsdf.cli": 6,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    name = module
    while name not in LAYERS:
        if "." not in name:
            raise KeyError(f"{module} is in no layer: add its package to LAYERS (and ARCHITECTURE.md)")
        name = name.rsplit(".", 1)[0]
    return LAYERS[name]


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = importer if MODULES[importer].name == "__init__.py" else importer.rsplit(".", 1)[0]
    for _ in range(node.level - 1):
        package = package.rsplit(".", 1)[0]
    return f"{package}.{node.module}" if node.module else package


def imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, name taken from it or None, line) for every import of fastsdf in a module."""
    found = []
    for node in ast.walk(ast.parse(MODULES[module].read_text(), str(MODULES[module]))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES or submodule in LAYERS:
                    found.append((submodule, None, node.lineno))
                else:
                    found.append((source, alias.name, node.lineno))
    return [entry for entry in found if entry[0] == "fastsdf" or entry[0].startswith("fastsdf.")]


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_down_the_layers(module: str) -> None:
    upward = [f"line {line}: {target} (layer {layer(target)})" for target, _, line in imports(module)
              if layer(target) > layer(module)]
    assert not upward, f"{module} (layer {layer(module)}) imports from a higher layer: {upward}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_modules(module: str) -> None:
    private = [f"line {line}: {target}.{name}" for target, name, line in imports(module)
               if name is not None and name.startswith("_") and target != module]
    assert not private, f"{module} imports private names of other modules: {private}"


def test_no_import_cycles() -> None:
    graph = {module: sorted({target for target, _, _ in imports(module) if target in MODULES and target != module})
             for module in MODULES if module != "fastsdf"}
    cycles = [component for component in _strongly_connected(graph) if len(component) > 1]
    assert not cycles, f"import cycles (lazy imports included): {cycles}"


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's components of a directed graph, iteratively (no recursion limit to reach)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph.get(root, ())))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(graph.get(successor, ()))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def test_no_test_module_imports_another() -> None:
    """Helpers that several test modules share live in plain modules beside them (``*_helpers.py``):
    importing a test module would collect its tests twice under another name and tie the two."""
    tests = Path(__file__).resolve().parent
    found = [f"{path.name}: {name}" for path in sorted(tests.glob("test_*.py"))
             for node in ast.walk(ast.parse(path.read_text(), str(path)))
             if isinstance(node, (ast.Import, ast.ImportFrom))
             for name in ([node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names])
             if name.split(".")[0].startswith("test_")]
    assert not found, f"test modules importing test modules: {found}"
