"""Work-done progress for hole fills.

A hole fill takes seconds to minutes on a CPU. ``FillProgress`` sends ``$/progress`` on a token
the server creates (begin, a report as the percentage of denoising steps done moves, end), so
an editor can show that the fill is alive and how far it is. The progress is cancellable:
``window/workDoneProgress/cancel`` cancels the request's task, as ``$/cancelRequest`` does, and
the scheduler then stops the model. Clients without ``window.workDoneProgress`` get nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from lsprotocol import types

log = logging.getLogger(__name__)

FILL_TITLE = "coda: filling the hole"
_tokens = itertools.count(1)


class FillProgress:
    def __init__(self, ls: Any) -> None:
        self.ls = ls
        self.loop = asyncio.get_running_loop()
        self.token: str | None = None
        self.percentage = -1

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
        """Called by the model worker thread after each denoising step."""
        percentage = 100 * step // max(1, steps)
        if self.token is not None and percentage != self.percentage:
            self.percentage = percentage
            self.loop.call_soon_threadsafe(self._report, step, steps, percentage)

    def _report(self, step: int, steps: int, percentage: int) -> None:
        if self.token is not None:  # not after end (a late report from the worker)
            self.ls.work_done_progress.report(self.token, types.WorkDoneProgressReport(
                message=f"step {step}/{steps}", percentage=percentage))

    def end(self) -> None:
        if self.token is None:
            return
        token, self.token = self.token, None
        self.ls.work_done_progress.end(token, types.WorkDoneProgressEnd())
        self.ls.work_done_progress.tokens.pop(token, None)  # pygls keeps tokens otherwise
