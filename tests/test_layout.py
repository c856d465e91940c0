"""The code's layout: imports point one way (library below, commands on top) and form no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE_FOLDERS = ("precompute", "server", "trackhub")          # top-level folders, installed as epiformer.NAME
COMMAND_PACKAGES = tuple(f"epiformer.{name}" for name in STAGE_FOLDERS)


def imports(path: Path) -> list[tuple[str, str | None]]:
    """(imported epiformer module or top-level package, enclosing function) of every import in a file."""
    found = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.ImportFrom):
                name = f"epiformer.{child.module}" if child.level == 1 else child.module or ""
                found.append((name, function))
            elif isinstance(child, ast.Import):
                found.extend((alias.name, function) for alias in child.names)
            visit(child, inner)

    visit(ast.parse(path.read_text()), None)
    return found


def test_the_library_never_imports_the_command_packages():
    upward = []
    for path in sorted((ROOT / "epiformer").glob("*.py")):
        for name, function in imports(path):
            if name.startswith(COMMAND_PACKAGES) and not (
                    path.name == "cli.py" or (path.name == "demo.py" and function == "run_demo")):
                upward.append(f"{path.name} ({function or 'module'}) imports {name}")
    assert upward == []


def test_no_import_cycle_among_library_modules():
    graph = {f"epiformer.{p.stem}": {n for n, _ in imports(p) if n.startswith("epiformer.")}
             for p in (ROOT / "epiformer").glob("*.py") if p.stem != "__init__"}
    cycles = []

    def walk(module: str, path: list[str]) -> None:
        for dep in sorted(graph.get(module, ())):
            if dep in path:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                walk(dep, path + [dep])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        walk(module, [module])
    assert cycles == []


def test_everything_is_imported_under_the_one_installed_name():
    """server/, precompute/ and trackhub/ install as epiformer.server, epiformer.precompute and
    epiformer.trackhub (PyPI has packages named trackhub and precompute): no code imports them
    by their folder names."""
    sources = [p for folder in ("epiformer", *STAGE_FOLDERS, "tests", "bench") for p in (ROOT / folder).rglob("*.py")]
    by_folder_name = [f"{path.relative_to(ROOT)} imports {name}" for path in sorted(sources)
                      for name, _ in imports(path) if name.split(".")[0] in STAGE_FOLDERS]
    assert by_folder_name == []
