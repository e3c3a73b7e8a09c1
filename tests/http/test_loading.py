"""``coda-lsp http`` listens at once and loads its model in the background: while a Hub id
downloads (the real huggingface_hub client against tests/hubkit.py's local Hub, slowed),
``/health`` says "loading" with the percent and fills are answered 503 with Retry-After;
then it serves. A model that cannot load ends the server with one line."""

from __future__ import annotations

import time

import pytest
from http_kit import Server
from hubkit import REFERENCE, FakeHub, hub_env, needs_reference

pytestmark = needs_reference

REPO = "org/tiny-reference"
FILL = {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n", "n_predict": 8}


def healths_until_ready(server: Server, timeout: float = 240) -> list[tuple[int, dict, str]]:
    """Every /health answer (status, body, Retry-After) until the "serving" line, polled:
    the test watches a download, there is no event to wait on from outside the process."""
    seen = []
    deadline = time.monotonic() + timeout
    while not any("serving" in line for line in server.lines):
        assert time.monotonic() < deadline and server.alive, "\n".join(server.lines)
        status, body = server.request("GET", "/health")
        seen.append((status, body))
        time.sleep(0.1)
    return seen


def test_health_says_loading_with_the_percent_and_fills_wait_until_the_model_is_ready(
        tmp_path):
    with FakeHub() as hub:
        hub.add(REPO, REFERENCE)
        hub.slow("model.safetensors", 0.3)  # ~6 s for 19.5 MB: /health catches it mid-way
        server = Server(REPO, environ=hub_env(hub, tmp_path / "hf"), wait_for="listening")
        try:
            status, body = server.request("POST", "/infill", FILL)
            assert status == 503 and "the model is loading" in body["error"]["message"]
            conn_headers = server.raw_headers("POST", "/infill", FILL)
            assert conn_headers["retry-after"] == "2"
            seen = healths_until_ready(server)
            loading = [body for status, body in seen if status == 503]
            assert loading and all(b["status"] == "loading" for b in loading)
            percents = [b["percent"] for b in loading if b["percent"] is not None]
            assert any(0 < p < 100 for p in percents), loading
            assert percents == sorted(percents)
            assert any(b["message"].startswith(f"downloading {REPO}: ") and " MB)" in
                       b["message"] for b in loading)
            status, body = server.request("GET", "/health")
            assert status == 200 and body["status"] == "ok"
            assert body["models"]["fill"]["model"] == "tiny-reference"
            status, body = server.request("POST", "/infill", FILL)
            assert status == 200 and isinstance(body["content"], str)
        finally:
            server.stop()


def test_a_model_that_cannot_load_ends_the_server_with_one_line(tmp_path):
    with FakeHub() as hub:
        server = Server("org/none", environ=hub_env(hub, tmp_path / "hf"),
                        wait_for="listening")
        assert server.proc.wait(timeout=120) == 2
        errors = [line for line in server.lines if line.startswith("coda-lsp: ")]
        assert errors == ["coda-lsp: cannot load the model from org/none: org/none: no such "
                          "model on the Hub (404) and no folder of that name here: check "
                          "the id"], server.lines


@pytest.mark.parametrize("path", ["/health", "/metrics"])
def test_health_and_metrics_answer_while_loading(tmp_path, path):
    with FakeHub() as hub:
        hub.add(REPO, REFERENCE)
        hub.slow("model.safetensors", 5.0)  # still downloading when asked
        server = Server(REPO, environ=hub_env(hub, tmp_path / "hf"), wait_for="listening")
        try:
            status, _ = server.request("GET", path)
            assert status == (503 if path == "/health" else 200)
        finally:
            server.stop()
