"""The package's shape, read off its source: imports at the top, no import cycles, every error in errors.py."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "harness"
# Imports that stay inside functions, each for its reason.
LAZY = {
    ("harness.gradients.registry", "harness.gradients.rules"): "the rule modules import the registry to register",
    **{("harness.experiments", f"harness.experiments.{name}"): "the experiment modules import the registry"
       for name in ("alignment", "augmentation", "dropping", "p_sweep")},
    ("harness.figures", "matplotlib"): "the backend is chosen before pyplot is imported",
    ("harness.figures", "matplotlib.pyplot"): "the backend is chosen before pyplot is imported",
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


def test_every_error_class_lives_in_errors_py():
    outside = []
    for name, tree in modules().items():
        if name == "harness.errors":
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
