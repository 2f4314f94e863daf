"""The import graph of the package: backbones know nothing of training or evaluation, and no two
subpackages import each other (directly or through others), lazy imports inside functions included."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "recunlearn"


def imported_parts(file: Path) -> set[str]:
    """The top-level parts of recunlearn (subpackage or module) that `file` imports."""
    here = file.relative_to(PACKAGE).parent.parts
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[: len(here) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [a.name for a in node.names][:1])
            elif node.module and node.module.split(".")[0] == "recunlearn":
                target = node.module.split(".")[1:] or [a.name for a in node.names][:1]
            else:
                continue
            found.add(target[0] if target else "")
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("recunlearn.")}
    return {part.removesuffix(".py") for part in found if part}


def part_of(file: Path) -> str:
    parts = file.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for file in PACKAGE.rglob("*.py"):
        source = part_of(file)
        graph.setdefault(source, set()).update(imported_parts(file) - {source, "__init__"})
    return graph


def test_backbones_import_nothing_from_training_or_evaluation():
    assert not import_graph()["models"] & {"train", "eval", "unlearn", "bench", "cli", "estimator"}


def test_no_import_cycles_between_subpackages():
    graph = import_graph()
    finished: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            assert nxt not in path, "import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt])
            if nxt not in finished:
                visit(nxt, path + [nxt])
        finished.add(node)

    for node in sorted(graph):
        visit(node, [node])
