"""``coda-lsp http --fast``: the language server's typing path, context keys/values carried
from one keystroke of a client to its next."""

from __future__ import annotations

import pytest
from http_kit import Server, metric

from coda_model.memory import heap_bytes

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


def test_metrics_show_the_carried_contexts_and_the_process_memory(fast_server):
    for client in ("m-1", "m-2"):
        assert fast_server.request("POST", "/infill", {
            "input_prefix": PREFIX, "prompt": "        self.", "input_suffix": "\n"},
            headers=fast_server.headers(**{"X-Coda-Client": client}))[0] == 200
    text = fast_server.request("GET", "/metrics", headers={})[1]
    assert metric(text, "coda_carried_contexts") >= 2  # one per client that typed
    assert metric(text, "process_resident_memory_bytes") > 20 << 20
    assert metric(text, "process_open_fds") >= 3
    assert metric(text, "coda_memory_trims") >= 0
    if heap_bytes() is not None:  # glibc: the heap's live bytes, well under the resident size
        live = metric(text, "coda_heap_in_use_bytes")
        assert 1 << 20 < live < metric(text, "process_resident_memory_bytes")
        assert metric(text, "coda_heap_free_bytes") >= 0


def test_concurrent_clients_on_a_batching_server_are_each_answered_newest_wins(tiny_model_dir):
    from concurrent.futures import ThreadPoolExecutor

    server = Server(tiny_model_dir, "--fast", "--max-batch", "8")
    try:
        status, health = server.request("GET", "/health")
        assert status == 200 and health["queue"]["max_batch"] == 8

        def send(client: str, typed: str):
            return server.request("POST", "/infill", {
                "input_prefix": PREFIX, "prompt": typed, "input_suffix": "\n"},
                headers=server.headers(**{"X-Coda-Client": client}))

        with ThreadPoolExecutor(max_workers=10) as pool:
            firsts = [pool.submit(send, f"c{i}", "        self.") for i in range(8)]
            again = pool.submit(send, "c0", "        self.items")  # c0 types on
            answers = [f.result() for f in firsts]
            last = again.result()
        assert last[0] == 200 and isinstance(last[1]["content"], str)
        assert all(status == 200 for status, _ in answers[1:])
        assert answers[0][0] in (200, 409)  # c0's older request: answered or replaced
        # how the worker spent its time: every fill that ran is a row of one run
        text = server.request("GET", "/metrics", headers={})[1]
        runs, rows = metric(text, "coda_batch_rows_count"), metric(text, "coda_batch_rows_sum")
        assert 1 <= runs <= rows and 8 <= rows <= 9  # c0's older fill ran, or was replaced
        assert metric(text, 'coda_batch_rows_bucket{le="8.0"}') == runs  # none over --max-batch
        assert metric(text, "coda_worker_busy_seconds_total") > 0
        assert metric(text, "coda_batch_gather_seconds_total") >= 0
    finally:
        server.stop()
