"""A small Hub-shaped HTTP server for tests: the endpoints ``huggingface_hub`` calls to download
a model snapshot, serving folders from disk, so the real client runs end to end (no mocking).

Endpoints: ``GET /api/models/{repo}[/revision/{rev}]`` (the commit), ``GET
/api/models/{repo}/tree/{rev}`` (the file list), ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``
(``X-Repo-Commit``, ``ETag``, ``Content-Length``, ``Range``). Errors carry the Hub's
``X-Error-Code`` header, which the client turns into its exception classes: a private repo
without a token is 401 ``RepoNotFound``, a wrong token 401 (no code), a gated one 403
``GatedRepo``, an unknown one 404 ``RepoNotFound``, an unknown revision 404
``RevisionNotFound``. ``cut`` makes the next GETs of a file stop partway and drop the
connection, like a network that goes away mid-transfer; ``slow`` sends a file at a walking
pace, so a test can watch the progress.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

LFS_SUFFIXES = (".safetensors", ".bin")


@dataclass
class Repo:
    folder: Path
    private: bool = False
    gated: bool = False
    commit: str = ""
    files: dict[str, bytes] = field(default_factory=dict)

    def load(self, repo_id: str) -> Repo:
        self.files = {p.name: p.read_bytes() for p in sorted(self.folder.iterdir()) if p.is_file()}
        digest = hashlib.sha1(repo_id.encode())
        for name, data in self.files.items():
            digest.update(name.encode() + hashlib.sha256(data).digest())
        self.commit = digest.hexdigest()
        return self


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """``with FakeHub() as hub: hub.add("org/tiny", folder)``; ``hub.url`` for HF_ENDPOINT."""

    def __init__(self, token: str = "hf_test_token") -> None:
        self.repos: dict[str, Repo] = {}
        self.token = token
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self.cuts: dict[str, tuple[int, float]] = {}  # file name -> (GETs to cut, fraction sent)
        self.pace: dict[str, float] = {}  # file name -> seconds between 1 MB pieces
        self.lock = threading.Lock()
        hub = self

        class Handler(_Handler):
            owner = hub

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo_id: str, folder: Path, **kwargs) -> Repo:
        repo = self.repos[repo_id] = Repo(Path(folder), **kwargs).load(repo_id)
        return repo

    def cut(self, filename: str, times: int = 1, fraction: float = 0.75) -> None:
        """The next ``times`` GETs of ``filename`` send ``fraction`` of the bytes, then hang
        up (huggingface_hub counts 10 MB chunks: a resume needs one whole chunk received)."""
        self.cuts[filename] = (times, fraction)

    def slow(self, filename: str, seconds_per_mb: float) -> None:
        """Send ``filename`` 1 MB at a time, ``seconds_per_mb`` apart (a slow link)."""
        self.pace[filename] = seconds_per_mb

    def gets(self, filename: str) -> list[str | None]:
        """The Range header of every GET of ``filename`` so far."""
        return [rng for method, path, rng in self.requests
                if method == "GET" and path.endswith("/" + filename)]

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


_MODEL = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?/?$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class _Handler(BaseHTTPRequestHandler):
    owner: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet: the test output is the test's
        pass

    # -- plumbing ---------------------------------------------------------------------------

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None,
               content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._reply(status, json.dumps({"error": message}).encode(), headers)

    def _repo(self, repo_id: str, rev: str | None) -> Repo | None:
        """The repo, or None after answering the error the real Hub would give."""
        given = self.headers.get("Authorization")
        if given is not None and given != f"Bearer {self.owner.token}":
            self._error(401, None, "Invalid credentials in Authorization header")
            return None
        repo = self.owner.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        authorized = given is not None
        if repo.private and not authorized:  # the Hub hides private repos: "not found", 401
            self._error(401, "RepoNotFound", "Invalid username or password.")
            return None
        if repo.gated and not authorized:
            self._error(403, "GatedRepo", "Access to this model is restricted")
            return None
        if rev not in (None, "main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return repo

    # -- endpoints --------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _handle(self) -> None:
        path = urlsplit(self.path).path
        with self.owner.lock:
            self.owner.requests.append((self.command, path, self.headers.get("Range")))
        if (m := _MODEL.match(path)) and self.command == "GET":
            self._model_info(m["repo"], m["rev"] and unquote(m["rev"]))
        elif (m := _TREE.match(path)) and self.command == "GET":
            self._tree(m["repo"], unquote(m["rev"]))
        elif m := _RESOLVE.match(path):
            self._resolve(m["repo"], unquote(m["rev"]), unquote(m["file"]))
        else:
            self._error(404, None, f"no route {path}")

    def _model_info(self, repo_id: str, rev: str | None) -> None:
        if (repo := self._repo(repo_id, rev)) is None:
            return
        body = {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": repo.private,
                "gated": "manual" if repo.gated else False,
                "siblings": [{"rfilename": name} for name in repo.files]}
        self._reply(200, json.dumps(body).encode())

    def _tree(self, repo_id: str, rev: str) -> None:
        if (repo := self._repo(repo_id, rev)) is None:
            return
        entries = []
        for name, data in repo.files.items():
            entry = {"type": "file", "path": name, "size": len(data), "oid": _git_oid(data)}
            if name.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": 134}
            entries.append(entry)
        self._reply(200, json.dumps(entries).encode())

    def _resolve(self, repo_id: str, rev: str, name: str) -> None:
        if (repo := self._repo(repo_id, rev)) is None:
            return
        data = repo.files.get(name)
        if data is None:
            self._error(404, "EntryNotFound", f"{name} does not exist")
            return
        lfs = name.endswith(LFS_SUFFIXES)
        etag = hashlib.sha256(data).hexdigest() if lfs else _git_oid(data)
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        start = 0
        if (rng := self.headers.get("Range")) and self.command == "GET":
            m = re.match(r"bytes=(\d+)-$", rng.strip())
            if m is None or int(m[1]) >= len(data):
                self._error(416, None, "Range Not Satisfiable")
                return
            start = int(m[1])
        body = data[start:]
        with self.owner.lock:
            times, fraction = self.owner.cuts.get(name, (0, 1.0))
            cut = self.command == "GET" and times > 0
            if cut:
                self.owner.cuts[name] = (times - 1, fraction)
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        for key, value in headers.items():
            self.send_header(key, value)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if cut:  # part of the promised bytes, then the connection goes away
            self.wfile.write(body[: int(len(body) * fraction)])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        pace = self.owner.pace.get(name)
        if pace is None:
            self.wfile.write(body)
            return
        for at in range(0, len(body), 1 << 20):
            self.wfile.write(body[at : at + (1 << 20)])
            self.wfile.flush()
            time.sleep(pace)


# -- what the tests share -------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CODA_SHARED") or REPO_ROOT.parent / "shared")
REFERENCE = SHARED / "fixtures" / "coda-reference-tiny"
needs_reference = pytest.mark.skipif(
    not (REFERENCE / "golden.json").is_file(),
    reason=f"reference fixture not found at {REFERENCE} (set CODA_SHARED; ../shared is absent)")


def hub_env(hub: FakeHub, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a process that uses ``hub`` as the Hub and ``home`` as HF_HOME."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HF_") and k not in ("HUGGING_FACE_HUB_TOKEN",)}
    return {**env, "HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def coda_lsp(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coda_lsp", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)
