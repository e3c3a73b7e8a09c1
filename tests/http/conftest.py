"""One real ``coda-lsp http`` process (tiny checkpoint, API key set) for the HTTP tests."""

import pytest
from http_kit import Server


@pytest.fixture(scope="session")
def http_server(tiny_model_dir):
    server = Server(tiny_model_dir)
    yield server
    server.stop()
