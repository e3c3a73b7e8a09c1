"""Work-done progress for hole fills.

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
import time
from collections.abc import Callable
from typing import Any

from lsprotocol import types

from coda_lsp.core.engine import MASK_GLYPH

log = logging.getLogger(__name__)

FILL_TITLE = "coda: filling the hole"
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
