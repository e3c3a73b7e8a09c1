"""A Hub id downloads inside the language server with ``$/progress`` in percent and MB: at
start, and after a settings change names one. The real huggingface_hub client fetches the
tiny reference checkpoint from tests/hubkit.py's local Hub, slowed so the progress shows."""

from __future__ import annotations

import asyncio
import fnmatch
import re
import sys

import pytest
from hubkit import REFERENCE, FakeHub, hub_env, needs_reference
from lsp_session import TEST_SETTINGS, Recorder, capabilities
from lsprotocol import types
from pytest_lsp import ClientServerConfig

from coda_model.hub import ALLOW_PATTERNS

pytestmark = [pytest.mark.asyncio(loop_scope="function"), needs_reference]

REPO = "org/tiny-reference"
DOWNLOAD = re.compile(r"^downloading org/tiny-reference: (\d+) % \(([\d.]+) / ([\d.]+) MB\)$")


def fetched_mb() -> str:
    """The size of what the download fetches (the allow-listed files), as the report says."""
    size = sum(p.stat().st_size for p in REFERENCE.iterdir()
               if any(fnmatch.fnmatch(p.name, pat) for pat in ALLOW_PATTERNS))
    return f"{size / 1e6:.1f}"


async def start(hub: FakeHub, home, *args: str):
    command = [sys.executable, "-m", "coda_lsp", *args, "--device", "cpu", "--stdio"]
    client = await ClientServerConfig(server_command=command,
                                      server_env=hub_env(hub, home)).start()
    client.recorder = Recorder(client)
    await client.initialize_session(types.InitializeParams(
        capabilities=capabilities("vscode"), initialization_options={"coda": TEST_SETTINGS}))
    await asyncio.wait_for(client.recorder.ready.wait(), 120)
    return client


async def wait_for_status(recorder: Recorder, predicate, timeout: float = 120) -> None:
    async def wait() -> None:
        while not any(predicate(s) for s in recorder.statuses):
            recorder.status_changed.clear()
            await recorder.status_changed.wait()

    await asyncio.wait_for(wait(), timeout)


def downloads(reports) -> list[tuple[int, str, str, int | None]]:
    """(percent in the message, MB done, MB in all, the report's percentage field)."""
    out = []
    for value in reports:
        if isinstance(value, types.WorkDoneProgressReport) and value.message:
            m = DOWNLOAD.match(value.message)
            if m:
                out.append((int(m[1]), m[2], m[3], value.percentage))
    return out


def check_download(reports) -> None:
    assert isinstance(reports[0], types.WorkDoneProgressBegin)
    assert isinstance(reports[-1], types.WorkDoneProgressEnd)
    seen = downloads(reports)
    assert seen, [getattr(v, "message", None) for v in reports]
    assert all(total == fetched_mb() for _, _, total, _ in seen)
    assert all(pct == field for pct, _, _, field in seen)  # the bar and the text agree
    percents = [pct for pct, *_ in seen]
    assert percents == sorted(percents) and percents[-1] == 100
    assert any(0 < pct < 100 for pct in percents)  # seen while it was under way
    assert seen[-1][1] == seen[-1][2]


async def test_a_hub_id_at_start_downloads_with_progress_then_serves(tmp_path):
    with FakeHub() as hub:
        hub.add(REPO, REFERENCE)
        hub.slow("model.safetensors", 0.2)  # ~4 s for its 19.5 MB: a report mid-way
        client = await start(hub, tmp_path / "hf", "--model", REPO)
        try:
            assert client.recorder.statuses[-1].state == "ready"
            [reports] = [r for r in client.progress_reports.values()
                         if isinstance(r[0], types.WorkDoneProgressBegin)
                         and r[0].title == "coda-lsp: loading the model"]
            check_download(reports)
            assert reports[-1].message == "model ready"
            messages = [getattr(v, "message", None) for v in reports]
            assert messages.index(f"loading the typing model {REPO}") < min(
                i for i, m in enumerate(messages) if m and DOWNLOAD.match(m))
            # the status line says it too (what the editors' status items show)
            said = [s.message for s in client.recorder.statuses if s.state == "loading"]
            assert [m for m in said if DOWNLOAD.match(m)] == [
                m for m in messages if m and DOWNLOAD.match(m)]
        finally:
            await client.shutdown_session()
            await client.stop()


async def test_a_settings_change_to_a_hub_id_downloads_with_progress(tmp_path, tiny_model_dir):
    with FakeHub() as hub:
        hub.add(REPO, REFERENCE)
        hub.slow("model.safetensors", 0.2)
        client = await start(hub, tmp_path / "hf", "--model", str(tiny_model_dir))
        try:
            before = set(client.progress_reports)
            client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
                settings={"coda": {**TEST_SETTINGS, "fillModel": REPO}}))
            await wait_for_status(client.recorder, lambda s: s.message.startswith(
                "model ready: ") and "tiny-reference" in s.message)  # after the progress end
            [reports] = [client.progress_reports[t] for t in client.progress_reports
                         if t not in before]
            assert reports[0].title == f"coda-lsp: loading the fill model {REPO}"
            check_download(reports)
            assert reports[-1].message == "fill model tiny-reference ready"
        finally:
            await client.shutdown_session()
            await client.stop()
