"""The VS Code extension's settings (editors/vscode/package.json) agree with the server's
settings dataclass: same names (camelCase on the wire), same defaults, same algorithm list.
`coda.server.*` and `coda.trace.*` are the client's own and never sent."""

from __future__ import annotations

import dataclasses
import json

import editor_tools
import pytest

settings = pytest.importorskip("coda_lsp.core.settings", reason="no coda_lsp.core.settings")

PACKAGE_JSON = editor_tools.REPO / "editors" / "vscode" / "package.json"
CLIENT_ONLY = ("coda.server.", "coda.trace.")


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def server_properties() -> dict[str, dict]:
    package = json.loads(PACKAGE_JSON.read_text())
    properties = package["contributes"]["configuration"]["properties"]
    return {
        key.removeprefix("coda."): spec
        for key, spec in properties.items()
        if key.startswith("coda.") and not key.startswith(CLIENT_ONLY)
    }


def dataclass_fields() -> dict[str, dataclasses.Field]:
    return {camel(field.name): field for field in dataclasses.fields(settings.Settings)}


def test_same_setting_names():
    assert sorted(server_properties()) == sorted(dataclass_fields())


def test_same_defaults():
    properties = server_properties()
    for name, field in dataclass_fields().items():
        default = field.default
        if isinstance(default, tuple):
            default = list(default)
        assert properties[name]["default"] == default, name


def test_same_algorithms():
    algorithms = getattr(settings, "ALGORITHMS", None)
    if algorithms is None:
        pytest.skip("coda_lsp.core.settings has no ALGORITHMS list")
    assert sorted(server_properties()["alg"]["enum"]) == sorted(algorithms)


def test_neovim_readme_names_only_real_settings():
    """The Neovim README's settings example uses wire names the server knows."""
    readme = (editor_tools.NEOVIM_PLUGIN / "README.md").read_text()
    names = set(dataclass_fields())
    start = readme.index("settings = {")
    block = readme[start : readme.index("}", start)]
    used = {line.split("=")[0].strip() for line in block.splitlines()[1:] if "=" in line}
    assert used and used <= names, used - names
