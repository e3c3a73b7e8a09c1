"""What no well-behaved client sends, over the real server's stdio: every request is answered.

One server for the module (``raw``); tests use their own document URIs. Logs: once the client
is connected they go to ``window/logMessage`` with the type of their level, not to stderr.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from raw_server import NULL_ID, RawServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = "def add(a, b):\n    return \n"
INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, PARSE_ERROR = -32600, -32601, -32602, -32700


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def raw(tiny_model_dir):
    server = await RawServer.start(tiny_model_dir)
    await server.initialize()
    yield server
    await server.kill()


_docs = iter(range(1_000_000))


def open_doc(server: RawServer, text: str) -> str:
    uri = f"file:///hostile/doc{next(_docs)}.py"
    server.notify("textDocument/didOpen", {"textDocument": {
        "uri": uri, "languageId": "python", "version": 1, "text": text}})
    return uri


def inline(uri: str, line: int, character: int, **context) -> dict:
    return {"textDocument": {"uri": uri}, "position": {"line": line, "character": character},
            "context": {"triggerKind": 1, **context}}


def code_action(uri: str, line: int, character: int, only) -> dict:
    here = {"line": line, "character": character}
    return {"textDocument": {"uri": uri}, "range": {"start": here, "end": here},
            "context": {"diagnostics": [], "only": only}}


def error_code(result) -> int | None:
    return result["error"]["code"] if isinstance(result, dict) and "error" in result else None


async def test_a_nested_object_with_a_jsonrpc_key_is_a_value_not_a_message(raw):
    uri = open_doc(raw, CODE)
    shutdown_like = {"jsonrpc": "2.0", "id": 7, "method": "shutdown"}
    misplaced = inline(uri, 1, 11)
    misplaced["position"] = shutdown_like  # where a Position belongs
    assert error_code(await raw.request("textDocument/inlineCompletion", misplaced)) == \
        INVALID_PARAMS
    exit_like = {"jsonrpc": "2.0", "method": "exit"}
    tolerated = inline(uri, 1, 11, extra=exit_like)  # an unknown key is ignored, nested or not
    result = await raw.request("textDocument/inlineCompletion", tolerated)
    assert result and result["items"], result
    text = await raw.request("coda/documentText", {"uri": uri, "note": exit_like})
    assert text["text"] == CODE
    assert raw.proc.returncode is None


async def test_code_action_kinds_must_be_strings(raw):
    uri = open_doc(raw, CODE + "\n\ndef sub(a, b):\n    ...\n")
    for only in ([5], ["quickfix", None], "quickfix"):
        assert error_code(await raw.request("textDocument/codeAction",
                                            code_action(uri, 5, 5, only))) == INVALID_PARAMS
    actions = await raw.request("textDocument/codeAction", code_action(uri, 5, 5, ["quickfix"]))
    # answered (this client has no resolve: the action comes filled, or not at all when the
    # random model's fill is refused by the fill contract)
    assert error_code(actions) is None
    assert actions is None or actions[0]["title"] == "Fill this hole"


async def test_wrong_types_are_invalid_params_not_coerced(raw):
    uri = open_doc(raw, CODE)
    for params in [{**inline(uri, 1, 11), "textDocument": {"uri": 5}},   # was read as "5"
                   inline(uri, "1", 11), inline(uri, 1, True), inline(uri, 1.5, 11),
                   inline(uri, 2**31, 0), inline(uri, -1, 0), [1, 2], "x", None]:
        result = await raw.request("textDocument/inlineCompletion", params)
        assert error_code(result) == INVALID_PARAMS, params
    biggest = 2**31 - 1  # the largest uinteger: clamped to the end of the document
    assert error_code(await raw.request("textDocument/inlineCompletion",
                                        inline(uri, biggest, biggest))) is None


async def test_unreadable_messages_are_answered_with_id_null(raw):
    before = len(raw.responses[NULL_ID])
    bodies = [b"{not json", b"\xff\xfe\x00", b"[1, 2]", b"5", b"null", b"[" * 100_000,
              b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "shutdown"}',
              b'{"jsonrpc": "2.0", "id": 1.5, "method": "shutdown"}']
    for body in bodies:
        raw.send_body(body)
    await raw.request("coda/documentText", {"uri": "file:///nowhere.py"})  # all read by now
    codes = [r["error"]["code"] for r in raw.responses[NULL_ID][before:]]
    assert codes == [PARSE_ERROR, PARSE_ERROR] + [INVALID_REQUEST] * 3 + [PARSE_ERROR] + \
        [INVALID_REQUEST] * 2
    for msg_id, message in [("v1", {"jsonrpc": "1.0", "id": "v1", "method": "shutdown"}),
                            ("m", {"jsonrpc": "2.0", "id": "m", "method": 5}),
                            ("u", {"jsonrpc": "2.0", "id": "u", "method": "coda/nothing"})]:
        raw.send(message)
        answer = await raw.response(msg_id)
        expected = METHOD_NOT_FOUND if msg_id == "u" else INVALID_REQUEST
        assert answer["error"]["code"] == expected
    assert raw.proc.returncode is None


async def test_a_nonsense_answer_to_apply_edit_fails_the_command_instead_of_hanging(raw):
    uri = open_doc(raw, CODE + "\n\ndef sub(a, b):\n    ...\n")
    hole = {"start": {"line": 5, "character": 4}, "end": {"line": 5, "character": 7}}
    # this client answers workspace/applyEdit with a null result (it must be an object)
    result = await raw.request("workspace/executeCommand", {
        "command": "coda.fillHole",
        "arguments": [{"uri": uri, "range": hole, "acceptRejected": True}]}, timeout=30)
    assert result is False
    assert any("workspace/applyEdit failed" in m["message"] for m in raw.log_messages())


async def test_lone_surrogates_still_complete(raw):
    uri = open_doc(raw, "s = '\ud800'\n" + CODE)  # json.dumps sends it as "\\ud800"
    result = await raw.request("textDocument/inlineCompletion", inline(uri, 2, 11))
    assert result and result["items"]
    assert result["items"][0]["range"]["start"] == {"line": 2, "character": 11}


async def test_logs_go_to_the_client_with_their_type_not_to_stderr(raw):
    uri = open_doc(raw, CODE)
    assert await raw.request("textDocument/inlineCompletion", inline(uri, 1, 11))
    raw.notify("workspace/didChangeConfiguration", {"settings": {"coda": {"steps": "many"}}})
    raw.notify("workspace/didChangeConfiguration", {"settings": {"coda": {"steps": 4}}})
    await raw.request("coda/documentText", {"uri": uri})  # both handled by now
    await asyncio.sleep(0.2)  # the worker's log lines hop onto the loop before they are sent
    logs = raw.log_messages()
    info, warning = 3, 2
    assert any(m["message"].endswith("model ready") and m["type"] == info for m in logs)
    assert any("item(s)" in m["message"] and m["type"] == info for m in logs)
    assert any("coda.steps must be" in m["message"] and m["type"] == warning for m in logs)
    # editors show stderr as errors: nothing of the above may be there
    assert b"INFO" not in raw.stderr and b"WARNING" not in raw.stderr, bytes(raw.stderr)[-500:]


async def test_a_repeated_initialized_neither_reloads_the_model_nor_doubles_the_log(raw):
    raw.notify("initialized", {})
    raw.notify("initialized", {})
    uri = open_doc(raw, CODE)
    assert await raw.request("textDocument/inlineCompletion", inline(uri, 1, 11))
    await asyncio.sleep(0.2)
    logs = [m["message"] for m in raw.log_messages()]
    assert sum(m.endswith("model ready") for m in logs) == 1
    completions = [m for m in logs if "[inline-" in m]
    assert len(set(completions)) == len(completions)  # each line once


async def test_requests_after_shutdown_are_refused_and_exit_ends_the_process(tiny_model_dir):
    server = await RawServer.start(tiny_model_dir)
    try:
        await server.initialize()
        assert await server.request("shutdown", None) is None
        refused = await server.request("coda/documentText", {"uri": "file:///x.py"})
        assert error_code(refused) == INVALID_REQUEST
        server.notify("exit", None)
        await server.proc.stdin.drain()
        assert await asyncio.wait_for(server.proc.wait(), 30) == 0
    finally:
        await server.kill()
