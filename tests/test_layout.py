"""The code's layout: a folder per stage, unique module names, imports that point one way
(library below, commands on top) and no import cycle."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE_FOLDERS = ("precompute", "server", "trackhub")          # top-level folders, installed as epiformer.NAME
COMMAND_LAYER = ("epiformer.cli", *(f"epiformer.{name}" for name in STAGE_FOLDERS))
# The library's one module allowed to import the command layer, and why.
EXCEPTIONS = {
    "epiformer/demo/demo_pipeline.py": "the demo runs every stage on its synthetic genome, the precompute job included",
}


def module_name(path: Path) -> str:
    """The installed name of a source file (server/x.py is epiformer.server.x)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in STAGE_FOLDERS:
        parts.insert(0, "epiformer")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> list[Path]:
    """Every installed Python file."""
    return sorted(p for folder in ("epiformer", *STAGE_FOLDERS) for p in (ROOT / folder).rglob("*.py")
                  if p.name != "gunicorn.conf.py")


MODULES = {module_name(p) for p in sources()}


def imports(path: Path) -> list[str]:
    """The epiformer modules (or top-level packages) a file imports, anywhere in it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 or path.parts[-2] == "tests", f"{path}: relative import"
            module = node.module or ""
            found += [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def test_every_module_imports_by_its_full_installed_name():
    for path in sources():
        imports(path)


def test_the_library_never_imports_the_command_layer():
    upward = []
    for path in sources():
        relative = path.relative_to(ROOT).as_posix()
        if module_name(path).startswith(COMMAND_LAYER) or relative in EXCEPTIONS:
            continue
        upward += [f"{relative} imports {name}" for name in imports(path) if name.startswith(COMMAND_LAYER)]
    assert upward == []


def test_each_exception_is_still_needed():
    for relative, reason in EXCEPTIONS.items():
        assert any(name.startswith(COMMAND_LAYER) for name in imports(ROOT / relative)), \
            f"{relative} no longer imports the command layer ({reason}): drop its exception"


def test_no_import_cycle():
    graph = {module_name(p): {n for n in imports(p) if n in MODULES and n != "epiformer"} for p in sources()}
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


def test_no_two_modules_share_a_name():
    seen: dict[str, list[str]] = {}
    for path in sources():
        if path.name not in ("__init__.py", "__main__.py"):
            seen.setdefault(path.stem, []).append(path.relative_to(ROOT).as_posix())
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


def test_the_readme_layout_names_every_folder_once():
    """The README's layout section has one line per folder: the repository's top level and each
    stage of the library."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- `([\w/.]+/)`", section, flags=re.MULTILINE)
    folders = sorted(p.relative_to(ROOT).as_posix() + "/" for p in (ROOT / "epiformer").iterdir()
                     if p.is_dir() and (p / "__init__.py").exists())
    top = ["bench/", "deploy/", "docs/", "epiformer/", *(f"{name}/" for name in STAGE_FOLDERS), "scripts/",
           "static/", "tests/"]
    assert sorted(listed) == sorted(top + folders)


def test_everything_is_imported_under_the_one_installed_name():
    """server/, precompute/ and trackhub/ install as epiformer.server, epiformer.precompute and
    epiformer.trackhub (PyPI has packages named trackhub and precompute): no code imports them
    by their folder names."""
    files = [p for folder in ("epiformer", *STAGE_FOLDERS, "tests", "bench") for p in (ROOT / folder).rglob("*.py")]
    by_folder_name = [f"{path.relative_to(ROOT)} imports {name}" for path in sorted(files)
                      for name in imports(path) if name.split(".")[0] in STAGE_FOLDERS]
    assert by_folder_name == []
