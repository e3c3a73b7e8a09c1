"""Startup problems of ``coda-lsp http`` end in one line on stderr and exit status 2."""

from __future__ import annotations

import socket
import subprocess
import sys

from http_kit import env


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coda_lsp", "http", *args],
                          capture_output=True, text=True, env=env(), timeout=300)


def test_a_busy_port_is_one_line_and_status_2(tiny_model_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run("--model", str(tiny_model_dir), "--port", str(port))
    assert done.returncode == 2
    assert done.stderr.startswith(f"coda-lsp: cannot listen on 127.0.0.1:{port}")
    assert done.stderr.count("\n") == 1


def test_bad_flags_and_a_missing_model_are_one_line(tmp_path):
    for args, needle in ((["--port", "abc"], "--port"),
                         (["--model", str(tmp_path / "none")], "model folder not found"),
                         (["--steps", "0"], "--steps must be at least 1")):
        done = run(*args)
        assert done.returncode == 2 and needle in done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
