"""``coda-lsp http --fast``: the language server's typing path, context keys/values carried
from one keystroke of a client to its next."""

from __future__ import annotations

import pytest
from http_kit import Server

PREFIX = "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self):\n"


@pytest.fixture(scope="module")
def fast_server(tiny_model_dir):
    server = Server(tiny_model_dir, "--fast")
    yield server
    server.stop()


def test_a_clients_next_keystroke_reuses_the_context_it_left(fast_server):
    headers = fast_server.headers(**{"X-Coda-Client": "vim-1"})
    typed = "        self.items.app"
    for k in (len(typed) - 1, len(typed)):
        start = len(fast_server.lines)
        status, body = fast_server.request("POST", "/infill", {
            "input_prefix": PREFIX, "prompt": typed[:k], "input_suffix": "\n"}, headers=headers)
        assert status == 200 and isinstance(body["content"], str)
        line = fast_server.wait_for("reused=", start=start)
    assert int(line.split("reused=")[1].split()[0]) > 0  # the second keystroke reused context
