"""The package's floors: every import points down. A room may use the rooms below it, never one above, so
a newcomer can read the package bottom-up (and a lower room never drags in, say, the web service)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sigverify"
# Bottom to top. Modules at the package's top level (cli, sweep, demo) are the front doors: above all rooms.
FLOORS = ["labels", "config", "commandline", "evaluation", "data", "losses", "models", "explain", "training",
          "serving", "app"]


def floor(module: str) -> int:
    return FLOORS.index(module) if module in FLOORS else len(FLOORS)


def imports(file: Path) -> set[str]:
    """The sigverify rooms a file imports from, lazily imported ones included."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
            [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {name.split(".")[1] for name in names if name.startswith("sigverify.")}
    return found


def test_every_import_points_down():
    upward = []
    for file in sorted(PACKAGE.rglob("*.py")):
        room = file.relative_to(PACKAGE).parts[0].removesuffix(".py")
        upward += [f"{file.relative_to(PACKAGE)} -> {other}" for other in sorted(imports(file))
                   if other != room and floor(other) > floor(room)]
    assert upward == []


def test_the_floors_name_every_room():
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert rooms <= set(FLOORS) and set(FLOORS) <= rooms | modules
