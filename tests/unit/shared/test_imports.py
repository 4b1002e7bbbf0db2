"""The import arrows of `marketbus.shared` point one way: no module imports itself
back through others, and `config` (what a file says) never imports `connection` (what
is done with it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import marketbus.shared

SHARED = Path(marketbus.shared.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SHARED.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``marketbus.shared`` module *path* imports, at module level or in a
    function (a lazy import is still an arrow)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in SHARED.rglob("*.py")}
    return {name: _imports(path) & modules.keys() - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of *graph* as the modules along it, or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for target in sorted(graph[name]):
            if (found := visit(target, [*path, name])) is not None:
                return found
        done.add(name)
        return None

    for name in sorted(graph):
        if (found := visit(name, [])) is not None:
            return found
    return None


def test_shared_modules_import_each_other_without_cycles() -> None:
    graph = _graph()
    assert "marketbus.shared.config" in graph and "marketbus.shared.connection" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_connection_imports_config_and_not_the_other_way() -> None:
    graph = _graph()
    assert "marketbus.shared.config" in graph["marketbus.shared.connection"]
    assert "marketbus.shared.connection" not in graph["marketbus.shared.config"]


def test_config_alone_in_a_fresh_interpreter_loads_no_connection() -> None:
    code = (
        "import sys\n"
        "from marketbus.shared.config import RedisConfig\n"
        "repr(RedisConfig(url='redis://u:pw@h/0'))\n"
        "print(sorted(m for m in sys.modules if m.startswith('marketbus.shared.conn')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
