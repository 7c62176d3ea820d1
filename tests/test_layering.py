"""Import structure: mlx_diar <- reference <- harness, no import cycles, every module importable.

The graph is read from each module's source (AST), imports inside functions included: a lazy
import is still a dependency. `mlx_diar` (the runtime) imports neither `reference` (torch) nor
`harness`; `reference` does not import `harness`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"mlx_diar": 0, "reference": 1, "harness": 2}  # a package may import only its own layer or lower


def _modules() -> dict[str, Path]:
    modules = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules `name` imports (an imported name that is a submodule counts as that module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                         for alias in node.names)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def test_every_package_is_found() -> None:
    assert {"mlx_diar.runtime.pipeline", "reference.runner", "reference.seeded", "harness.paths"} <= set(MODULES)


def test_layering() -> None:
    wrong = sorted(f"{module} imports {target}" for module, targets in GRAPH.items() for target in targets
                   if _layer(target) > _layer(module))
    assert not wrong, "imports against the layering mlx_diar <- reference <- harness:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    try:
        tuple(TopologicalSorter(GRAPH).static_order())
    except CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_harness_paths_is_a_leaf() -> None:
    assert not {target for target in GRAPH["harness.paths"] if target.startswith("harness")}


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    """Dependencies first: each import finds what it needs already importable."""
    order = list(TopologicalSorter(GRAPH).static_order())
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    proc = subprocess.run([sys.executable, "-c", code, *order], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
