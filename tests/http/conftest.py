"""One real ``coda-lsp http`` process (tiny checkpoint, API key set) for the HTTP tests."""

import pytest
from http_kit import Server


@pytest.fixture(scope="session")
def http_server(tiny_model_dir):
    server = Server(tiny_model_dir, "-v")  # -v: the log says when a fill starts
    yield server
    server.stop()
