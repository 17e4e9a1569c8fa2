"""The package's modules import one another without cycles, and only at the top.

An import inside a function is how a cycle hides: the graph then looks acyclic
to Python at import time while the modules still need each other. Both are
checked from the source, so a new module is covered without being listed.
"""

from __future__ import annotations

import ast
import pathlib

import optimisers

PACKAGE = pathlib.Path(optimisers.__file__).parent
MODULES = {p.stem: p for p in sorted(PACKAGE.glob("*.py"))}


def _imports_inside_functions(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lines += [
                inner.lineno
                for inner in ast.walk(node)
                if isinstance(inner, (ast.Import, ast.ImportFrom))
            ]
    return lines


def _package_imports(name: str, tree: ast.Module) -> set[str]:
    """The package's modules that module `name` imports."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            absolute = node.level == 0 and (node.module or "").startswith("optimisers")
            if node.level == 1 or absolute:
                module = node.module or ""
                if absolute:
                    module = module.removeprefix("optimisers").lstrip(".")
                if module:
                    found.add(module.split(".")[0])
                else:  # `from . import a, b`: submodules by name
                    found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("optimisers."):
                    found.add(a.name.split(".")[1])
    return {m for m in found if m in MODULES and m != name}


def test_no_module_imports_inside_a_function():
    offenders = {
        name: lines
        for name, path in MODULES.items()
        if (lines := _imports_inside_functions(ast.parse(path.read_text())))
    }
    assert offenders == {}, f"imports inside functions (module: lines): {offenders}"


def test_the_import_graph_has_no_cycle():
    graph = {name: _package_imports(name, ast.parse(p.read_text())) for name, p in MODULES.items()}
    assert graph["interface"] >= {"_plan", "rules"}  # the parser sees imports
    # Depth-first search with colours: meeting a module still on the path is a cycle.
    on_path: list[str] = []
    done: set[str] = set()

    def visit(m: str) -> None:
        if m in on_path:
            cycle = [*on_path[on_path.index(m) :], m]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if m in done:
            return
        on_path.append(m)
        for n in sorted(graph[m]):
            visit(n)
        on_path.pop()
        done.add(m)

    for m in graph:
        visit(m)
