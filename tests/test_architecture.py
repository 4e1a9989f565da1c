"""The house as docs/architecture.md draws it: floors that import only downwards, no import cycle, modules of at most
400 lines, each default and each file name of a run written once, and test modules that import none of each other."""

import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGE = ROOT / "tcmgc_cli"
FLOORS = [  # bottom up; a room may import rooms of its own floor or below (docs/architecture.md)
    {"defaults", "errors", "workspace", "distributed", "__init__"},
    {"config", "options", "fileio", "metrics", "data"},
    {"cache", "precision", "optim"},
    {"model"},
    {"checkpoint", "extract"},
    {"search"},
    {"evaluation", "serve"},
    {"training"},
    {"ablation"},
    {"cli", "__main__"},
]


def modules() -> dict[str, Path]:
    """Dotted name -> file, a package by its own name (its __init__.py)."""
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def imports(path: Path, name: str) -> set[str]:
    """The tcmgc_cli modules a module imports, at any depth of its code (lazy imports inside functions too)."""
    known = modules()
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:  # a submodule, else the module
            found.update(sub if (sub := f"{node.module}.{a.name}") in known else node.module for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known and m != name}


def room(module: str) -> str:
    """The top-level module or package a module belongs to (the package's own __init__ is "__init__")."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor(module: str) -> int:
    return next(i for i, rooms in enumerate(FLOORS) if room(module) in rooms)


def test_every_import_goes_down_or_stays_on_its_floor() -> None:
    up = [(m, i) for m, p in modules().items() for i in imports(p, m) if floor(i) > floor(m)]
    assert not up, f"imports that run up a floor: {up}"


def test_no_import_cycle() -> None:
    graph = {m: imports(p, m) for m, p in modules().items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*path[path.index(n) :], n])}")
            if n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_modules_stay_short_and_defaults_are_written_once() -> None:
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"
    for literal in ('"tcmgc-b32"', "best.pt", "last.prev.pt"):
        holders = [m for m, p in modules().items() if literal in p.read_text()]
        assert len(holders) <= 1, f"{literal} is written in {holders}"


def test_no_test_module_imports_another() -> None:
    for path in (ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not [n for n in names if n.startswith("tests.test_")], f"{path.name} imports a test module"
