"""The package's import graph: no module imports itself back through others when imported (no import circle)."""

import ast
from pathlib import Path

import robustft

ROOT = Path(robustft.__file__).parent


def _module_name(path: Path) -> str:
    """``robustft.engine.run`` for ``<src>/robustft/engine/run.py`` (a package is its ``__init__``)."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_time_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements run when the module is imported: its top level, inside ``if``/``try``/``with``, but not inside
    functions or classes (run later) nor ``if TYPE_CHECKING:`` (never run)."""
    found = []
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found += _import_time_statements(node.orelse)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    found += _import_time_statements(child.body if isinstance(child, ast.ExceptHandler) else [child])
        else:
            found.append(node)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the robustft modules it imports at import time."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in _import_time_statements(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]) if node.level else ""
                module = ".".join(filter(None, (base, node.module)))
                targets |= {module, *(f"{module}.{a.name}" for a in node.names)}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_cycles_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_graph_sees_the_engine_imports():
    graph = import_graph()
    assert "robustft.engine.config" in graph["robustft.engine.run"]
    assert "robustft.engine.train" not in graph["robustft.engine.config"]


def test_no_import_circle():
    assert cycles(import_graph()) == []
