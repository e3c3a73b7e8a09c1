"""Helpers for the end-to-end tests: start a real ``coda-lsp`` with a client profile.

They wait on notifications, never on sleeps.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

PROFILES = {"vscode": "visual-studio-code", "neovim": "neovim@v0.11.0"}
TEST_SETTINGS = {"steps": 4, "confidenceThreshold": 0.0,
                 "automaticConfidenceThreshold": 0.0, "contextTokens": 256,
                 "maxMiddleTokens": 16, "fillHoleSteps": 4}


def server_command(model_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "coda_lsp", "--model", str(model_dir), *extra]


def server_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def capabilities(profile: str) -> types.ClientCapabilities:
    caps = client_capabilities(PROFILES[profile])
    # Both editors' plugins announce inline completion (VS Code >= 1.86, our Neovim plugin).
    caps.text_document.inline_completion = types.InlineCompletionClientCapabilities()
    return caps


class Recorder:
    """Server-to-client traffic the stock test client does not keep."""

    def __init__(self, client: LanguageClient) -> None:
        self.statuses: list[Any] = []
        self.status_times: list[float] = []  # loop.time() at arrival, one per status
        self.status_changed = asyncio.Event()
        self.applied: list[types.ApplyWorkspaceEditParams] = []
        self.ready = asyncio.Event()
        # window/showMessageRequest ("Fill anyway"?): recorded, answered with the action titled
        # ``answer`` (None: dismissed) once ``release`` is set
        self.asked: list[types.ShowMessageRequestParams] = []
        self.answer: str | None = None
        self.release = asyncio.Event()
        self.release.set()
        self.waiting = asyncio.Event()

        @client.feature("coda/status")
        def status(params):
            self.statuses.append(params)
            self.status_times.append(asyncio.get_running_loop().time())
            self.status_changed.set()
            if params.state in ("ready", "error"):
                self.ready.set()

        @client.feature(types.WINDOW_SHOW_MESSAGE_REQUEST)
        async def show_message_request(params: types.ShowMessageRequestParams):
            self.asked.append(params)
            self.waiting.set()
            await self.release.wait()
            return None if self.answer is None else types.MessageActionItem(title=self.answer)

        @client.feature(types.WORKSPACE_APPLY_EDIT)
        def apply_edit(params: types.ApplyWorkspaceEditParams):
            self.applied.append(params)
            return types.ApplyWorkspaceEditResult(applied=True)


async def start(model_dir: Path, profile: str, options: dict | None = None,
                initialize: bool = True) -> LanguageClient:
    # VS Code's client appends --stdio (TransportKind.stdio); Neovim passes nothing
    extra = ("--stdio",) if profile == "vscode" else ()
    config = ClientServerConfig(server_command=server_command(model_dir, *extra),
                                server_env=server_env())
    client = await config.start()
    client.recorder = Recorder(client)
    if initialize:
        await client.initialize_session(types.InitializeParams(
            capabilities=capabilities(profile),
            initialization_options={"coda": {**TEST_SETTINGS, **(options or {})}},
        ))
        await asyncio.wait_for(client.recorder.ready.wait(), 60)
    return client


_counter = iter(range(1_000_000))


def open_doc(client: LanguageClient, text: str, language_id: str = "python",
             suffix: str = ".py") -> str:
    uri = f"file:///work/doc{next(_counter)}{suffix}"
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language_id, version=1,
                                             text=text)))
    return uri


def inline_params(uri: str, line: int, character: int) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    )
