"""Web pages are kept out: forged browser headers get 403 before any fill runs, editors and
scripts (no Origin) keep working, allowed origins get CORS headers."""

from __future__ import annotations

import http.client

import pytest
from http_kit import Server

from coda_lsp.http.guard import Policy

BODY = {"input_prefix": "def add(a, b):\n    return", "input_suffix": "\n", "n_predict": 8}


def raw_post(server: Server, path: str, body: bytes, headers: dict[str, str],
             method: str = "POST") -> tuple[int, dict[str, str], str]:
    """A request whose headers are exactly these (Host included), as a browser would send."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.putrequest(method, path, skip_host="Host" in headers,
                        skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                response.read().decode())
    finally:
        conn.close()


def browser(server: Server, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.api_key}", "Content-Type": "text/plain", **extra}


@pytest.fixture(scope="module")
def open_server(tiny_model_dir):
    server = Server(tiny_model_dir, "-v", "--allow-origin", "https://ok.example",
                    "--allow-host", "coda.internal")
    yield server
    server.stop()


def test_a_page_posting_text_plain_from_a_foreign_origin_is_refused(http_server):
    before = len(http_server.lines)
    status, _, text = raw_post(http_server, "/infill", b'{"input_prefix": "x"}',
                               browser(http_server, Origin="https://evil.example"))
    assert status == 403 and "evil.example" in text and "\n" not in text.strip()
    assert not any("running" in line for line in http_server.lines[before:])


def test_a_rebound_host_name_is_refused(http_server):
    status, _, text = raw_post(http_server, "/infill", b'{"input_prefix": "x"}',
                               browser(http_server, Host=f"evil.example:{http_server.port}"))
    assert status == 403 and "host" in text
    status, _, _ = raw_post(http_server, "/v1/models", b"",
                            browser(http_server, Host="evil.example"), method="GET")
    assert status == 403


def test_the_null_origin_of_a_sandboxed_page_is_refused(http_server):
    status, _, _ = raw_post(http_server, "/v1/completions", b'{"prompt": "x"}',
                            browser(http_server, Origin="null"))
    assert status == 403


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}",
                                  "LOCALHOST"])
def test_editors_and_scripts_without_origin_keep_working(http_server, host):
    headers = {**http_server.headers(), "Host": host.format(port=http_server.port)}
    status, _, text = raw_post(http_server, "/infill", b'{"input_prefix": "x", "n_predict": 0}',
                               headers)
    assert status == 200, text


def test_an_allowed_origin_is_served_with_cors_headers(open_server):
    origin = "https://ok.example"
    status, headers, _ = raw_post(open_server, "/infill", b'{"n_predict": 0}',
                                  {**open_server.headers(), "Origin": origin})
    assert status == 200 and headers.get("access-control-allow-origin") == origin
    status, headers, _ = raw_post(open_server, "/infill", b"", {
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"}, method="OPTIONS")
    assert status == 200 and headers.get("access-control-allow-origin") == origin
    assert "authorization" in headers.get("access-control-allow-headers", "").lower()


def test_other_origins_get_no_cors_even_when_some_are_allowed(open_server):
    status, headers, _ = raw_post(open_server, "/infill", b"", {
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        method="OPTIONS")
    assert status == 403 and "access-control-allow-origin" not in headers


def test_an_allowed_host_name_is_served(open_server):
    status, _, _ = raw_post(open_server, "/infill", b'{"n_predict": 0}',
                            {**open_server.headers(), "Host": "coda.internal:8012"})
    assert status == 200
    status, _, _ = raw_post(open_server, "/infill", b'{"n_predict": 0}',
                            {**open_server.headers(), "Host": "other.internal:8012"})
    assert status == 403


def test_policy_names():
    policy = Policy.make(["https://A.example/"], ["box.lan"], bound_host="0.0.0.0")
    assert policy.origin_allowed("https://a.example")
    assert not policy.origin_allowed("http://a.example")
    assert policy.host_allowed("box.lan:8012") and policy.host_allowed("10.1.2.3:8012")
    assert policy.host_allowed("app.localhost") and not policy.host_allowed("0.0.0.0.evil.io")
    assert Policy.make(bound_host="coda.lan").host_allowed("CODA.LAN.")
    assert Policy.make(["*"]).origin_allowed("https://anything.example")
