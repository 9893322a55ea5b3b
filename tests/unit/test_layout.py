"""The tree tells the architecture (issue 14): modules one can hold in one's head, imports that only
point down, and no cycles, read from the source of every module under ops/."""

from __future__ import annotations

import ast
from pathlib import Path

OPS = Path(__file__).resolve().parents[2] / "ops"
MAX_LINES = 600

# Lower layers never import higher ones. Capabilities may use each other's public names, but
# the package graph stays acyclic; the task layer sits on top; the lab and the dev pipeline are
# entry points that nothing in the library imports.
LAYER = {
    "errors": 0,
    "console": 0,
    "config": 1,
    "transport": 2,
    "host": 3,
    "stack": 4,
    "images": 5,
    "deploy": 5,
    "provision": 5,
    "backup": 5,
    "oncall": 5,
    "swarm": 5,
    "notify": 6,  # reports what the capabilities did; only the task layer hands it their results
    "lab": 6,
    "pipeline": 6,
    "tasks": 7,
    "cli": 8,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(OPS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ops module path imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "ops":
                found.update(f"ops.{alias.name}" for alias in node.names if alias.name != "__version__")
            elif node.module.startswith("ops."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("ops."))
    return found


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _graph() -> dict[str, set[str]]:
    return {_module_name(path): _imports(path) for path in sorted(OPS.rglob("*.py"))}


def test_no_module_is_too_long_to_hold_in_ones_head() -> None:
    long = {
        str(path.relative_to(OPS.parent)): count
        for path in OPS.rglob("*.py")
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_imports_point_only_down_the_layers() -> None:
    wrong = []
    for module, imported in _graph().items():
        source = _package(module)
        for target in imported:
            destination = _package(target)
            if source in LAYER and destination in LAYER and LAYER[destination] > LAYER[source]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []
    # nothing in the library imports the lab, the dev pipeline or invoke
    for module, imported in _graph().items():
        if _package(module) not in ("tasks", "cli", "lab", "pipeline"):
            assert not {name for name in imported if _package(name) in ("lab", "pipeline", "tasks")}, module


def test_no_import_cycle_between_packages_or_modules() -> None:
    graph = _graph()
    packages: dict[str, set[str]] = {}
    for module, imported in graph.items():
        packages.setdefault(_package(module), set()).update(
            _package(target) for target in imported if _package(target) != _package(module)
        )

    def cycle(edges: dict[str, set[str]]) -> list[str]:
        state: dict[str, int] = {}
        path: list[str] = []

        def visit(node: str) -> list[str]:
            state[node] = 1
            path.append(node)
            for nxt in sorted(edges.get(node, ())):
                if state.get(nxt) == 1:
                    return [*path[path.index(nxt) :], nxt]
                if nxt not in state and (found := visit(nxt)):
                    return found
            state[node] = 2
            path.pop()
            return []

        for node in sorted(edges):
            if node not in state and (found := visit(node)):
                return found
        return []

    assert cycle(packages) == []
    modules = {name: {t for t in targets if t in graph and t != name} for name, targets in graph.items()}
    # a package's __init__ re-exports its modules; those arrows are not cycles of meaning
    modules = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in modules.items()}
    assert cycle(modules) == []
