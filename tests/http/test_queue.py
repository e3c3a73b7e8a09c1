"""A bounded queue: past --max-queue a request is answered 503 with Retry-After at once, a
request that replaces its own client's waiting one still gets in; /health and /metrics
(Prometheus text) show the depth, the fills and the refusals."""

from __future__ import annotations

import http.client
import json
import time

import pytest
from http_kit import Server, metric

LONG = 1024  # denoising steps: far longer than the test waits


@pytest.fixture(scope="module")
def small_queue(tiny_model_dir):
    server = Server(tiny_model_dir, "-v", "--max-queue", "2")
    yield server
    server.stop()


def hold(server: Server, client: str) -> http.client.HTTPConnection:
    """A long fill sent and left waiting (its answer not read)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    body = {"input_prefix": "def add(a, b):\n    return", "input_suffix": "\n", "steps": LONG}
    conn.request("POST", "/infill", body=json.dumps(body),
                 headers=server.headers(**{"X-Coda-Client": client}))
    return conn


def depth(server: Server) -> int:
    return server.request("GET", "/health")[1]["queue"]["depth"]


def wait_for_depth(server: Server, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while depth(server) != n:
        assert time.monotonic() < deadline, f"queue depth never reached {n}"
        time.sleep(0.05)


def test_past_the_limit_a_request_is_refused_at_once_with_retry_after(small_queue):
    held = [hold(small_queue, "a"), hold(small_queue, "b")]
    try:
        wait_for_depth(small_queue, 2)
        conn = http.client.HTTPConnection("127.0.0.1", small_queue.port, timeout=10)
        conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "x", "steps": LONG}),
                     headers=small_queue.headers(**{"X-Coda-Client": "c"}))
        response = conn.getresponse()
        body = json.loads(response.read())
        conn.close()
        assert response.status == 503 and int(response.getheader("Retry-After")) >= 1
        assert "busy" in body["error"]["message"] and body["error"]["code"] == 503

        status, text = small_queue.request("POST", "/infill", {"stream": True, "steps": LONG},
                                           headers=small_queue.headers(**{"X-Coda-Client": "d"}))
        assert status == 503, text  # refused before the event stream starts

        # the same client as the waiting fill replaces it: admitted, the older one gets 409
        held.append(hold(small_queue, "b"))
        assert held[1].getresponse().status == 409
        assert depth(small_queue) == 2

        status, text = small_queue.request("GET", "/metrics", headers={})
        assert status == 200
        assert metric(text, "coda_queue_depth") == 2 and metric(text, "coda_queue_limit") == 2
        assert 'coda_rejected_total{reason="queue_full"} 2.0' in text
        assert 'coda_fills_total{endpoint="infill",outcome="superseded"} 1.0' in text
        assert "coda_fill_seconds_bucket" in text and "coda_queue_wait_seconds_count" in text
    finally:
        for conn in held:
            conn.sock.shutdown(2)  # hang up: the fills stop between denoising steps
            conn.close()
    wait_for_depth(small_queue, 0)
    status, _ = small_queue.request("POST", "/infill", {"input_prefix": "x", "steps": 2})
    assert status == 200


def test_fills_are_counted_and_timed(small_queue):
    wait_for_depth(small_queue, 0)
    assert small_queue.request("POST", "/infill", {"input_prefix": "x", "steps": 2})[0] == 200
    text = small_queue.request("GET", "/metrics", headers={})[1]
    assert metric(text, 'coda_fills_total{endpoint="infill",outcome="ok"}') >= 1
    assert metric(text, 'coda_fill_seconds_count{endpoint="infill"}') >= 1
    assert metric(text, "coda_model_seconds_count") >= 1
