"""The import graph of the code folders: no circle, and no import changes direction
between folders (DESIGN.md's layout table, as the code stands)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("schemas", "gateway", "streams", "sinks", "replay", "govledger", "console")
# Which folders each folder may import from (besides itself). The sink is handed the
# admin API's authentication rule by `govledger.services`; it imports no gateway code.
ALLOWED = {
    "schemas": set(),
    "streams": {"schemas"},
    "gateway": {"schemas", "streams"},
    "sinks": {"schemas"},
    "replay": {"schemas", "streams", "sinks"},
    "govledger": set(FOLDERS),
    # The console reaches data only through the admin and query APIs, over HTTP.
    "console": {"schemas"},
}
# Of `streams`, the gateway and replay use the pure folds only (never an agent).
PURE_STREAMS = ("logic", "model")


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    modules = {
        _module_of(path): path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py")
    }
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for named in targets:
                # The longest known module the import names (a name imported from a
                # module is not itself a module).
                target = named
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_code_has_no_import_circle() -> None:
    assert _cycles(_graph()) == []


def test_no_import_changes_direction_between_folders() -> None:
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in _graph().items()
        for target in targets
        if (source := name.split(".")[0]) != (folder := target.split(".")[0])
        and (
            folder not in ALLOWED[source]
            or (
                folder == "streams"
                and source in ("gateway", "replay")
                and len(parts := target.split(".")) > 2
                and parts[2] not in PURE_STREAMS
            )
        )
    )
    assert wrong == []


def test_the_check_sees_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_graph_holds_the_code() -> None:
    graph = _graph()
    assert len(graph) > 100
    assert "schemas.codec" in graph["sinks.avro_batch"]
    assert "gateway.admin.principals" in graph["sinks.access"] | graph["govledger.services"]
