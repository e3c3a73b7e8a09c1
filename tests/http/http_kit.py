"""Helpers for the HTTP tests: a real ``coda-lsp http`` process and plain-socket requests.

The server binds port 0 and names the real port on stderr; every stderr line is kept so
tests can read the request log (cancellations are logged there).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

API_KEY = "test-key"
STEPS = 4


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class Server:
    """``wait_for``: the stderr line to wait for, "serving" (the model is ready) or
    "listening" (the port is open, the model loads)."""

    def __init__(self, model_dir: Path | str, *extra: str, api_key: str | None = API_KEY,
                 environ: dict[str, str] | None = None, wait_for: str = "serving",
                 program: tuple[str, ...] = (sys.executable, "-m", "coda_lsp")) -> None:
        command = [*program, "http", "--model", str(model_dir),
                   "--port", "0", "--steps", str(STEPS), *extra]
        if api_key:
            command += ["--api-key", api_key]
        self.api_key = api_key
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True, env=environ or env())
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        line = self.wait_for(wait_for, timeout=180)
        self.port = int(re.search(r"http://[^ ]+:(\d+)", line)[1])

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, needle: str, timeout: float = 60, start: int = 0) -> str:
        """The first stderr line (from index ``start``) that contains ``needle``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if needle in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no {needle!r} on stderr:\n" + "\n".join(self.lines))
                self._changed.wait(min(left, 0.5))

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, **extra: str) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return {**h, **extra}

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, Any]:
        """(status, parsed JSON or text). ``raw`` sends bytes as they are."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body))
            conn.request(method, path, body=data,
                         headers=self.headers() if headers is None else headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8")
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text
        finally:
            conn.close()

    def raw_headers(self, method: str, path: str, body: Any = None) -> dict[str, str]:
        """The response headers of one request, names in lower case."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers=self.headers())
            response = conn.getresponse()
            response.read()
            return {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def metric(text: str, name: str) -> float:
    """The value of one sample line of /metrics (Prometheus text)."""
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def sse_events(text: str) -> list[Any]:
    """The data of each server-sent event, parsed when it is JSON."""
    out = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def cursor_of(prefix: str) -> tuple[int, int]:
    """1-based line and column (characters) of the end of ``prefix``."""
    return prefix.count("\n") + 1, len(prefix) - (prefix.rfind("\n") + 1) + 1


def fill_cli(model_dir: Path, folder: Path, prefix: str, suffix: str,
             steps: int = STEPS, name: str = "snippet.txt", *extra: str) -> str:
    """What ``coda-lsp fill --write`` makes of prefix|suffix, the cursor between them, in a
    file of this name (a .txt file: no grammar)."""
    path = folder / name
    path.write_text(prefix + suffix, encoding="utf-8")
    line, col = cursor_of(prefix)
    subprocess.run([sys.executable, "-m", "coda_lsp", "fill", f"{path}:{line}:{col}",
                    "--model", str(model_dir), "--steps", str(steps), "--write", *extra],
                   check=False, capture_output=True, env=env(), timeout=300)
    return path.read_text(encoding="utf-8")


class EventStream:
    """A streaming request held open, read one server-sent event at a time."""

    def __init__(self, server: Server, path: str, body: Any,
                 headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        self.conn.request("POST", path, body=json.dumps(body),
                          headers=server.headers(**(headers or {})))
        self.response = self.conn.getresponse()
        self.status = self.response.status

    def next(self) -> Any:
        """The next event's data (None at the end of the stream)."""
        while True:
            line = self.response.readline().decode("utf-8")
            if not line:
                return None
            if line.startswith("data: "):
                data = line[len("data: "):].rstrip("\n")
                return data if data == "[DONE]" else json.loads(data)

    def rest(self) -> list[Any]:
        out = []
        while (event := self.next()) is not None:
            out.append(event)
        return out

    def hang_up(self) -> None:
        self.conn.sock.shutdown(2)  # socket.SHUT_RDWR: the server sees the client go
        self.conn.close()
