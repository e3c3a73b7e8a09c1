"""The dependency direction: coda_model stands alone; coda_lsp and training build on it."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_top_levels(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_coda_model_imports_nothing_from_the_server_or_training():
    offenders = {
        path: sorted(names & {"coda_lsp", "training", "pygls", "lsprotocol", "tree_sitter"})
        for path, names in imported_top_levels("coda_model").items()
    }
    assert not {p: n for p, n in offenders.items() if n}


def test_server_does_not_import_training():
    offenders = {p: n for p, n in imported_top_levels("coda_lsp").items() if "training" in n}
    assert not offenders


def test_training_does_not_import_the_server():
    server_modules = {"server", "cli", "scheduling", "engine"}
    for path in (ROOT / "training").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            if node.module.startswith("coda_lsp"):
                parts = node.module.split(".")
                assert not (set(parts[1:]) & server_modules), f"{path} imports {node.module}"
                assert not (
                    len(parts) == 1 and {a.name for a in node.names} & server_modules
                ), f"{path} imports server modules"
