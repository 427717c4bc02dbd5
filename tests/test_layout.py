"""The package's shape: data flows one way between the pipeline's subpackages, no import
cycle, no module over 700 lines, and no library module imports a command line.

Imports are read from the source (every ``import`` and ``from ... import``, inside functions
too), so a lazy import that closes a cycle is caught as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "llamacpu"
KERNELS = PACKAGE.parent / "kernels" / "src"
MAX_LINES = 700
LAYERS = ("core", "machine", "llm", "learn", "evaluate")
"""Bottom up: a subpackage may import only from itself and the ones before it."""


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    for path in sorted(KERNELS.glob("*.py")):
        name = "llamacpu.kernels" + ("" if path.stem == "__init__" else f".{path.stem}")
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The llamacpu modules ``name`` imports (a package import counts as its __init__)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}  # from pkg import module
    return {m for m in found if m in MODULES and m != name}


GRAPH = nx.DiGraph()
for _name, _path in MODULES.items():
    GRAPH.add_node(_name)
    GRAPH.add_edges_from((_name, dep) for dep in _imports(_name, _path))


def test_there_is_no_import_cycle():
    cycles = list(nx.simple_cycles(GRAPH))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + c[:1]) for c in cycles[:5])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_700_lines(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines"


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def test_subpackages_import_only_downwards():
    wrong = []
    for a, b in GRAPH.edges:
        la, lb = _layer(a), _layer(b)
        if la and lb and LAYERS.index(lb) > LAYERS.index(la):
            wrong.append(f"{a} -> {b}")
    assert not wrong, "imports against the data flow: " + ", ".join(wrong)


def test_no_library_module_imports_a_command_line():
    clis = {n for n in MODULES if n.count(".") == 1 and _layer(n + ".x") is None
            and n not in ("llamacpu.kernels", "llamacpu.cli", "llamacpu.programs",
                          "llamacpu._version")}
    clis -= {f"llamacpu.{layer}" for layer in LAYERS}
    wrong = [f"{a} -> {b}" for a, b in GRAPH.edges if _layer(a) and b in clis]
    assert clis and not wrong, "library modules importing a CLI: " + ", ".join(wrong)


def test_the_core_needs_no_torch():
    """The symbolic core (instruction set, assembler, interpreter) runs with plain Python."""
    wrong = []
    for name, path in MODULES.items():
        if _layer(name) != "core":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            wrong += [f"{name}: {n}" for n in names if n.split(".")[0] == "torch"]
    assert not wrong, wrong
