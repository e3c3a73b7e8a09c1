"""The arrows between the rooms (ARCHITECTURE.md, "The map"): each room imports only the rooms
below it, so nothing runs back up and there is no circle."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# room -> the rooms (and third-party packages) it may not import; rooms are dotted prefixes,
# the longest one naming a module wins.
OURS = ("coda_model", "coda_syntax", "coda_lsp", "training")
ROOMS = {
    "coda_model": {"coda_syntax", "coda_lsp", "training", "pygls", "lsprotocol", "tree_sitter",
                   "starlette", "uvicorn"},
    "coda_syntax": {"coda_model", "coda_lsp", "training", "torch", "pygls", "starlette"},
    "coda_lsp": {"training"},
    "coda_lsp.core": {"coda_lsp.lsp", "coda_lsp.http", "coda_lsp.cli", "training",
                      "pygls.server", "pygls.lsp", "starlette", "uvicorn"},
    "coda_lsp.lsp": {"coda_lsp.http", "coda_lsp.cli", "training", "starlette", "uvicorn"},
    "coda_lsp.http": {"coda_lsp.lsp", "coda_lsp.cli", "training", "pygls"},
    "coda_lsp.cli": {"training"},
    "training": {"coda_lsp"},
    "training.data": {"training.objective", "training.run", "training.eval", "training.finetune",
                      "training.gpu_run", "training.ship"},
    "training.objective": {"training.data", "training.run", "training.eval", "training.finetune",
                           "training.gpu_run", "training.ship"},
    "training.run": {"training.eval", "training.finetune", "training.gpu_run", "training.ship"},
    "training.eval": {"training.finetune", "training.gpu_run", "training.ship"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module the file imports, relative imports resolved, `from a import b` as a.b."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def room_of(module: str) -> str | None:
    matches = [room for room in ROOMS if module == room or module.startswith(room + ".")]
    return max(matches, key=len) if matches else None


def forbidden_for(module: str) -> set[str]:
    """A module obeys its own room and every room above it in the dotted name."""
    rules: set[str] = set()
    for room, banned in ROOMS.items():
        if module == room or module.startswith(room + "."):
            rules |= banned
    return rules


def violations() -> list[str]:
    found = []
    for package in OURS:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = module_name(path)
            banned = forbidden_for(module)
            for name in imports_of(path):
                hit = [b for b in banned if name == b or name.startswith(b + ".")]
                if hit:
                    found.append(f"{module} imports {name}")
    return found


def test_every_room_imports_only_rooms_below_it():
    assert violations() == []


@pytest.mark.parametrize("module, imported", [
    ("coda_model.sampler", "coda_lsp.core.engine"),
    ("coda_syntax.spans", "coda_model"),
    ("coda_lsp.core.fim", "coda_lsp.lsp.server"),
    ("coda_lsp.http.server", "coda_lsp.lsp.server"),
    ("training.data.heldout", "coda_lsp.core.settings"),
    ("training.run.loop", "training.eval.probe"),
])
def test_the_rules_catch_an_arrow_running_back_up(module, imported):
    assert any(imported == b or imported.startswith(b + ".") for b in forbidden_for(module))


def test_the_rooms_exist_and_every_package_module_belongs_to_one():
    for room in ROOMS:
        path = ROOT / room.replace(".", "/")
        assert path.is_dir() or path.with_suffix(".py").is_file(), room
    for package in OURS:
        for path in (ROOT / package).rglob("*.py"):
            assert room_of(module_name(path)), path


def test_tests_mirror_the_packages():
    """Each room has its tests folder (tests/<room>/), so a reader finds them by name."""
    for folder in ("model", "syntax", "core", "lsp", "http", "cli", "training", "editors"):
        assert list((ROOT / "tests" / folder).glob("test_*.py")), folder
