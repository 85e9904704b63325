"""The package layout (README "Layout"): imports point only downward and no module imports
another lazily inside a function (the dependency graph is what the module headers say).

Layers, bottom first; a module may import its own sub-package and any lower layer, never a
sibling of its own layer or anything above it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "bench"
LAYERS = [
    {"bench.errors", "bench.cache", "bench.images", "bench.device", "bench.dist", "bench.noise"},
    {"bench.diffusion", "bench.edm", "bench.samplers", "bench.task"},
    {"bench.data", "bench.train", "bench.metrics"},
    {"bench.config"},
    {"bench.run"},
    {"bench.report", "bench.tune"},
    {"bench.cli"},
    {"bench.__main__"},
]
BOTTOM_ORDER = ["bench.errors", "bench.cache", "bench.images", "bench.device", "bench.dist", "bench.noise", "bench.diffusion", "bench.edm", "bench.task", "bench.samplers"]
OWN_ORDER = {"bench.tune": "bench.report"}  # the tuner writes the leaderboard of its study


def unit(module: str) -> str:
    """The layout unit of a dotted module name: a sub-package or a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def layer(name: str) -> int:
    return next(i for i, group in enumerate(LAYERS) if unit(name) in group)


def modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        yield name, ast.parse(path.read_text(), str(path))


def bench_imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bench":
            yield node, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "bench":
                    yield node, alias.name


def allowed(importer: str, imported: str) -> bool:
    a, b = unit(importer), unit(imported)
    if a == b or b == "bench":
        return True
    if OWN_ORDER.get(a) == b:
        return True
    if layer(a) == layer(b) == 0 or layer(a) == layer(b) == 1:
        return BOTTOM_ORDER.index(b) < BOTTOM_ORDER.index(a)
    return layer(b) < layer(a)


@pytest.mark.parametrize("name,tree", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_point_downward(name, tree):
    wrong = [f"{name} imports {target} (line {node.lineno})" for node, target in bench_imports(tree)
             if not allowed(name, target)]
    assert not wrong, wrong


@pytest.mark.parametrize("name,tree", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_no_function_level_import_of_the_package(name, tree):
    lazy = [f"{name}: line {inner.lineno}" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for inner in ast.walk(node) if isinstance(inner, (ast.Import, ast.ImportFrom))]
    assert not lazy, lazy


def test_every_module_says_what_it_owns():
    missing = [name for name, tree in modules() if not ast.get_docstring(tree)]
    assert not missing, missing
