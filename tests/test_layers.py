"""The package's import graph points one way: process/admin -> web -> api -> origin -> store
-> cluster -> s3 -> isp -> config.

Read from the source with `ast` (every `import` and `from ... import`, function-level ones
included, since a deferred import is still a dependency), so the check needs no import
side effects and names the offending line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edge"

# Higher layers may import lower ones, never the reverse; packages on one layer do not
# import each other. `edge` itself (config, problems, logs, __version__) is the floor.
LAYERS: dict[str, int] = {
    "testing": 8,
    "process": 7,
    "admin": 7,
    "web": 6,
    "api": 5,
    "origin": 4,
    "store": 3,
    "cluster": 2,  # Redis coordination, which the S3 store and the shared state use
    "s3": 1,  # the S3 wire client
    "isp": 0,
    "config": -1,
    "metrics": -1,  # web, origin and isp all report to it; it imports none of them
    "": -1,  # edge/problems.py, logs.py, __init__.py: the floor, with config
}


def _unit(module: str) -> str:
    """The layer a module belongs to: its subpackage, or '' for top-level modules."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in LAYERS and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return ""


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from edge import cosxml` imports a module too
                yield node.lineno, f"{target}.{alias.name}"


def _edges() -> list[tuple[str, int, str]]:
    found = []
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _module_name(path)
        for line, target in _imports(path):
            if target.startswith("edge") and target in modules and target != source:
                found.append((source, line, target))
    return found


def test_every_subpackage_has_a_layer() -> None:
    """A new subpackage must be placed in the layer order before it can be imported."""
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages - set(LAYERS) == set()


def test_no_import_points_up_or_across() -> None:
    """No module imports a higher layer or a sibling package of its own layer: requests
    flow web -> api | store | origin -> store, and nothing below the web layer imports it."""
    wrong = []
    for source, line, target in _edges():
        here, there = _unit(source), _unit(target)
        if here == there:
            continue
        if LAYERS[there] >= LAYERS[here]:
            wrong.append(f"{source}:{line} imports {target} ({here or 'edge'} -> {there})")
    assert wrong == []


def test_no_import_cycles() -> None:
    """The module graph has no cycles, deferred (function-level) imports included."""
    graph: dict[str, set[str]] = {}
    for source, _line, target in _edges():
        graph.setdefault(source, set()).add(target)
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_modules_and_classes_stay_small() -> None:
    """No module of the package over 450 lines and no class over 260 (the issue's ~450
    and ~250): a concept that outgrows them is two concepts."""
    over = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 450:
            over.append(f"{path.relative_to(PACKAGE.parent)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length > 260:
                    over.append(f"{path.relative_to(PACKAGE.parent)}: class {node.name} {length}")
    assert over == []
