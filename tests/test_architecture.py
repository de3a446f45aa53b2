"""The package's shape, read off its source: imports at the top, no import cycles, the layers of the data flow
(source -> model -> runtime -> attribution -> metric -> results -> report) never imported upwards, every error in
errors.py."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "harness"
# Imports that stay inside functions, each for its reason.
LAZY = {
    ("harness.gradients.registry", "harness.gradients.rules"): "the rule modules import the registry to register",
    **{("harness.experiments", f"harness.experiments.{name}"): "the experiment modules import the registry"
       for name in ("alignment", "augmentation", "dropping", "p_sweep")},
    ("harness.report.figures", "matplotlib"): "the backend is chosen before pyplot is imported",
    ("harness.report.figures", "matplotlib.pyplot"): "the backend is chosen before pyplot is imported",
}


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text())
    return found


def imported(node, module: str, known: set[str]) -> list[str]:
    """The harness modules (or other top-level names) an import statement loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:   # relative imports
        base = ".".join(module.split(".")[: len(module.split(".")) - node.level + 1] + ([base] if base else []))
    names = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
    return names or [base]


def test_imports_sit_at_the_top_except_the_lazy_ones_with_a_reason():
    found = modules()
    inner = set()
    for name, tree in found.items():
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        inner |= {(name, target) for target in imported(node, name, set(found))}
    inner = {(m, t) for m, t in inner if not m.startswith("harness.gradients.rules")}
    assert inner <= set(LAZY), sorted(inner - set(LAZY))


def test_the_top_level_imports_have_no_cycle():
    found = modules()
    graph = {name: set() for name in found}
    for name, tree in found.items():
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(node, name, set(found)):
                    while target and target not in found and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target in found and target != name:
                        graph[name].add(target)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(found):
        if name not in state:
            visit(name, [name])


# The layers, bottom up: a module imports only from its own layer and those below it. Each layer is a package of
# harness (two for the model layer: the model file and the image sources; the face is the two modules a user
# calls); the most specific entry places a module.
LAYERS = (
    ("core", ("harness", "harness.core")),
    ("gradients", ("harness.gradients",)),
    ("model", ("harness.model", "harness.data")),
    ("runtime", ("harness.runtime",)),
    ("attribution", ("harness.attribution",)),
    ("metrics", ("harness.metrics",)),
    ("runs", ("harness.runs",)),
    ("report", ("harness.report",)),
    ("checks", ("harness.checks",)),
    ("experiments", ("harness.experiments",)),
    ("face", ("harness.cli", "harness.demo")),
)
# Narrower than the layers: the algorithms take any Runtime, so of the runtime layer they import the protocol alone.
PROTOCOL_ONLY = {"harness.attribution": "harness.runtime.protocol", "harness.metrics": "harness.runtime.protocol"}


def layer_of(module: str) -> int | None:
    """The index in LAYERS of the most specific entry that holds ``module`` (None where none does)."""
    best = None
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and (best is None or len(entry) > best[1]):
                best = (index, len(entry))
    return None if best is None else best[0]


def upward_imports(found: dict[str, ast.Module]) -> list[str]:
    """Every top-level import of a module in ``found`` that loads a module of a higher layer."""
    upwards = []
    for name, tree in found.items():
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(node, name, set(found)):
                    while target not in found and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target in found and layer_of(target) > layer_of(name):
                        upwards.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} "
                                       f"({LAYERS[layer_of(target)][0]})")
    return upwards


def test_every_module_has_a_layer_and_imports_none_above_it():
    found = modules()
    assert [name for name in found if layer_of(name) is None] == []
    assert upward_imports(found) == []


def test_the_algorithms_import_only_the_runtime_protocol():
    found = modules()
    reached = [f"{name} imports {target}" for name, tree in found.items() for node in tree.body
               if isinstance(node, (ast.Import, ast.ImportFrom)) for target in imported(node, name, set(found))
               for package, allowed in PROTOCOL_ONLY.items()
               if (name == package or name.startswith(package + "."))
               and (target == "harness.runtime" or target.startswith("harness.runtime.")) and target != allowed]
    assert reached == []


def test_only_the_face_lies_at_the_top_of_the_package():
    """Every other module belongs to the package of its layer, and every package names its job in one line."""
    assert {path.stem for path in PACKAGE.glob("*.py")} == {"__init__", "cli", "demo"}
    for package in sorted(p for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE):
        doc = ast.get_docstring(ast.parse(package.read_text()))
        assert doc and doc.split("\n")[0].endswith("."), package


def test_the_layer_test_catches_an_upward_import():
    """A metric that imported the report (or the gradient pass the runtime) would be caught."""
    found = {**modules(), "harness.metrics.leaky": ast.parse("from harness.report.write import write_report\n"),
             "harness.gradients.leaky": ast.parse("import harness.runtime.gradient\n")}
    assert upward_imports(found) == ["harness.metrics.leaky (metrics) imports harness.report.write (report)",
                                     "harness.gradients.leaky (gradients) imports harness.runtime.gradient (runtime)"]


def facade_names() -> dict[str, dict[str, str]]:
    """Per package whose ``__init__`` declares ``__all__``: each name it takes from a submodule, and that module."""
    facades = {}
    for name, tree in modules().items():
        exported = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                    and any(getattr(target, "id", "") == "__all__" for target in node.targets)]
        if exported:
            facades[name] = {alias.name: node.module for node in tree.body if isinstance(node, ast.ImportFrom)
                             and (node.module or "").startswith(name + ".") for alias in node.names
                             if alias.name in exported[0]}
    return facades


def test_a_package_s_public_names_have_one_home():
    """What a package's ``__init__`` exports is imported from the package by every module outside it (the
    package's own modules, which the ``__init__`` imports, take them from their modules), in the package, its
    tests, benchmarks and export scripts: no name has two homes."""
    facades, root = facade_names(), PACKAGE.parent
    assert {"harness.attribution", "harness.data", "harness.gradients"} <= set(facades)
    twice = []
    for folder in ("harness", "tests", "benchmarks", "export_scripts"):
        for path in (root / folder).rglob("*.py"):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    twice += [f"{module}: from {node.module} import {alias.name} (exported by {package})"
                              for package, origins in facades.items() if not module.startswith(package + ".")
                              for alias in node.names if origins.get(alias.name) == node.module]
    assert twice == []


def test_every_error_class_lives_in_errors_py():
    outside = []
    for name, tree in modules().items():
        if name == "harness.core.errors":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(base, "id", getattr(base, "attr", "")).endswith(("Error", "Warning", "Exception"))
                    for base in node.bases):
                outside.append(f"{name}.{node.name}")
    assert outside == []


def test_every_public_function_class_and_method_has_a_docstring():
    missing = []
    for name, tree in modules().items():
        if ".rules." in f"{name}.":
            continue
        public = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))
                  and not node.name.startswith("_")]
        missing += [f"{name}.{node.name}" for node in public if not ast.get_docstring(node)]
        missing += [f"{name}.{node.name}.{method.name}" for node in public if isinstance(node, ast.ClassDef)
                    for method in node.body if isinstance(method, ast.FunctionDef)
                    and not method.name.startswith("_") and not ast.get_docstring(method)]
    assert missing == []
