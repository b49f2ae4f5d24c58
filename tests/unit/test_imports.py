"""The import graph of ``kafka_retry/`` and ``bench/``: no cycles, private modules stay private.

Read from the source (AST), so lazy imports inside functions count as much as
module-level ones. Left out: ``if TYPE_CHECKING:`` blocks (never run) and
``if __name__ == "__main__":`` blocks (run only when the module is the program,
where it is ``__main__``, a module of its own).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kafka_retry", "bench")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _skipped(node: ast.If) -> bool:
    test = node.test
    if isinstance(test, ast.Name | ast.Attribute):
        return (test.id if isinstance(test, ast.Name) else test.attr) == "TYPE_CHECKING"
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def _imported(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every module name that ``node`` (and what it contains) imports."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _skipped(child):
            for other in child.orelse:
                yield from _imported(ast.Module(body=[other], type_ignores=[]), module, is_package)
        elif isinstance(child, ast.Import):
            yield from (alias.name for alias in child.names)
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (child.level - 1)]
                base = ".".join([*package, base] if base else package)
            for alias in child.names:
                # ``from package import module`` imports the module, else the package.
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
        else:
            yield from _imported(child, module, is_package)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        deps: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name in _imported(tree, module, path.name == "__init__.py"):
            while name and name not in MODULES:  # ``a.b.C`` -> ``a.b``; foreign -> ""
                name = name.rpartition(".")[0]
            if name and name != module:
                deps.add(name)
        graph[module] = deps
    return graph


GRAPH = _graph()


def _cycle_from(start: str) -> list[str] | None:
    """A path start -> ... -> start, if there is one (depth-first)."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        module, path = stack.pop()
        for dep in sorted(GRAPH[module]):
            if dep == start:
                return [*path, start]
            if dep not in seen:
                seen.add(dep)
                stack.append((dep, [*path, dep]))
    return None


def test_the_graph_is_read() -> None:
    """The walk finds the imports it is meant to check (so an empty graph cannot pass)."""
    assert "kafka_retry.runtime.consumer" in MODULES
    assert "kafka_retry.runtime.tier" in GRAPH["kafka_retry.runtime.consumer"]
    assert "kafka_retry.retry.postgres" in GRAPH["kafka_retry.runtime.consumer"]  # a lazy import
    assert "bench._common" in GRAPH["bench.run"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_cycle(module: str) -> None:
    """No module imports itself through others."""
    assert _cycle_from(module) is None, " -> ".join(_cycle_from(module) or ())


def _private_imports(prefix: str, owner: str) -> list[str]:
    return sorted(
        f"{module} imports {dep}"
        for module, deps in GRAPH.items()
        if not (module == owner or module.startswith(owner + "."))
        for dep in deps
        if dep.startswith(prefix)
    )


def test_no_module_outside_runtime_imports_a_private_runtime_module() -> None:
    """The runtime's private modules (``runtime._x``) are used by the runtime only."""
    assert _private_imports("kafka_retry.runtime._", "kafka_retry.runtime") == []


def test_no_module_outside_retry_imports_a_private_table_module() -> None:
    """The retry table's private modules (``retry._pg_x``) are used by ``retry/`` only."""
    assert _private_imports("kafka_retry.retry._pg_", "kafka_retry.retry") == []
