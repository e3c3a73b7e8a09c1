"""Startup edges through the real subprocess: before initialize, progress, a corrupt model."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from lsp_session import capabilities, inline_params, open_doc, start
from lsprotocol import types
from pygls.exceptions import JsonRpcException

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_requests_before_initialize_get_an_error(tiny_model_dir):
    client = await start(tiny_model_dir, "vscode", initialize=False)
    client.capabilities = capabilities("vscode")  # lets pytest-lsp send; the server knows none
    with pytest.raises(JsonRpcException) as info:
        await client.text_document_inline_completion_async(
            inline_params("file:///x.py", 0, 0))
    assert info.value.code == -32002  # ServerNotInitialized
    await client.initialize_session(types.InitializeParams(capabilities=capabilities("vscode")))
    await asyncio.wait_for(client.recorder.ready.wait(), 60)
    await client.shutdown_session()
    await client.stop()


async def test_loading_reports_progress_and_status(tiny_model_dir):
    client = await start(tiny_model_dir, "neovim")
    states = [s.state for s in client.recorder.statuses]
    assert states[0] == "loading" and states[-1] == "ready"
    kinds = [type(v).__name__ for reports in client.progress_reports.values() for v in reports]
    assert kinds == ["WorkDoneProgressBegin", "WorkDoneProgressReport",  # "loading tiny"
                     "WorkDoneProgressEnd"]
    await client.shutdown_session()
    await client.stop()


async def test_corrupt_weights_mean_error_status_and_empty_results(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    client = await start(broken, "vscode")
    assert client.recorder.statuses[-1].state == "error"
    assert any("cannot load the model" in m.message for m in client.messages)
    uri = open_doc(client, "x = \n")
    assert await client.text_document_inline_completion_async(inline_params(uri, 0, 4)) is None
    await client.shutdown_session()
    await client.stop()
