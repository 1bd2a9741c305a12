"""The package's floors, drawn from its imports: each import runs down (or sideways within a
floor), no file imports itself back through others, and the top of onnxcomp/ stays small.

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a lazy import
is still a dependency a reader has to follow. ``python tests/test_layering.py`` prints the
structure (floors, imports that run back up, circles)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "onnxcomp"

# Floors, lowest first. A module is placed by its longest matching prefix.
FLOORS: list[tuple[str, ...]] = [
    ("numerics", "stats"),  # pure numpy: imports nothing of ours
    ("errors", "options"),  # the shared vocabulary
    ("graph", "io", "runtime", "passes", "metrics", "persample", "schemas"),
    ("methods",),
    ("pipeline",),
    ("check", "debug", "evaluate", "inspect_model", "recipe", "auto", ""),  # the API
    ("report", "cli", "__main__"),
]
MAX_BACK_UP = 1  # imports that run up a floor (the budget; today: none)
MAX_TOP_MODULES = 12


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The onnxcomp modules ``name`` imports (``from pkg import mod`` names ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
                target = f"onnxcomp.{target}" if target else "onnxcomp"
            else:
                target = node.module or ""
            targets = [f"{target}.{a.name}" for a in node.names] + [target]
        else:
            continue
        for target in targets:
            if target != "onnxcomp" and not target.startswith("onnxcomp."):
                continue
            short = target.removeprefix("onnxcomp").removeprefix(".")
            if short in known and short != name:
                yield short
                if isinstance(node, ast.ImportFrom):
                    break  # pkg.mod found: the package itself is not what is used


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imports(name, path, known)) for name, path in known.items()}


def floor(name: str) -> int:
    best, level = -1, -1
    for i, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            hit = name == prefix or name.startswith(prefix + ".") or prefix == ""
            if hit and len(prefix) > best:
                best, level = len(prefix), i
    return level


def back_up(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, deps in edges.items() for b in deps if floor(b) > floor(a))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one file (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def top_modules() -> list[str]:
    return sorted(p.name for p in PACKAGE.glob("*.py"))


def test_every_module_has_a_floor() -> None:
    assert [name for name in modules() if floor(name) < 0] == []


def test_numerics_import_nothing_of_ours() -> None:
    edges = graph()
    outside = {(a, b) for a, deps in edges.items() if floor(a) == 0 for b in deps if floor(b) != 0}
    assert outside == set()
    graph_libraries = {"onnx", "onnx_ir", "onnxruntime", "onnxscript"}
    for name, path in modules().items():
        if floor(name) == 0:
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    tops = {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    tops = {(node.module or "").split(".")[0]}
                else:
                    continue
                assert not tops & graph_libraries, name


def test_imports_run_down() -> None:
    assert len(back_up(graph())) <= MAX_BACK_UP, back_up(graph())


def test_no_import_circles() -> None:
    assert circles(graph()) == []


def test_top_of_the_package_is_small() -> None:
    assert len(top_modules()) <= MAX_TOP_MODULES, top_modules()


def tested_modules() -> set[str]:
    """The onnxcomp modules some test file imports (``from pkg import mod`` counts ``mod``)."""
    known = modules()
    found: set[str] = set()
    for path in Path(__file__).resolve().parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("onnxcomp"):
                base = (node.module or "").removeprefix("onnxcomp").removeprefix(".")
                found.add(base)
                found.update(f"{base}.{a.name}".lstrip(".") for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name.removeprefix("onnxcomp.") for a in node.names)
    return found & set(known)


def test_every_method_and_numerics_module_has_a_test() -> None:
    known = modules()
    wanted = {
        name
        for name, path in known.items()
        if name.startswith(("methods.", "numerics.")) and path.name != "__init__.py"
    }
    assert sorted(wanted - tested_modules()) == []


if __name__ == "__main__":
    edges = graph()
    by_floor: dict[int, list[str]] = {}
    for name in edges:
        by_floor.setdefault(floor(name), []).append(name or "onnxcomp")
    for level in sorted(by_floor, reverse=True):
        print(f"floor {level}: {' '.join(sorted(by_floor[level]))}")
    print("back up:", back_up(edges) or "none")
    print("circles:", circles(edges) or "none")
    print(f"top modules ({len(top_modules())}):", " ".join(top_modules()))
