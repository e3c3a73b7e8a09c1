"""The remote engine: ``Engine.fill`` answered by a ``coda-lsp http`` on another machine.

For a user whose GPU is elsewhere. The language server keeps the document, the span, the
ranking and the fill contract; the remote only runs the model. Each job is one span request
to the remote's llama.cpp-style ``/infill`` (the job's ``lengths``, steps, flags and sampler
settings: the fills the local engine would write), answered with every candidate and its
confidence. A hole fill streams the remote's denoising steps, so progress still moves.

Cancellation crosses the wire: when the job's stop flag rises (a newer request for the
document, ``$/cancelRequest``) the connection is hung up, and the remote stops that fill at
its next denoising step. A remote that cannot be reached or refuses the request is a
``RemoteError`` in one line; typing jobs (``fast``) go to a local model instead while the
remote is down, so ghost text keeps coming. The standard library's ``http.client`` is
enough: one request at a time per model worker, nothing to pool.
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from coda_lsp.core import positions
from coda_lsp.core.engine import Cancelled, Engine, Fill, FillJob, FillResult
from coda_lsp.core.settings import API_KEY_ENV, remote_url

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0  # a remote that does not accept a connection by then is down
READ_TIMEOUT_S = 600.0  # a long hole fill behind a queue on a busy remote
POLL_S = 0.05  # how often the worker looks at the stop flag while the remote works
RETRY_DOWN_S = 10.0  # after a failure, typing stays local this long before asking again


class RemoteError(Exception):
    """The remote cannot serve this fill, in one line that names it and the cause."""


def check_url(url: str) -> str:
    """The URL without a trailing slash; RemoteError when it is no http(s)://HOST[:PORT]."""
    try:
        return remote_url(url)
    except ValueError as exc:
        raise RemoteError(f"a remote must be {exc}") from None


class RemoteEngine:
    """``fill`` like ``Engine.fill``, on a remote ``coda-lsp http``; runs on a model worker."""

    def __init__(self, url: str, api_key: str | None = None,
                 fallback: Callable[[], Engine] | None = None) -> None:
        self.url = check_url(url)
        parts = urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname or "", parts.port
        self._path = parts.path
        self._api_key = api_key  # sent as Authorization: Bearer, never logged
        self.device = f"remote {self.url}"  # what status lines, /health, :checkhealth show
        self.model_name: str | None = None  # the remote's model, once it has answered
        self.dtype_name = "remote"
        self.client = uuid.uuid4().hex[:12]  # X-Coda-Client prefix: this server's requests
        self._load_fallback = fallback  # typing's local model while the remote is down
        self._fallback: Engine | None = None
        self._lock = threading.Lock()
        self._down_until = 0.0  # monotonic; 0 while the remote answers
        self._told = False  # the user heard about this episode
        self._reason = ""  # why the remote is down
        self._notices: list[str] = []

    @classmethod
    def connect(cls, url: str, api_key: str | None = None,
                fallback: Callable[[], Engine] | None = None) -> RemoteEngine:
        """An engine for the remote, its model and dtype read from ``/health``. A remote that
        is down now is no load error (it may come up): it is noticed, and typing falls back."""
        engine = cls(url, api_key, fallback)
        try:
            engine.probe()
        except RemoteError as exc:
            engine.went_down(str(exc))
        return engine

    def probe(self) -> None:
        """Read ``/health`` (which model, which dtype) and check the key on ``/v1/models``."""
        status, body = self._get("/health")
        if status == 503 and isinstance(body, dict) and body.get("status") == "loading":
            raise RemoteError(f"the remote {self.url} is still loading its model ("
                              f"{body.get('message') or 'no percent yet'})")
        models = body.get("models") if isinstance(body, dict) else None
        if status != 200 or not isinstance(models, dict) or not models:
            raise RemoteError(f"{self.url} is not a coda-lsp http server (/health: {status})")
        served = next(iter(models.values()))
        served = served if isinstance(served, dict) else {}
        self.model_name = str(served.get("model", "remote"))
        self.dtype_name = str(served.get("dtype", "remote"))
        status, body = self._get("/v1/models")
        if status != 200:
            raise self._refusal(status, body)
        log.info("remote %s serves %s on its %s (%s)", self.url, self.model_name,
                 served.get("device", "?"), self.dtype_name)

    # -- what the language server reads -------------------------------------------------------

    def take_notices(self) -> list[str]:
        """Lines for the user since the last call: the remote went down or refused (once per
        episode, not per request)."""
        with self._lock:
            out, self._notices = self._notices, []
        return out

    def went_down(self, reason: str, tell: bool = True) -> None:
        """Typing stays local for a while; ``tell``: the user hears it (once per episode:
        a failure the caller reports itself, a fill's, is not told twice)."""
        with self._lock:
            self._down_until = time.monotonic() + RETRY_DOWN_S
            self._reason = reason
        if tell:
            self._tell()
        log.warning("%s", reason)

    def _tell(self) -> None:
        with self._lock:
            if not self._told:
                self._told = True
                fallback = "; typing uses the local model until it answers" \
                    if self._load_fallback else ""
                self._notices.append(self._reason + fallback)

    def _came_back(self) -> None:
        with self._lock:
            was_down, self._down_until, self._told = self._down_until != 0.0, 0.0, False
        if was_down:
            log.info("remote %s answers again", self.url)
            if self.model_name is None:  # down since the start: which model it is, now
                try:
                    self.probe()
                except RemoteError as exc:
                    log.warning("%s", exc)

    # -- filling ------------------------------------------------------------------------------

    def fill(self, job: FillJob, should_stop: Callable[[], bool] | None = None,
             on_step: Callable[[int, int], None] | None = None,
             on_partial: Callable[[int, int, list[str]], None] | None = None) -> FillResult:
        """The remote's fills for the job; a typing job falls back to the local model while
        the remote is down. Raises Cancelled when told to stop, RemoteError when it fails."""
        local = job.fast and self._load_fallback is not None
        if local and time.monotonic() < self._down_until:
            self._tell()
            return self._local(job, should_stop, on_step, on_partial)
        try:
            result = self._remote(job, should_stop or (lambda: False), on_step, on_partial)
        except RemoteError as exc:
            self.went_down(str(exc), tell=local)  # else the caller says it, with the error
            if local:
                return self._local(job, should_stop, on_step, on_partial)
            raise
        self._came_back()
        return result

    def forget(self, key: str) -> None:
        """A closed document's carry in the local fallback (the remote bounds its own)."""
        if self._fallback is not None:
            self._fallback.forget(key)

    def _local(self, job: FillJob, should_stop, on_step, on_partial) -> FillResult:
        with self._lock:
            if self._fallback is None:
                assert self._load_fallback is not None
                try:
                    self._fallback = self._load_fallback()
                except Exception as exc:  # the local model is broken too: say both
                    raise RemoteError(f"{self.url} is down and the local model did not "
                                      f"load: {exc}") from exc
            engine = self._fallback
        return engine.fill(job, should_stop, on_step, on_partial)

    def request_body(self, job: FillJob, stream: bool) -> dict[str, Any]:
        """The span request: ``/infill`` with the job's lengths, flags and settings."""
        s = job.settings
        body: dict[str, Any] = {
            "input_prefix": positions.for_model(job.prefix),
            "input_suffix": positions.for_model(job.suffix),
            "lengths": list(job.span_lengths),
            "steps": job.steps, "alg": s.alg, "temperature": s.temperature,
            "fast": job.fast, "inline": job.inline,
            "settings": {"algTemp": s.alg_temp, "contextTokens": s.context_tokens,
                         "maxMiddleTokens": s.max_middle_tokens,
                         "fillHoleExact": s.fill_hole_exact, "multiline": s.multiline},
        }
        if job.seed is not None:
            body["seed"] = job.seed
        if job.choices > 1:  # an invoked completion's alternatives: two typing lengths
            body["choices"] = job.choices
        if stream:  # one event per denoising step: progress, and the candidates so far
            body.update(stream=True, stream_states=True)
        return body

    def _headers(self, job: FillJob | None = None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        # the document's key: the remote carries its context as the local engine would (a
        # typing job without one carries none there either); newest wins on the remote too
        if job is not None and (job.carry_key or not job.fast):
            headers["X-Coda-Client"] = f"{self.client}:{job.carry_key or 'fill'}"
        return headers

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=timeout)

    def _remote(self, job: FillJob, should_stop: Callable[[], bool], on_step,
                on_partial) -> FillResult:
        """One span request, read on a thread of its own while this (the worker) thread
        watches the stop flag: a stop hangs up the connection, which the remote sees."""
        start = time.perf_counter()
        stream = on_step is not None or on_partial is not None
        data = json.dumps(self.request_body(job, stream)).encode("utf-8")
        conn = self._connection(CONNECT_TIMEOUT_S)
        events: queue.SimpleQueue = queue.SimpleQueue()
        hung_up = threading.Event()

        def talk() -> None:
            try:
                conn.connect()
                if hung_up.is_set():  # stopped while connecting: send nothing
                    return
                conn.sock.settimeout(READ_TIMEOUT_S)
                conn.request("POST", self._path + "/infill", data, self._headers(job))
                response = conn.getresponse()
                if not stream or response.status != 200:
                    events.put(("answer", response.status, _json(response.read())))
                    return
                for line in response:
                    if line.startswith(b"data: "):
                        event = _json(line[6:])
                        kind = "state" if isinstance(event, dict) and "state" in event else \
                            "answer" if _final(event) else None
                        if kind is not None:
                            events.put((kind, 200, event))
                events.put(("answer", 200, None))  # the stream ended without an answer
            except BaseException as exc:  # connection refused, reset, timeout: the worker says
                events.put(("error", 0, exc))

        reader = threading.Thread(target=talk, name="coda-remote", daemon=True)
        reader.start()
        try:
            while True:
                if should_stop():
                    raise Cancelled("stopped: hung up on the remote")
                try:
                    kind, status, payload = events.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if kind == "state":
                    state = payload["state"]
                    if on_step is not None:
                        on_step(state["step"], state["steps"])
                    if on_partial is not None:
                        on_partial(state["step"], state["steps"], state["candidates"])
                    continue
                if kind == "error":
                    if should_stop():
                        raise Cancelled("stopped: hung up on the remote")
                    raise RemoteError(self._unreachable(payload)) from payload
                return self._result(job, status, payload, start)
        finally:
            hung_up.set()
            _hang_up(conn)

    def _result(self, job: FillJob, status: int, body: Any, start: float) -> FillResult:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            status = body["error"].get("code", status) if status == 200 else status
        if status == 409:  # a newer request of ours replaced it on the remote
            raise Cancelled("superseded on the remote")
        if status != 200:
            raise self._refusal(status, body)
        try:
            fills = [Fill(c["text"], float(c["confidence"]), int(c["length"]))
                     for c in body["candidates"]]
            timings = body.get("timings", {})
            prompt_ms, model_ms = float(timings["prompt_ms"]), float(timings["predicted_ms"])
            prompt_tokens = int(body.get("tokens_evaluated", 0))
        except (KeyError, TypeError, ValueError):
            raise RemoteError(f"{self.url} answered without candidates: is it coda-lsp http, "
                              "and as new as this one?") from None
        if job.line_ending != "\n":  # the remote tidied with "\n" (it never saw the file)
            fills = [Fill(f.text.replace("\n", job.line_ending), f.confidence, f.length)
                     for f in fills]
        wall_ms = (time.perf_counter() - start) * 1e3
        timings = {"prompt": prompt_ms, "model": model_ms,
                   "network": max(0.0, wall_ms - prompt_ms - model_ms)}
        return FillResult(fills, timings, 0, prompt_tokens)

    def _refusal(self, status: int, body: Any) -> RemoteError:
        message = ""
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = str(body["error"].get("message", ""))
        if status == 401:
            fix = "pass --api-key or set $" + API_KEY_ENV if not self._api_key else \
                "check --api-key / $" + API_KEY_ENV + " against the remote's"
            return RemoteError(f"the remote {self.url} refused the API key (401): {fix}")
        if status == 400:
            return RemoteError(f"the remote {self.url} cannot take this request ({message}): "
                               "update coda-lsp there")
        if status == 503:  # its queue is full, it is stopping, or its model still loads
            return RemoteError(f"the remote {self.url} cannot fill now (503: {message})")
        return RemoteError(f"the remote {self.url} answered {status}"
                           + (f": {message}" if message else ""))

    def _unreachable(self, exc: BaseException) -> str:
        if isinstance(exc, ConnectionRefusedError):
            why = "connection refused (is coda-lsp http running there?)"
        elif isinstance(exc, socket.gaierror):
            why = f"unknown host {self._host}"
        elif isinstance(exc, TimeoutError):
            why = "no answer in time"
        elif isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError):
            why = "the connection was dropped"
        else:
            why = str(exc).strip() or type(exc).__name__
        return f"cannot reach the remote {self.url}: {why}"

    def _get(self, path: str) -> tuple[int, Any]:
        conn = self._connection(CONNECT_TIMEOUT_S)
        try:
            conn.request("GET", self._path + path, headers=self._headers())
            response = conn.getresponse()
            return response.status, _json(response.read())
        except (OSError, http.client.HTTPException) as exc:
            raise RemoteError(self._unreachable(exc)) from exc
        finally:
            conn.close()


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _final(event: Any) -> bool:
    """The stream's last event: the answer (``stop``) or an error."""
    return isinstance(event, dict) and (event.get("stop") is True or "error" in event)


def _hang_up(conn: http.client.HTTPConnection) -> None:
    """Close the connection under a reader blocked on it (shutdown wakes the read)."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    conn.close()


__all__ = ["RemoteEngine", "RemoteError", "check_url"]
