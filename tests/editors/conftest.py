"""Fixtures for the real-editor tests: which server to run the editors against.

`server` is parametrized: "standin" (tests/editors/standin_server.py, canned answers, exact
assertions) and "coda-lsp" (the real server with a tiny checkpoint; skipped until it and the
checkpoint exist)."""

from __future__ import annotations

import editor_tools
import pytest


class Server:
    def __init__(self, name: str, command: list[str], settings: dict | None = None):
        self.name = name
        self.command = command
        self.settings = settings or {}  # camelCase server settings the editor should send

    @property
    def is_standin(self) -> bool:
        return self.name == "standin"


@pytest.fixture(params=["standin", "coda-lsp"])
def server(request) -> Server:
    if request.param == "standin":
        return Server("standin", editor_tools.standin_server_command())
    model = editor_tools.real_model_dir()
    if model is None:
        # The random-weight checkpoint from tests/conftest.py (the lead's helper).
        model = request.getfixturevalue("tiny_model_dir")
    command, why_not = editor_tools.real_server_command(model)
    if command is None:
        pytest.skip(f"real server unavailable: {why_not}")
    # A random tiny model is never confident: show whatever it says.
    return Server("coda-lsp", command, {"confidenceThreshold": 0.0,
                                          "automaticConfidenceThreshold": 0.0, "steps": 4})


@pytest.fixture
def artifacts_dir():
    editor_tools.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return editor_tools.ARTIFACTS
