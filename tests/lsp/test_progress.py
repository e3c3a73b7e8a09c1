"""FillProgress and LoadProgress: $/progress for hole fills and model loads, against a
recording stand-in for pygls' progress."""

import asyncio
import threading
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from lsprotocol import types

from coda_lsp.core.models import download_message
from coda_lsp.lsp import progress as progress_mod
from coda_lsp.lsp.progress import (
    FILL_TITLE,
    LOAD_TITLE,
    FillProgress,
    LoadProgress,
)


class RecordingProgress:
    """pygls' work_done_progress, recording what would go to the client."""

    def __init__(self, refuse: bool = False):
        self.sent, self.tokens, self.refuse = [], {}, refuse

    async def create_async(self, token):
        if self.refuse:
            raise RuntimeError("the client refused")
        self.tokens[token] = Future()

    def begin(self, token, value):
        self.sent.append((token, value))

    report = end = begin


def server(progress_capability=True, refuse=False):
    window = types.WindowClientCapabilities(work_done_progress=progress_capability)
    return SimpleNamespace(client_capabilities=types.ClientCapabilities(window=window),
                           work_done_progress=RecordingProgress(refuse))


def test_begin_reports_new_percentages_from_the_worker_at_most_ten_a_second_then_end():
    ls = server()
    now = iter([0.0, 0.05, 0.2, 0.25, 0.26, 0.27])  # when each moving step asks

    async def fill():
        progress = FillProgress(ls, clock=lambda: next(now))
        await progress.begin()
        steps = (1, 1, 2, 3, 4, 5, 8)  # 2: 50 ms after 1, too soon; 5: too soon; 8: the last
        worker = threading.Thread(target=lambda: [progress.on_step(s, 8) for s in steps])
        worker.start()
        worker.join()
        await asyncio.sleep(0)  # the reports were handed to the loop
        progress.end()
        return progress

    progress = asyncio.run(fill())
    values = [value for _, value in ls.work_done_progress.sent]
    assert [v.kind for v in values] == ["begin", "report", "report", "report", "end"]
    assert values[0].title == FILL_TITLE and values[0].cancellable
    assert [v.percentage for v in values[1:4]] == [12, 37, 100]
    assert values[3].message == "step 8/8"
    assert progress.token is None and ls.work_done_progress.tokens == {}


@pytest.mark.parametrize("ls", [server(progress_capability=False), server(refuse=True)])
def test_no_progress_without_the_client_capability_or_when_refused(ls):
    async def fill():
        progress = FillProgress(ls)
        await progress.begin()
        progress.on_step(1, 2)
        progress.end()
        return progress

    assert asyncio.run(fill()).token is None
    assert ls.work_done_progress.sent == []


def test_the_clients_cancel_cancels_the_fill():
    ls = server()

    async def fill():
        progress = FillProgress(ls)
        await progress.begin()
        ls.work_done_progress.tokens[progress.token].cancel()  # window/workDoneProgress/cancel
        await asyncio.sleep(10)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(asyncio.wait_for(fill(), 5))


def test_a_download_reports_percent_and_mb_at_most_four_a_second_and_always_the_end():
    ls = server()
    now = iter([0.0, 0.1, 0.3, 0.4, 0.5])  # when each growing count arrives
    total = 29_100_000

    async def load():
        progress = LoadProgress(ls, clock=lambda: next(now))
        await progress.begin()
        progress.loading("org/model")
        counts = (5_000_000, 6_000_000, 12_300_000, 12_300_000, 20_000_000, total)
        # 6.0 MB: 0.1 s after the first, too soon; the repeated 12.3 MB: no news (no clock
        # read); 20 MB at 0.4 s: too soon; the last byte goes out whatever the clock says
        threads = [threading.Thread(target=progress.download, args=("org/model", n, total))
                   for n in counts]
        for thread in threads:  # in order: the test is about the cap, not the interleaving
            thread.start()
            thread.join()
        await asyncio.sleep(0)
        progress.end("model ready")
        return progress

    progress = asyncio.run(load())
    values = [value for _, value in ls.work_done_progress.sent]
    assert [v.kind for v in values] == ["begin"] + ["report"] * 5 + ["end"]
    assert values[0].title == LOAD_TITLE and not values[0].cancellable
    assert [v.message for v in values[1:6]] == [
        "loading org/model",
        "downloading org/model: 17 % (5.0 / 29.1 MB)",
        "downloading org/model: 42 % (12.3 / 29.1 MB)",
        "downloading org/model: 100 % (29.1 / 29.1 MB)",
        "loading org/model (downloaded 29.1 MB)"]   # the weights load after the last byte
    assert [v.percentage for v in values[1:6]] == [None, 17, 42, 100, 100]
    assert values[-1].message == "model ready"
    assert progress.token is None and ls.work_done_progress.tokens == {}


def test_a_download_of_unknown_size_reports_mb_only():
    assert download_message("org/m", 3_456_000, None) == ("downloading org/m: 3.5 MB", None)
    assert download_message("org/m", 0, 0) == ("downloading org/m: 0.0 MB", None)


def test_reports_show_the_fill_sharpening():
    """A report's message carries the candidate furthest along, masks as glyphs, one line."""
    texts = ["re\u2591\u2591", "return a\n    + \u2591", "\u2591\u2591\u2591\u2591\u2591"]
    assert progress_mod.sharpening(texts) == "return a + \u2591"
    assert progress_mod.sharpening([]) == ""
    long = progress_mod.sharpening(["x" * 200])
    assert len(long) == progress_mod.PREVIEW_CHARS and long.endswith("\u2026")
