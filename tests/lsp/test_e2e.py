"""End to end through the real subprocess, under VS Code's and Neovim's capabilities."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

import pytest
from lsp_session import capabilities, inline_params, open_doc, start
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.protocol import JsonRPCProtocol

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = "def add(a, b):\n    return \n\n\ndef sub(a, b):\n    ...\n"


def line_text(text: str, line: int) -> str:
    return text.replace("\r\n", "\n").split("\n")[line]


def shown_by_vscode(doc_line: str, cursor: int, item: types.InlineCompletionItem) -> bool:
    """VS Code shows an item when its range is on the cursor line, starts at or before the
    cursor, and what is typed in [range.start, cursor) is a prefix of the filter text."""
    r = item.range
    if r is None:
        return True
    if r.start.line != r.end.line or r.start.character > cursor:
        return False
    typed = doc_line[r.start.character:cursor]
    return (item.filter_text or item.insert_text).startswith(typed)


async def test_advertised_features(client, tiny_model_dir):
    other = await start(tiny_model_dir, client.profile, initialize=False)
    init = await other.initialize_session(types.InitializeParams(
        capabilities=capabilities(client.profile)))
    caps = init.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.code_action_provider.resolve_provider
    assert set(caps.code_action_provider.code_action_kinds) == {
        types.CodeActionKind.QuickFix, types.CodeActionKind.RefactorRewrite}
    assert "coda.fillHole" in caps.execute_command_provider.commands
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    expected = "utf-8" if client.profile == "neovim" else "utf-16"
    assert caps.position_encoding == expected
    await other.shutdown_session()
    await other.stop()


async def test_inline_completion_item_and_range(client):
    uri = open_doc(client, CODE)
    result = await client.text_document_inline_completion_async(inline_params(uri, 1, 11))
    assert result is not None and result.items
    item = result.items[0]
    assert item.range.start == types.Position(line=1, character=11)
    assert item.range.end.line == 1
    assert item.insert_text.strip()
    assert shown_by_vscode(line_text(CODE, 1), 11, item)


def cursor_range(line: int, character: int) -> types.Range:
    return types.Range(start=types.Position(line=line, character=character),
                       end=types.Position(line=line, character=character))


async def test_fill_hole_code_action_resolves_to_an_edit(client):
    uri = open_doc(client, CODE)
    # in the hole, at column 0 ("Go to line", `6G`), in the indentation, at the line's end
    for character in (5, 0, 2, 7):
        actions = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=cursor_range(5, character), context=types.CodeActionContext(diagnostics=[])))
        assert actions and actions[0].title == "Fill this hole", character
        assert actions[0].kind == types.CodeActionKind.QuickFix
    none_here = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=cursor_range(4, 0),
        context=types.CodeActionContext(diagnostics=[])))
    assert not none_here  # `def sub(a, b):` holds no hole
    # a random model's fill rarely parses: take it anyway (the contract: test_fill_contract.py)
    actions[0].data["acceptRejected"] = True
    resolved = await client.code_action_resolve_async(actions[0])  # the one from column 7
    edit = resolved.edit
    assert edit is not None
    text_edits = edit.document_changes[0].edits if edit.document_changes else edit.changes[uri]
    assert text_edits[0].range.start == types.Position(line=5, character=4)
    assert text_edits[0].range.end == types.Position(line=5, character=7)


async def test_fill_hole_command_applies_the_edit(client):
    uri = open_doc(client, CODE)
    before = len(client.recorder.applied)
    rng = {"start": {"line": 5, "character": 4}, "end": {"line": 5, "character": 7}}
    applied = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="coda.fillHole", arguments=[{"uri": uri, "range": rng, "acceptRejected": True}]))
    assert applied is True
    assert len(client.recorder.applied) == before + 1
    with pytest.raises(JsonRpcException):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="coda.fillHole", arguments=[{"uri": 3}]))


async def test_a_hole_with_nothing_to_offer_says_so(client):
    """"Fill this hole" chosen and no candidate clears the bar: a one-line message, no edit."""
    uri = open_doc(client, CODE)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": {"confidenceThreshold": 1.0}}))
    before, applied_before = len(client.messages), len(client.recorder.applied)
    asked = len(client.recorder.asked)
    rng = {"start": {"line": 5, "character": 4}, "end": {"line": 5, "character": 7}}
    try:
        applied = await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="coda.fillHole", arguments=[{"uri": uri, "range": rng}]))
    finally:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"coda": {"confidenceThreshold": 0.0}}))
    assert applied is False and len(client.recorder.applied) == applied_before
    await asyncio.sleep(0)  # the notification precedes the response on the wire
    said = [m.message for m in client.recorder.asked[asked:]]  # "Fill anyway?" (dismissed)
    assert client.messages[before:] == []
    assert len(said) == 1 and said[0].startswith("coda-lsp: no fill for this hole: ")
    assert said[0].endswith("below the confidence threshold 1")


async def test_fifty_rapid_requests_only_the_newest_is_computed(client):
    uri = open_doc(client, CODE)
    # Slow work (many denoising steps, long canvases): a request the worker has started is
    # nearly always still running when the next one arrives, so it must be stopped between
    # steps rather than finishing first. On a loaded machine the client (or the server's
    # reader) can stall for longer than one request's work, letting that request finish: a
    # couple of such requests are tolerated; without newest-wins all 50 would be computed.
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": {"steps": 512, "maxMiddleTokens": 64}}))
    first_log = len(client.log_messages)
    requests = [client.text_document_inline_completion_async(inline_params(uri, 1, 11))
                for _ in range(50)]
    results = await asyncio.gather(*requests)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": {"steps": 4, "maxMiddleTokens": 16}}))
    assert results[-1] is not None
    await asyncio.sleep(0)  # logMessage notifications precede the responses on the wire
    lines = [m.message for m in client.log_messages[first_log:] if "[inline-" in m.message]
    computed = [m for m in lines if "item(s)" in m]
    superseded = [m for m in lines if "superseded" in m]
    assert len(computed) + len(superseded) == 50, lines
    assert 1 <= len(computed) <= 3, lines


async def test_cancel_request_stops_the_work(client):
    uri = open_doc(client, CODE)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": {"steps": 512, "maxMiddleTokens": 64}}))
    # pygls' plain send_request writes at once (pytest-lsp's async wrapper would wait)
    fut = JsonRPCProtocol.send_request(client.protocol, types.TEXT_DOCUMENT_INLINE_COMPLETION,
                                       inline_params(uri, 1, 11), msg_id="cancel-me")
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    with pytest.raises(JsonRpcException) as info:
        await asyncio.wrap_future(fut)
    assert info.value.code == -32800  # RequestCancelled
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": {"steps": 4, "maxMiddleTokens": 16}}))
    assert await client.text_document_inline_completion_async(inline_params(uri, 1, 11))


async def test_configuration_changes(client):
    uri = open_doc(client, CODE)
    shown = len(client.messages)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": {"enabled": False, "steps": "lots"}}))
    assert await client.text_document_inline_completion_async(inline_params(uri, 1, 11)) is None
    assert len(client.messages) == shown + 1 and "coda.steps" in client.messages[-1].message
    # pull model: no payload, the server asks for the "coda" section
    client.set_configuration({"enabled": True, "steps": 4}, section="coda")
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    for _ in range(100):  # the pull is a round trip: poll the observable effect
        if await client.text_document_inline_completion_async(inline_params(uri, 1, 11)):
            break
    else:
        pytest.fail("completions did not come back after re-enabling")


async def test_unknown_uri_and_out_of_range_positions(client):
    assert await client.text_document_inline_completion_async(
        inline_params("file:///nowhere.py", 0, 0)) is None
    uri = open_doc(client, CODE)
    for line, ch in [(1, 500), (500, 0), (0, 0)]:
        result = await client.text_document_inline_completion_async(inline_params(uri, line, ch))
        for item in result.items if result else []:
            assert item.range.start.line == item.range.end.line


async def test_emoji_crlf_tabs_and_surrogate_offsets(client):
    text = "s = '😀😀'\r\n\tx = f(\r\n"
    uri = open_doc(client, text)
    utf8 = client.profile == "neovim"
    inside_pair = 6 if not utf8 else 7  # mid-character in either encoding
    await client.text_document_inline_completion_async(inline_params(uri, 0, inside_pair))
    result = await client.text_document_inline_completion_async(inline_params(uri, 1, 7))
    assert result is not None
    item = result.items[0]
    assert item.range.start == types.Position(line=1, character=7)
    assert "\n" not in item.insert_text.replace("\r\n", "")


async def test_empty_binary_large_and_unsupported_documents(client):
    empty = open_doc(client, "")
    await client.text_document_inline_completion_async(inline_params(empty, 0, 0))
    binary = open_doc(client, "\x00\x01\x02binary\x00")
    assert await client.text_document_inline_completion_async(inline_params(binary, 0, 3)) is None
    big_text = "x = 1\n" * 850_000  # about 5 MB
    big = open_doc(client, big_text)
    result = await asyncio.wait_for(
        client.text_document_inline_completion_async(inline_params(big, 425_000, 5)), 60)
    assert result is None or result.items[0].range.start.line == 425_000
    cobol = open_doc(client, "IDENTIFICATION DIVISION.\nPROGRAM-ID. X.\n", "cobol", ".cob")
    result = await client.text_document_inline_completion_async(inline_params(cobol, 1, 14))
    assert result is None or result.items


async def test_malformed_params_get_an_error_and_the_server_keeps_serving(client):
    # the typed client cannot send nonsense: write the raw message and await its response
    for n, params in enumerate([{"textDocument": 5, "position": "x"},
                                {"textDocument": {"uri": "file:///a"},
                                 "position": {"line": -1, "character": 0}}]):
        msg_id = f"malformed-{client.profile}-{n}"
        answer: Future = Future()
        client.protocol._request_futures[msg_id] = answer
        client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "params": params,
                                    "method": types.TEXT_DOCUMENT_INLINE_COMPLETION})
        with pytest.raises(JsonRpcException) as info:
            await asyncio.wait_for(asyncio.wrap_future(answer), 10)
        assert info.value.code == -32602  # InvalidParams
    uri = open_doc(client, CODE)
    assert await client.text_document_inline_completion_async(inline_params(uri, 1, 11))


async def test_incremental_edits_reach_the_server(client):
    uri = open_doc(client, "def f():\n    pass\n")
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=1, character=4),
                              end=types.Position(line=1, character=8)),
            text="return 😀 + ")]))
    end_of_line = 16 if client.profile == "vscode" else 18  # the emoji: 2 UTF-16 units, 4 bytes
    result = await client.text_document_inline_completion_async(
        inline_params(uri, 1, end_of_line))
    assert result is not None
    assert result.items[0].range.start == types.Position(line=1, character=end_of_line)


async def test_status_reports_the_latest_latency_at_most_once_a_second(client):
    uri = open_doc(client, CODE)
    recorder, loop = client.recorder, asyncio.get_running_loop()
    first_status, first_log = len(recorder.statuses), len(client.log_messages)
    started, count = loop.time(), 0
    while count < 4 or loop.time() - started < 1.5:
        assert await client.text_document_inline_completion_async(inline_params(uri, 1, 11))
        count += 1
    elapsed = loop.time() - started
    await asyncio.sleep(0)  # logMessage notifications precede the responses on the wire
    done = [m.message for m in client.log_messages[first_log:] if "item(s) total=" in m.message]
    latest = float(done[-1].split("total=")[1].split("ms")[0])
    while not (recorder.statuses and recorder.statuses[-1].latencyMs == latest):
        recorder.status_changed.clear()
        await asyncio.wait_for(recorder.status_changed.wait(), 10)
    updates = recorder.statuses[first_status:]
    assert all(u.state == "ready" and u.latencyMs is not None for u in updates)
    assert len(updates) <= elapsed + 2  # at most one a second, not one per completion
    times = recorder.status_times[first_status:]
    # sent at least 1 s apart; arrival times may be jittered by a busy client loop
    assert all(b - a > 0.5 for a, b in zip(times, times[1:], strict=False)), times


async def test_completion_past_the_last_definition_of_a_large_file(client):
    # over spans.VALIDATION_BYTES: the fill is validated in the enclosing definition, and
    # past the last one tree-sitter used to hand back a node that crashed the server
    functions = "def f():\n    return 1\n" * 800
    method = "    def m{i}(self):\n        return {i}\n\n"
    big_class = "class C:\n" + "".join(method.format(i=i) for i in range(600)) + "\n"
    for text, line in [(functions, 1600), (big_class, big_class.count("\n"))]:
        uri = open_doc(client, text)
        result = await client.text_document_inline_completion_async(inline_params(uri, line, 0))
        assert result is None or result.items[0].range.start == types.Position(line=line,
                                                                                character=0)
    uri = open_doc(client, CODE)  # still alive and serving
    assert await client.text_document_inline_completion_async(inline_params(uri, 1, 11))
