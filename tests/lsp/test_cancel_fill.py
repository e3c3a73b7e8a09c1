"""``$/cancelRequest`` for the ``coda.fillHole`` command (VS Code's Cancel on the fill's
notification) stops the fill on the server between two steps and applies nothing. pygls runs
commands through a generator whose cancel alone left the fill running to its end."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from lsp_session import Recorder, capabilities, open_doc, server_env
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig

pytestmark = pytest.mark.asyncio(loop_scope="function")

SCRIPTED = Path(__file__).resolve().parents[1] / "scripted_coda.py"
HOLE_FILE = "def add(a, b):\n    ...\n"
HOLE = {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 7}}
STEPS = 40


async def record(log: Path, key: str, timeout: float = 60) -> dict:
    """The scripted model's first log record with ``key``: it writes the file as it runs
    (tests/scripted_coda.py), in another process, so this polls."""
    async def find() -> dict:
        while True:
            if log.exists():
                for line in log.read_text().splitlines():
                    if key in (found := json.loads(line)):
                        return found
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(find(), timeout)


async def test_cancel_request_stops_the_fill_hole_command_and_applies_nothing(
        tiny_model_dir, tmp_path):
    log = tmp_path / "script.jsonl"
    script = {"fills": [["return a + b", 0.9]], "step_s": 0.25}
    config = ClientServerConfig(
        server_command=[sys.executable, str(SCRIPTED), "--model", str(tiny_model_dir)],
        server_env={**server_env(), "CODA_SCRIPT": json.dumps(script),
                    "CODA_SCRIPT_LOG": str(log)})
    client = await config.start()
    client.recorder = Recorder(client)
    try:
        await client.initialize_session(types.InitializeParams(
            capabilities=capabilities("vscode"),
            initialization_options={"coda": {"fillHoleSteps": STEPS}}))
        await asyncio.wait_for(client.recorder.ready.wait(), 60)
        uri = open_doc(client, HOLE_FILE)
        params = types.ExecuteCommandParams(command="coda.fillHole",
                                            arguments=[{"uri": uri, "range": HOLE}])
        answer = asyncio.ensure_future(client.protocol.send_request_async(
            types.WORKSPACE_EXECUTE_COMMAND, params, msg_id=9001))
        await record(log, "started")
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=9001))
        stopped = await record(log, "stopped")
        assert stopped["stopped"] < stopped["steps"] == STEPS, stopped
        with pytest.raises(JsonRpcException):  # RequestCancelled
            await asyncio.wait_for(answer, 30)
        text = await client.protocol.send_request_async("coda/documentText", {"uri": uri})
        assert text.text == HOLE_FILE
        assert client.recorder.applied == [] and "finished" not in log.read_text()
    finally:
        await client.shutdown_session()
        await client.stop()
