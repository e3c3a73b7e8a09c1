"""Bad input gets a 4xx with a one-line message, never a 500 or a hang; the server stays up.
Cancellation: a client that hangs up, or sends a newer request under the same client key,
stops the older fill between denoising steps (the log says after how many)."""

from __future__ import annotations

import json
import socket

import pytest
from http_kit import EventStream

PREFIX, SUFFIX = "def add(a, b):\n    return", "\n"
LONG = 1024  # denoising steps: far longer than any test waits


def one_line_error(status: int, body, expected_status: int) -> str:
    assert status == expected_status, body
    message = body["error"]["message"]
    assert message and "\n" not in message and body["error"]["code"] == expected_status
    return message


@pytest.mark.parametrize(("path", "raw", "needle"), [
    ("/infill", b'{"input_prefix": "x"', "malformed JSON"),
    ("/v1/completions", b"[1, 2]", "JSON object"),
    ("/v1/completions", b'{"prompt": "x"} trailing', "malformed JSON"),
    ("/infill", b'{"input_prefix": "\xff\xfe"}', "malformed JSON"),
    ("/infill", b"[" * 100_000, "malformed JSON"),
    ("/infill", b'{"input_prefix": "\\ud800"}', "lone surrogate"),
    ("/v1/completions", b"", "malformed JSON"),
])
def test_malformed_bodies_are_400(http_server, path, raw, needle):
    message = one_line_error(*http_server.request("POST", path, raw=raw), 400)
    assert needle in message


@pytest.mark.parametrize(("path", "body", "needle"), [
    ("/infill", {"input_prefix": 5}, "input_prefix must be a string"),
    ("/infill", {"n_predict": "many"}, "n_predict must be an integer"),
    ("/infill", {"steps": 0}, "steps must be an integer in [1, 1024]"),
    ("/infill", {"stream": "yes"}, "stream must be true or false"),
    ("/infill", {"input_extra": "text"}, "input_extra must be a list"),
    ("/infill", {"input_extra": [{"text": 3}]}, "input_extra[0].text must be a string"),
    ("/infill", {"response_fields": "content"}, "response_fields must be a list"),
    ("/infill", {"alg": "beam"}, "alg must be one of"),
    ("/infill", {"input_prefixx": "x"}, "unknown field 'input_prefixx'"),
    ("/infill", {"stream_states": True}, "stream_states needs stream"),
    ("/v1/completions", {"prompt": ["a", "b"]}, "prompt must be a string"),
    ("/v1/completions", {"prompt": [1, 2, 3]}, "prompt must be a string"),
    ("/v1/completions", {"prompt": "x", "temperature": "hot"}, "temperature must be a number"),
    ("/v1/completions", {"prompt": "x", "temperature": 5}, "temperature must be a number"),
    ("/v1/completions", {"prompt": "x", "n": 9}, "n must be an integer in [1, 4]"),
    ("/v1/completions", {"prompt": "x", "max_tokens": -3}, "max_tokens must be an integer"),
    ("/v1/completions", {"prompt": "x", "stop": ["s"] * 17}, "at most 16"),
    ("/v1/completions", {"prompt": "x", "echo": True}, "echo is not supported"),
    ("/v1/completions", {"prompt": "x", "logprobs": 2}, "logprobs is not supported"),
    ("/v1/completions", {"prompt": "x", "stream_options": 1}, "must be an object"),
    ("/v1/completions", {"prompt": "x", "functions": []}, "unknown field 'functions'"),
])
def test_wrong_fields_are_400_naming_the_field(http_server, path, body, needle):
    message = one_line_error(*http_server.request("POST", path, body), 400)
    assert needle in message


def test_a_body_over_the_limit_is_413_whether_or_not_its_length_is_announced(http_server):
    big = json.dumps({"input_prefix": "x" * (3 << 20)}).encode()
    one_line_error(*http_server.request("POST", "/infill", raw=big), 413)
    # chunked: no Content-Length, so the limit must hold while reading
    sock = socket.create_connection(("127.0.0.1", http_server.port), timeout=60)
    head = (f"POST /infill HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            f"Authorization: Bearer {http_server.api_key}\r\n\r\n").encode()
    chunk = b"x" * (1 << 20)
    try:
        sock.sendall(head)
        for _ in range(3):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server may answer and close before reading it all
    reply = sock.recv(4096).decode("latin-1")
    sock.close()
    assert reply.startswith("HTTP/1.1 413"), reply[:200]


def test_api_key_is_required_except_for_health(http_server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": "wrong"}):
        for method, path in (("POST", "/infill"), ("POST", "/v1/completions"),
                             ("GET", "/v1/models")):
            status, body = http_server.request(method, path, {"prompt": "x"}, headers=headers)
            one_line_error(status, body, 401)
    assert http_server.request("GET", "/health", headers={})[0] == 200
    assert http_server.request("GET", "/v1/models",
                               headers={"X-Api-Key": http_server.api_key})[0] == 200


def test_unknown_paths_and_methods_are_4xx(http_server):
    one_line_error(*http_server.request("GET", "/v2/anything"), 404)
    one_line_error(*http_server.request("GET", "/infill"), 405)


def test_a_client_that_hangs_up_stops_its_fill_between_steps(http_server):
    start = len(http_server.lines)
    stream = EventStream(http_server, "/infill", {
        "input_prefix": PREFIX, "input_suffix": SUFFIX, "steps": LONG, "stream": True,
        "stream_states": True})
    first = stream.next()
    assert stream.status == 200 and first["state"]["step"] == 1  # running, not queued
    stream.hang_up()
    line = http_server.wait_for(f"of {LONG} denoising steps", start=start)
    assert int(line.split("stopped after ")[1].split()[0]) < LONG
    # a plain (non-streaming) request that is dropped stops too
    start = len(http_server.lines)
    sock = socket.create_connection(("127.0.0.1", http_server.port), timeout=60)
    body = json.dumps({"prompt": PREFIX, "suffix": SUFFIX, "steps": LONG}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nAuthorization: Bearer %s\r\n"
                 b"Content-Length: %d\r\n\r\n%s"
                 % (http_server.api_key.encode(), len(body), body))
    http_server.wait_for("running", start=start)
    sock.close()
    http_server.wait_for(f"of {LONG} denoising steps", start=start)
    assert http_server.request("POST", "/infill", {"input_prefix": PREFIX})[0] == 200


def test_newest_request_of_a_client_wins(http_server):
    start = len(http_server.lines)
    key = {"X-Coda-Client": "editor-1"}
    older = EventStream(http_server, "/infill", {
        "input_prefix": PREFIX, "input_suffix": SUFFIX, "steps": LONG, "stream": True,
        "stream_states": True}, headers=key)
    assert older.next()["state"]["step"] == 1
    status, body = http_server.request("POST", "/infill", {"input_prefix": PREFIX},
                                       headers=http_server.headers(**key))
    assert status == 200 and "content" in body
    events = older.rest()
    assert events[-1]["error"]["code"] == 409
    assert "superseded" in events[-1]["error"]["message"]
    http_server.wait_for(f"of {LONG} denoising steps", start=start)
    # other clients are not affected: a keyless request and another client's run side by side
    assert http_server.request("POST", "/infill", {"input_prefix": PREFIX})[0] == 200


def test_server_is_alive_after_all_of_it(http_server):
    assert http_server.alive
    assert http_server.request("GET", "/health")[0] == 200
    assert not [line for line in http_server.lines if "Traceback" in line]
