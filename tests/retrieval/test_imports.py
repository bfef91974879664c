"""Import rules of the retrieval app, read from the source (every import, function-local included).

retrieval/ is a ground-layer app: it never imports chatbot/ (above it) or routing/ (its peer),
and its own modules import each other without a cycle. tests/retrieval keeps to the same rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("chatbot", "routing")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(folder: str) -> dict[str, Path]:
    return {module_name(path): path for path in sorted((ROOT / folder).rglob("*.py"))}


def imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every module the file imports, anywhere in it; `from a import b` gives a and a.b."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def forbidden(name: str) -> bool:
    return any(name == app or name.startswith(f"{app}.") for app in FORBIDDEN)


def test_retrieval_and_its_tests_import_neither_chatbot_nor_routing() -> None:
    found = {
        f"{module} imports {imported}"
        for folder in ("retrieval", "tests/retrieval")
        for module, path in modules(folder).items()
        for imported in imports(path)
        if forbidden(imported)
    }
    assert not found, sorted(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

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
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def import_graph(folder: str) -> dict[str, set[str]]:
    known = modules(folder)
    return {
        module: {name for name in imports(path) if name in known and name != module}
        for module, path in known.items()
    }


def test_retrieval_modules_import_each_other_without_a_cycle() -> None:
    assert cycles(import_graph("retrieval")) == []


def test_the_cycle_check_sees_function_local_imports(tmp_path: Path) -> None:
    # The services <-> tasks loop this app once had, hidden inside functions.
    services = "def enqueue():\n    from retrieval.tasks import ingest_task\n"
    tasks = "def ingest_task():\n    from . import services\n"
    assert cycles(
        {
            "retrieval.services": imports_of(tmp_path, "services.py", services),
            "retrieval.tasks": imports_of(tmp_path, "tasks.py", tasks),
        }
    ) == [["retrieval.services", "retrieval.tasks"]]


def imports_of(root: Path, name: str, source: str) -> set[str]:
    """imports() of source saved as retrieval/<name> under root, among the two modules above."""
    path = root / "retrieval" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(source)
    return imports(path, root) & {"retrieval.services", "retrieval.tasks"}
