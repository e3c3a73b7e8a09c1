"""The remote engine end to end: a real ``coda-lsp`` (pytest-lsp) whose fill role, or typing
role, runs on a real ``coda-lsp http`` subprocess.

The checkpoints write one word over and over (testkit.build_saying_checkpoint): the remote
serves the "print" model, the language server's local model is the "items" one, so every
answer says which side wrote it. Nothing of the HTTP layer is mocked.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
from pathlib import Path

import pytest
import pytest_asyncio
from lsp_session import TEST_SETTINGS, Recorder, capabilities, open_doc, server_env
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.protocol import JsonRPCProtocol
from pytest_lsp import ClientServerConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))
from http_kit import API_KEY, Server  # noqa: E402 -- the HTTP tests' real server process
from http_kit import env as http_env  # noqa: E402

SCRIPTED = Path(__file__).resolve().parents[1] / "scripted_coda.py"

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = "def add(a, b):\n    return \n\n\ndef sub(a, b):\n    ...\n"
LOCAL_WORD, REMOTE_WORD = "items", "print"
HOLE = types.Range(start=types.Position(line=5, character=4),
                   end=types.Position(line=5, character=7))


@pytest.fixture(scope="module")
def remote(saying_models):
    server = Server(saying_models[REMOTE_WORD], "-v")  # -v: the log says when a fill starts
    yield server
    server.stop()


def free_port() -> int:
    """A port nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start(saying_models, *flags: str, options: dict | None = None):
    command = [sys.executable, "-m", "coda_lsp", "--model", str(saying_models[LOCAL_WORD]),
               "--device", "cpu", *flags, "--stdio"]
    env = {k: v for k, v in server_env().items() if k != "CODA_LSP_API_KEY"}
    client = await ClientServerConfig(server_command=command, server_env=env).start()
    client.recorder = Recorder(client)
    await client.initialize_session(types.InitializeParams(
        capabilities=capabilities("vscode"),
        initialization_options={"coda": {**TEST_SETTINGS, **(options or {})}}))
    await asyncio.wait_for(client.recorder.ready.wait(), 60)
    return client


async def stop(client) -> None:
    await client.shutdown_session()
    await client.stop()


def typing_params(uri: str) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=1, character=11),
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Automatic))


async def typed(client, uri: str) -> str:
    result = await client.text_document_inline_completion_async(typing_params(uri))
    assert result is not None and result.items, "no ghost text"
    return result.items[0].insert_text


def fill_args(uri: str) -> list:
    return [{"uri": uri, "range": {"start": {"line": 5, "character": 4},
                                   "end": {"line": 5, "character": 7}},
             "acceptRejected": True}]  # which model wrote it, whatever the contract says


async def wait_until(predicate, timeout: float = 30) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


def cancelled_count(remote: Server) -> float:
    _, text = remote.request("GET", "/metrics")
    found = re.search(r'coda_fills_total\{endpoint="infill",outcome="cancelled"\} ([0-9.]+)',
                      text)
    return float(found.group(1)) if found else 0.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(remote, saying_models):
    client = await start(saying_models, "--remote", remote.base_url, "--api-key", API_KEY)
    yield client
    await stop(client)


async def test_a_hole_fill_runs_on_the_remote_and_typing_stays_local(client, remote):
    uri = open_doc(client, CODE)
    mark, tokens = len(remote.lines), set(client.progress_reports)
    applied = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="coda.fillHole", arguments=fill_args(uri)))
    assert applied is True
    # the remote streamed its denoising steps: the progress shows the fill sharpening
    reports = [v.message for t in client.progress_reports if t not in tokens
               for v in client.progress_reports[t] if isinstance(v, types.WorkDoneProgressReport)]
    assert reports and reports[-1].startswith("step 4/4: ") and REMOTE_WORD in reports[-1]
    edit = client.recorder.applied[-1].edit
    text = (edit.document_changes or [])[0].edits[0].new_text if edit.document_changes else \
        next(iter(edit.changes.values()))[0].new_text
    assert REMOTE_WORD in text and LOCAL_WORD not in text
    remote.wait_for("[infill-", start=mark)  # the remote logged the span request it served
    assert LOCAL_WORD in await typed(client, uri)  # ghost text: the local model
    models = client.recorder.statuses[-1].models
    fill = models["fill"] if isinstance(models, dict) else models.fill
    device = fill["device"] if isinstance(fill, dict) else fill.device
    assert device == f"remote {remote.base_url}"


async def test_cancelling_a_fill_hangs_up_and_the_remote_stops_it(client, remote):
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": {**TEST_SETTINGS, "fillHoleSteps": 4096, "maxMiddleTokens": 64}}))
    uri = open_doc(client, CODE)
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=HOLE,
        context=types.CodeActionContext(diagnostics=[])))
    mark, before = len(remote.lines), cancelled_count(remote)
    # pygls' plain send_request writes at once (pytest-lsp's async wrapper would wait)
    fut = JsonRPCProtocol.send_request(client.protocol, types.CODE_ACTION_RESOLVE, actions[0],
                                       msg_id="remote-cancel")
    await asyncio.to_thread(remote.wait_for, "running", 60, mark)  # the remote is filling
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="remote-cancel"))
    with pytest.raises(JsonRpcException) as info:
        await asyncio.wrap_future(fut)
    assert info.value.code == -32800  # RequestCancelled
    line = await asyncio.to_thread(remote.wait_for, "stopped after", 60, mark)
    steps = re.search(r"stopped after (\d+) of (\d+) denoising steps", line)
    assert steps is not None and int(steps.group(1)) < int(steps.group(2)) == 4096
    await wait_until(lambda: cancelled_count(remote) == before + 1)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": TEST_SETTINGS}))


async def test_typing_falls_back_to_the_local_model_while_the_remote_is_down(saying_models):
    down = f"http://127.0.0.1:{free_port()}"
    client = await start(saying_models, "--typing-remote", down)
    try:
        uri = open_doc(client, CODE)
        for _ in range(3):  # every keystroke answered, locally
            assert LOCAL_WORD in await typed(client, uri)
        lines = [m.message for m in client.messages if down in m.message]
        assert lines == [f"coda-lsp: cannot reach the remote {down}: connection refused (is "
                         "coda-lsp http running there?); typing uses the local model until "
                         "it answers"]
        models = client.recorder.statuses[-1].models
        typing = models["typing"] if isinstance(models, dict) else models.typing
        assert (typing["device"] if isinstance(typing, dict) else typing.device) == \
            f"remote {down}"
    finally:
        await stop(client)


async def test_typing_runs_on_the_remote_when_it_is_up(saying_models, remote):
    client = await start(saying_models, "--typing-remote", remote.base_url,
                         "--api-key", API_KEY)
    try:
        uri = open_doc(client, CODE)
        assert REMOTE_WORD in await typed(client, uri)
        assert [m.message for m in client.messages if remote.base_url in m.message] == []
    finally:
        await stop(client)


async def test_a_wrong_api_key_is_one_line(saying_models, remote):
    client = await start(saying_models, "--remote", remote.base_url, "--api-key", "wrong")
    try:
        uri = open_doc(client, CODE)
        for _ in range(2):
            applied = await client.workspace_execute_command_async(types.ExecuteCommandParams(
                command="coda.fillHole", arguments=fill_args(uri)))
            assert applied is False
        lines = [m.message for m in client.messages if remote.base_url in m.message]
        assert lines == [f"coda-lsp: the remote {remote.base_url} refused the API key (401): "
                         "check --api-key / $CODA_LSP_API_KEY against the remote's"]
        logged = " ".join(m.message for m in client.log_messages)
        assert "wrong" not in re.sub(r"\bwrong (API )?key\b", "", logged)  # never logged
    finally:
        await stop(client)


async def test_a_cancelled_keystroke_hangs_up_its_plain_request_too(saying_models):
    """Typing's requests are not streamed: the hang-up still reaches the remote's fill. The
    remote is a scripted slow model (tests/scripted_coda.py, 20 ms a step), so the fill is
    still running when the hang-up arrives however fast the machine is."""
    script = json.dumps({"fills": [[REMOTE_WORD, 0.9]], "step_s": 0.02})
    remote = Server(saying_models[REMOTE_WORD], "-v", environ={**http_env(), "CODA_SCRIPT": script},
                    program=(sys.executable, str(SCRIPTED)))
    client = await start(saying_models, "--typing-remote", remote.base_url, "--api-key",
                         API_KEY, options={"steps": 1024, "maxMiddleTokens": 64})
    try:
        uri = open_doc(client, CODE)
        mark, before = len(remote.lines), cancelled_count(remote)
        fut = JsonRPCProtocol.send_request(client.protocol,
                                           types.TEXT_DOCUMENT_INLINE_COMPLETION,
                                           typing_params(uri), msg_id="typing-cancel")
        await asyncio.to_thread(remote.wait_for, "running", 60, mark)
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="typing-cancel"))
        with pytest.raises(JsonRpcException) as info:
            await asyncio.wrap_future(fut)
        assert info.value.code == -32800  # RequestCancelled
        line = await asyncio.to_thread(remote.wait_for, "stopped after", 60, mark)
        assert "of 1024 denoising steps" in line
        await wait_until(lambda: cancelled_count(remote) == before + 1)
    finally:
        await stop(client)
        remote.stop()


async def test_typing_goes_back_to_the_remote_once_it_answers(saying_models):
    port = free_port()
    client = await start(saying_models, "--typing-remote", f"http://127.0.0.1:{port}",
                         "--api-key", API_KEY)
    late = None
    try:
        uri = open_doc(client, CODE)
        assert LOCAL_WORD in await typed(client, uri)  # down: local
        late = await asyncio.to_thread(Server, saying_models[REMOTE_WORD], "--port", str(port))
        words = []

        async def remote_answers():  # typing asks the remote again RETRY_DOWN_S after a failure
            while not words or REMOTE_WORD not in words[-1]:
                words.append(await typed(client, uri))
                await asyncio.sleep(0.2)

        await asyncio.wait_for(remote_answers(), 60)
        assert all(LOCAL_WORD in w for w in words[:-1])  # local until the remote answered
        assert any("answers again" in m.message for m in client.log_messages)
    finally:
        await stop(client)
        if late is not None:
            late.stop()
