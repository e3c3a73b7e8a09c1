"""The fill contract through the real server (pygls, pytest-lsp), with a scripted model.

A hole whose every candidate adds a syntax error keeps the buffer as it was, the server says
why, and "Fill anyway" applies the best rejected candidate; a good fill applies; an invoked
inline completion at a hole offers the passing fills only.
"""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_asyncio
from lsp_session import Recorder, capabilities, open_doc, server_env
from lsprotocol import types
from pytest_lsp import ClientServerConfig
from scripted_coda import ScriptedEngine

from coda_lsp.core import fim
from coda_lsp.core.engine import MASK_GLYPH
from coda_lsp.core.settings import Settings

SCRIPTED = Path(__file__).resolve().parents[1] / "scripted_coda.py"
HOLE_FILE = "def add(a, b):\n    ...\n"
HOLE = {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 7}}
BROKEN = [["elif a == 0:\n        a =", 0.9], ["elif a ==", 0.8], ["elif", 0.7]]
GOOD = [["return a + b", 0.9], ["return a - b", 0.8], ["return b + a", 0.7], ["return 0", 0.6]]
BLOCK_HOLE = "def add(a, b):\n    ...\n    return a\n"  # parses without the hole's text too
ANYWAY = "Fill anyway (adds a syntax error)"


async def scripted_client(model_dir: Path, fills: list):
    config = ClientServerConfig(
        server_command=[sys.executable, str(SCRIPTED), "--model", str(model_dir)],
        server_env={**server_env(), "CODA_SCRIPT": json.dumps({"fills": fills})})
    client = await config.start()
    client.recorder = Recorder(client)
    await client.initialize_session(types.InitializeParams(
        capabilities=capabilities("vscode"),
        initialization_options={"coda": {"fillHoleSteps": 4}}))
    await asyncio.wait_for(client.recorder.ready.wait(), 60)
    return client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def broken(tiny_model_dir):
    client = await scripted_client(tiny_model_dir, BROKEN)
    yield client
    await client.shutdown_session()
    await client.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def good(tiny_model_dir):
    client = await scripted_client(tiny_model_dir, [*BROKEN, *GOOD])
    yield client
    await client.shutdown_session()
    await client.stop()


async def text_of(client, uri: str) -> str:
    return (await client.protocol.send_request_async("coda/documentText", {"uri": uri})).text


async def fill_command(client, uri: str, **extra) -> bool:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="coda.fillHole", arguments=[{"uri": uri, "range": HOLE, **extra}]))


def applied_text(client, before: int) -> list[str]:
    return [change.edits[0].new_text if hasattr(change, "edits") else change.new_text
            for params in client.recorder.applied[before:]
            for change in (params.edit.document_changes or
                           [e for es in (params.edit.changes or {}).values() for e in es])]


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_refused_hole_leaves_the_buffer_and_says_why(broken):
    uri = open_doc(broken, HOLE_FILE)
    broken.recorder.answer = None  # the user dismisses the message
    before = len(broken.recorder.applied)
    assert await fill_command(broken, uri) is False
    assert len(broken.recorder.applied) == before
    assert await text_of(broken, uri) == HOLE_FILE
    asked = broken.recorder.asked[-1]
    assert asked.type == types.MessageType.Warning
    assert asked.message.startswith("coda-lsp: no fill for this hole: ")
    assert asked.message.endswith("added a syntax error") and "\n" not in asked.message
    assert [a.title for a in asked.actions] == [ANYWAY]


async def test_fill_anyway_applies_the_best_rejected_candidate(broken):
    uri = open_doc(broken, HOLE_FILE)
    broken.recorder.answer = ANYWAY
    before = len(broken.recorder.applied)
    try:
        assert await fill_command(broken, uri) is True
    finally:
        broken.recorder.answer = None
    assert applied_text(broken, before) == ["elif a == 0:\n        a ="]


async def test_accept_rejected_in_the_command_and_the_action_data_skips_the_question(broken):
    uri = open_doc(broken, HOLE_FILE)
    asked, before = len(broken.recorder.asked), len(broken.recorder.applied)
    assert await fill_command(broken, uri, acceptRejected=True) is True
    assert applied_text(broken, before) == ["elif a == 0:\n        a ="]
    action = types.CodeAction(title="Fill this hole",
                              data={"uri": uri, "range": HOLE, "acceptRejected": True})
    resolved = await broken.code_action_resolve_async(action)
    assert resolved.edit is not None and len(broken.recorder.asked) == asked
    with pytest.raises(Exception, match="acceptRejected"):
        await fill_command(broken, uri, acceptRejected="yes")


async def test_resolve_waits_for_the_answer_without_blocking_other_requests(broken):
    uri = open_doc(broken, HOLE_FILE)
    actions = await broken.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(line=1, character=5),
                          end=types.Position(line=1, character=5)),
        context=types.CodeActionContext(diagnostics=[])))
    broken.recorder.release.clear()
    broken.recorder.waiting.clear()
    broken.recorder.answer = ANYWAY
    try:
        resolving = asyncio.ensure_future(broken.code_action_resolve_async(actions[0]))
        await asyncio.wait_for(broken.recorder.waiting.wait(), 30)
        assert await asyncio.wait_for(text_of(broken, uri), 10) == HOLE_FILE  # answered
        assert not resolving.done()
        broken.recorder.release.set()
        resolved = await asyncio.wait_for(resolving, 30)
    finally:
        broken.recorder.release.set()
        broken.recorder.answer = None
    edits = resolved.edit.document_changes[0].edits
    assert [e.new_text for e in edits] == ["elif a == 0:\n        a ="]
    declined = await broken.code_action_resolve_async(actions[0])
    assert declined.edit is None


async def test_a_good_fill_applies_without_a_question(good):
    uri = open_doc(good, HOLE_FILE)
    asked, before = len(good.recorder.asked), len(good.recorder.applied)
    assert await fill_command(good, uri) is True
    assert applied_text(good, before) == ["return a + b"]
    assert len(good.recorder.asked) == asked


async def test_the_fills_progress_shows_it_sharpening(good):
    """$/progress reports carry the candidate furthest along, masks as glyphs, on one line."""
    uri = open_doc(good, HOLE_FILE)
    tokens = set(good.progress_reports)
    assert await fill_command(good, uri) is True
    new = [t for t in good.progress_reports if t not in tokens]
    messages = [v.message for t in new for v in good.progress_reports[t]
                if isinstance(v, types.WorkDoneProgressReport)]
    assert messages[0] == "step 1/4: elif a" + MASK_GLYPH * 4  # first report: a quarter decided
    assert messages[-1] == "step 4/4: elif a == 0: a ="  # the longest candidate, one line


async def test_invoked_inline_completion_at_a_hole_offers_passing_fills_to_cycle(good):
    uri = open_doc(good, HOLE_FILE)
    result = await good.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=1, character=5),
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert [i.insert_text for i in result.items] == ["return a + b", "return a - b",
                                                     "return b + a"]
    assert result.items[0].range.start == types.Position(line=1, character=4)
    assert result.items[0].range.end == types.Position(line=1, character=7)


async def test_invoked_inline_completion_at_a_refused_hole_offers_nothing(broken):
    uri = open_doc(broken, HOLE_FILE)
    result = await broken.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=1, character=5),
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert result is None


@pytest.mark.parametrize("fills, reason", [
    (BROKEN, "9 candidate(s): 9 added a syntax error"),  # the first attempt and two retries
    ([*BROKEN, *GOOD], ""),
])
async def test_one_hole_one_decision_through_cli_lsp_and_fim(tiny_model_dir, tmp_path, fills,
                                                             reason):
    """The same hole and candidates: the CLI, the server and fim (HTTP's path, given the
    file's language) refuse with the same reason or write the same fill."""
    script = {"CODA_SCRIPT": json.dumps({"fills": fills})}
    source = tmp_path / "holes.py"
    source.write_text(BLOCK_HOLE)
    cli = subprocess.run([sys.executable, str(SCRIPTED), "fill", f"{source}:2:5", "--model",
                          str(tiny_model_dir)], capture_output=True, text=True, timeout=120,
                         env={**server_env(), **script})
    client = await scripted_client(tiny_model_dir, fills)
    try:
        uri = open_doc(client, BLOCK_HOLE)
        before = len(client.recorder.applied)
        lsp_applied = await fill_command(client, uri)
    finally:
        await client.shutdown_session()
        await client.stop()
    prefix, suffix = BLOCK_HOLE.split("...")  # HTTP fills between: the hole's text left out
    http = fim.fill_between(ScriptedEngine({"fills": fills}), prefix, suffix, Settings(), 4,
                            uri=source.as_uri())
    if reason:
        assert cli.returncode == 1 and f"not filled: {reason};" in cli.stderr
        assert lsp_applied is False
        assert client.recorder.asked[-1].message == f"coda-lsp: no fill for this hole: {reason}"
        assert http.fills == [] and http.decision.reason == reason
    else:
        assert cli.returncode == 0 and cli.stdout == BLOCK_HOLE.replace("...", "return a + b")
        assert lsp_applied is True and applied_text(client, before) == ["return a + b"]
        assert http.fills[0].text == "return a + b"
