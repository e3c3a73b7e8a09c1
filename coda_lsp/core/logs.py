"""Logging for a stdio server: ``window/logMessage`` once connected, stderr before that.

Nothing may reach stdout in stdio mode (it carries the protocol). Editors show a server's
stderr as errors, so stderr carries only what happens before the client is connected
(startup, a bad flag); from ``initialize`` on, ``bridge`` sends the module loggers of
``coda_lsp`` and ``coda_model`` (and pygls' warnings) to the client's log with the message type
of their level, from any thread, by hopping onto the event loop. A ``--log-file`` keeps
everything. ``Stages`` times the stages of one request so every completion log line
carries its request id and where the time went. ``Warnings`` rate-limits what the user sees;
``Throttle`` rate-limits a notification whose latest value is all that matters.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcMethodNotFound,
    JsonRpcParseError,
    JsonRpcRequestCancelled,
    JsonRpcServerNotInitialized,
)

LOGGERS = ("coda_lsp", "coda_model")
_LEVELS = [
    (logging.ERROR, types.MessageType.Error),
    (logging.WARNING, types.MessageType.Warning),
    (logging.INFO, types.MessageType.Info),
    (logging.NOTSET, types.MessageType.Log),
]


class Console(logging.StreamHandler):
    """stderr, until the client's log takes over (``bridge`` removes it)."""


def setup(verbose: int = 0, log_file: str | None = None) -> None:
    """Send our loggers to stderr (or ``log_file``); never to stdout."""
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = Console(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(ClientMistakes())
    level = logging.DEBUG if verbose else logging.INFO
    pygls_level = logging.INFO if verbose > 1 else logging.WARNING
    for name in (*LOGGERS, "pygls"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(pygls_level if name == "pygls" else level)


_sending = threading.local()


def message_type(level: int) -> types.MessageType:
    return next(t for lvl, t in _LEVELS if level >= lvl)


class ClientLogHandler(logging.Handler):
    """Forwards records to the client as ``window/logMessage`` notifications."""

    def __init__(self, send: Callable[[types.LogMessageParams], None],
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.INFO)
        self._send = send
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            params = types.LogMessageParams(type=message_type(record.levelno),
                                            message=self.format(record))
            if threading.get_ident() == self._loop_thread:
                self._send_once(params)
            elif not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._send_once, params)
        except Exception:  # logging must never take the server down
            self.handleError(record)

    def _send_once(self, params: types.LogMessageParams) -> None:
        if getattr(_sending, "now", False):
            return  # a line logged while sending one (pygls: "Error sending data") stays here
        _sending.now = True
        try:
            self._send(params)
        finally:
            _sending.now = False


# Errors that are the client's mistake and that the client was answered with already.
_ANSWERED = {JsonRpcInvalidParams.CODE, JsonRpcInvalidRequest.CODE, JsonRpcMethodNotFound.CODE,
             JsonRpcParseError.CODE, JsonRpcServerNotInitialized.CODE, JsonRpcRequestCancelled.CODE}


class ClientMistakes(logging.Filter):
    """pygls logs a traceback at ERROR for a request it answered with InvalidParams (or for a
    body that was not JSON); in the editor's log that reads as a server failure. One warning
    line says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        answered = isinstance(error, JsonRpcException) and error.code in _ANSWERED
        unreadable = isinstance(error, ValueError | RecursionError)  # parse errors: answered
        unreadable = unreadable and record.name == "pygls.server"
        if answered or unreadable:
            record.msg, record.args = f"{record.getMessage()}: {error}", ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def bridge(send: Callable[[types.LogMessageParams], None], loop: asyncio.AbstractEventLoop,
           verbose: int = 0) -> ClientLogHandler:
    """From now on log to the client, not to stderr (a log file, if any, stays)."""
    handler = ClientLogHandler(send, loop)
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    pygls_handler = ClientLogHandler(send, loop)
    pygls_handler.setLevel(logging.WARNING)  # its INFO lines (-vv) trace every message sent
    pygls_handler.addFilter(ClientMistakes())
    for name, new in [*((name, handler) for name in LOGGERS), ("pygls", pygls_handler)]:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            keep_tracing = name == "pygls" and verbose > 1
            if isinstance(old, ClientLogHandler) or (isinstance(old, Console) and not keep_tracing):
                logger.removeHandler(old)  # a second initialize replaces the first bridge
        logger.addHandler(new)
    return handler


@dataclass
class Stages:
    """Milliseconds per named stage of one request, in order."""

    request_id: str
    _last: float = field(default_factory=time.perf_counter)
    _start: float = field(default_factory=time.perf_counter)
    times: dict[str, float] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.times[stage] = self.times.get(stage, 0.0) + (now - self._last) * 1e3
        self._last = now

    def add(self, timings: dict[str, float]) -> None:
        self.times.update(timings)

    def note(self, name: str, value: int) -> None:
        """A count printed after the timings, e.g. reused=363 (tokens)."""
        self.notes[name] = value

    @property
    def total_ms(self) -> float:
        return (time.perf_counter() - self._start) * 1e3

    def line(self, outcome: str, total_ms: float | None = None) -> str:
        total = self.total_ms if total_ms is None else total_ms
        parts = " ".join([f"{k}={v:.1f}ms" for k, v in self.times.items()]
                         + [f"{k}={v}" for k, v in self.notes.items()])
        return f"[{self.request_id}] {outcome} total={total:.1f}ms {parts}".rstrip()


WARNING_KEYS = 64  # keys remembered: a client that sends ever new bad settings grows nothing


@dataclass
class Warnings:
    """At most one message per key per ``interval`` seconds (a broken setup must not spam).
    Keys can carry client text (the settings problems), so at most ``max_keys`` are kept: the
    expired go first (forgetting them changes nothing), then the oldest."""

    interval: float = 60.0
    max_keys: int = WARNING_KEYS
    _shown: dict[str, float] = field(default_factory=dict)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._shown.get(key, -1e9) < self.interval:
            return False
        self._shown.pop(key, None)
        if len(self._shown) >= self.max_keys:
            self._shown = {k: t for k, t in self._shown.items() if now - t < self.interval}
            while len(self._shown) >= self.max_keys:  # insertion order: the oldest first
                del self._shown[next(iter(self._shown))]
        self._shown[key] = now
        return True


class Throttle:
    """Runs ``send()`` at most once per ``interval`` seconds; the latest state wins.

    ``soon()`` never sends by itself: it schedules one send on the running event loop (the
    sender reads the current state when it fires), so the request that triggered it pays for
    one timer, and its response goes out first. ``now()`` sends at once and restarts the
    interval. Both must be called on the event loop thread.
    """

    def __init__(self, send: Callable[[], None], interval: float = 1.0) -> None:
        self._send = send
        self.interval = interval
        self._last = -math.inf  # loop.time() of the last send
        self._pending: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        if self._pending is not None:
            return  # the scheduled send will carry the newer state
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last + self.interval - loop.time())
        self._pending = loop.call_later(delay, self._fire, loop)

    def now(self) -> None:
        self.cancel()
        self._fire(asyncio.get_running_loop())

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._pending = None
        self._last = loop.time()
        self._send()
