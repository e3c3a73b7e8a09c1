"""Work-done progress for hole fills and for model loads (a Hub id's download in MB).

A hole fill takes seconds to minutes on a CPU. ``FillProgress`` sends ``$/progress`` on a token
the server creates (begin, a report as the percentage of denoising steps done moves, end), so
an editor can show that the fill is alive and how far it is, at most REPORTS_PER_S reports a
second (one per step swamped the event loop and the client on a busy machine, issue #30).
Each report's message also shows the fill sharpening ("step 5/12: return x + ░░"): the
candidate furthest along, masks as ``MASK_GLYPH``, on one line, so a slow fill is visibly
working. The progress is cancellable:
``window/workDoneProgress/cancel`` cancels the request's task, as ``$/cancelRequest`` does, and
the scheduler then stops the model. Clients without ``window.workDoneProgress`` get nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from lsprotocol import types

from coda_lsp.core.engine import MASK_GLYPH
from coda_lsp.core.models import download_message

log = logging.getLogger(__name__)

FILL_TITLE = "coda-lsp: filling the hole"
REPORTS_PER_S = 10
PREVIEW_CHARS = 60  # of the fill in a progress message: a notification's line
_tokens = itertools.count(1)


def sharpening(texts: list[str], width: int = PREVIEW_CHARS) -> str:
    """The candidate with the most decided characters, on one line, cut to ``width``."""
    best = max(texts, key=lambda t: len(t) - 2 * t.count(MASK_GLYPH), default="")
    line = " ".join(best.split())
    return line if len(line) <= width else line[: width - 1] + "\u2026"


class FillProgress:
    def __init__(self, ls: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.ls = ls
        self.clock = clock
        self.loop = asyncio.get_running_loop()
        self.token: str | None = None
        self.percentage = -1
        self.last_report = -1.0  # time.monotonic() of the last report sent

    async def begin(self) -> None:
        window = self.ls.client_capabilities.window
        if not (window and window.work_done_progress):
            return
        token = f"coda-fill-{next(_tokens)}"
        progress = self.ls.work_done_progress
        try:
            await progress.create_async(token)
        except Exception as exc:  # a client that refuses progress still gets its fill
            log.info("no progress for this fill: %s", exc)
            return
        self.token = token
        progress.begin(token, types.WorkDoneProgressBegin(
            title=FILL_TITLE, cancellable=True, percentage=0))
        task, cancelled = asyncio.current_task(), progress.tokens.get(token)
        if task is not None and cancelled is not None:
            cancelled.add_done_callback(lambda _: self.loop.call_soon_threadsafe(task.cancel))

    def on_step(self, step: int, steps: int) -> None:
        """Called by the model worker thread after each denoising step: a report when the
        percentage moved and 1/REPORTS_PER_S s went by (the last step always)."""
        self.on_partial(step, steps, [])

    def on_partial(self, step: int, steps: int, texts: list[str]) -> None:
        """``on_step`` with the candidates as they stand (``Engine.fill``'s on_partial)."""
        percentage = 100 * step // max(1, steps)
        if self.token is None or percentage == self.percentage:
            return
        now = self.clock()
        if step < steps and now - self.last_report < 1.0 / REPORTS_PER_S:
            return
        self.percentage, self.last_report = percentage, now
        message = f"step {step}/{steps}"
        if preview := sharpening(texts):
            message += f": {preview}"
        self.loop.call_soon_threadsafe(self._report, message, percentage)

    def _report(self, message: str, percentage: int) -> None:
        if self.token is not None:  # not after end (a late report from the worker)
            self.ls.work_done_progress.report(self.token, types.WorkDoneProgressReport(
                message=message, percentage=percentage))

    def end(self) -> None:
        if self.token is None:
            return
        token, self.token = self.token, None
        self.ls.work_done_progress.end(token, types.WorkDoneProgressEnd())
        self.ls.work_done_progress.tokens.pop(token, None)  # pygls keeps tokens otherwise


LOAD_TITLE = "coda-lsp: loading the model"
DOWNLOAD_REPORTS_PER_S = 4  # a download's bytes come in 10 MB pieces from several threads


class LoadProgress:
    """Work-done progress while models load (at start, or after a settings change): begin,
    a report as a Hub id's download moves (percent and MB, at most DOWNLOAD_REPORTS_PER_S a
    second, the last byte always; ``on_message`` too, for clients without progress) and
    when the weights load, end with the outcome. Not
    cancellable: a half-done download is kept by nobody (``coda_model.hub``)."""

    def __init__(self, ls: Any, title: str = LOAD_TITLE,
                 clock: Callable[[], float] = time.monotonic,
                 on_message: Callable[[str], None] = lambda message: None) -> None:
        self.ls = ls
        self.title = title
        self.on_message = on_message  # on the loop, with each report (the status line)
        self.clock = clock
        self.loop = asyncio.get_running_loop()
        self.token: str | None = None
        self.last_report = -1.0
        self.last_done = -1
        self._lock = threading.Lock()  # download threads report concurrently
        self.done = False

    async def begin(self, message: str | None = None) -> None:
        window = self.ls.client_capabilities.window
        if not (window and window.work_done_progress):
            return
        token = f"coda-load-{next(_tokens)}"
        try:
            await self.ls.work_done_progress.create_async(token)
        except Exception as exc:  # a client that refuses progress still gets its model
            log.info("no progress for this load: %s", exc)
            return
        self.token = token
        self.ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(
            title=self.title, cancellable=False, message=message))

    def loading(self, name: str) -> None:
        """On the event loop: the model named ``name`` starts to load (or download)."""
        self.last_done = -1
        self._report(f"loading {name}", None)

    def download(self, name: str, done: int, total: int | None) -> None:
        """From a download thread: the bytes so far; reports are capped, the end always goes."""
        with self._lock:
            if done <= self.last_done:  # no news (threads report the same count)
                return
            now = self.clock()
            if done != total and now - self.last_report < 1.0 / DOWNLOAD_REPORTS_PER_S:
                return
            self.last_report, self.last_done = now, done
        message, percentage = download_message(name, done, total)
        log.info("%s", message)
        self.loop.call_soon_threadsafe(self._report, message, percentage)
        if total and done >= total:  # the weights load next (tens of seconds for a 1.7B)
            self.loop.call_soon_threadsafe(
                self._report, f"loading {name} (downloaded {total / 1e6:.1f} MB)", 100)

    def _report(self, message: str, percentage: int | None) -> None:
        if self.done:  # not after end (a late report from a thread)
            return
        self.on_message(message)
        if self.token is not None:
            self.ls.work_done_progress.report(self.token, types.WorkDoneProgressReport(
                message=message, percentage=percentage))

    def end(self, message: str) -> None:
        self.done = True
        if self.token is None:
            return
        token, self.token = self.token, None
        self.ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        self.ls.work_done_progress.tokens.pop(token, None)

