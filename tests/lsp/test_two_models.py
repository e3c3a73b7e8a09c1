"""Two models, one real server: ghost text from the typing model, hole fills and invoked
completions from the fill model, and the fill model swapped by a settings change while
requests are queued on it, none dropped.

The checkpoints write one word over and over (testkit.build_saying_checkpoint), so a fill
says which model wrote it.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from lsp_session import TEST_SETTINGS, Recorder, capabilities, open_doc, server_env
from lsprotocol import types
from pytest_lsp import ClientServerConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = "def add(a, b):\n    return \n\n\ndef sub(a, b):\n    ...\n"
TYPING_WORD, FILL_WORD, NEW_FILL_WORD = "items", "print", "Stack"


@pytest.fixture(scope="module")
def checkpoints(saying_models):
    return {"typing": saying_models[TYPING_WORD], "fill": saying_models[FILL_WORD],
            "newfill": saying_models[NEW_FILL_WORD]}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(checkpoints):
    import sys

    command = [sys.executable, "-m", "coda_lsp", "--model", str(checkpoints["typing"]),
               "--fill-model", str(checkpoints["fill"]), "--device", "cpu", "--stdio"]
    client = await ClientServerConfig(server_command=command, server_env=server_env()).start()
    client.recorder = Recorder(client)
    await client.initialize_session(types.InitializeParams(
        capabilities=capabilities("vscode"), initialization_options={"coda": TEST_SETTINGS}))
    await asyncio.wait_for(client.recorder.ready.wait(), 60)
    yield client
    await client.shutdown_session()
    await client.stop()


def field(obj, name):
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def fill_model_of(status) -> str | None:
    try:
        return field(field(status.models, "fill"), "model")
    except (AttributeError, KeyError):  # statuses sent before any model loaded
        return None


async def wait_for_status(client, predicate, timeout: float = 60):
    recorder = client.recorder

    async def seen():
        while not any(predicate(s) for s in recorder.statuses):
            recorder.status_changed.clear()
            await recorder.status_changed.wait()

    await asyncio.wait_for(seen(), timeout)


def ask(uri: str, kind: types.InlineCompletionTriggerKind, line: int = 1, character: int = 11):
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=kind))


AUTOMATIC = types.InlineCompletionTriggerKind.Automatic
INVOKED = types.InlineCompletionTriggerKind.Invoked


async def offer(client, uri: str, kind) -> str:
    result = await client.text_document_inline_completion_async(ask(uri, kind))
    assert result is not None and result.items, f"no offer ({kind.name})"
    return result.items[0].insert_text


async def hole_fill(client, uri: str) -> str:
    rng = types.Range(start=types.Position(line=5, character=4),
                      end=types.Position(line=5, character=7))
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=rng,
        context=types.CodeActionContext(diagnostics=[])))
    actions[0].data["acceptRejected"] = True  # which model wrote it, whatever the contract says
    resolved = await client.code_action_resolve_async(actions[0])
    assert resolved.edit is not None, "no edit for the hole"
    changes = resolved.edit.document_changes or []
    return changes[0].edits[0].new_text if changes else \
        next(iter(resolved.edit.changes.values()))[0].new_text


def words(text: str) -> set[str]:
    return {w for w in (TYPING_WORD, FILL_WORD, NEW_FILL_WORD) if w in text}


async def test_each_role_is_served_by_its_own_model(client, checkpoints):
    uri = open_doc(client, CODE)
    assert words(await offer(client, uri, AUTOMATIC)) == {TYPING_WORD}  # ghost text: typing
    assert words(await offer(client, uri, INVOKED)) == {FILL_WORD}  # asked for: fill
    assert words(await hole_fill(client, uri)) == {FILL_WORD}  # "Fill this hole": fill
    status = client.recorder.statuses[-1]
    typing, fill = field(status.models, "typing"), field(status.models, "fill")
    assert field(typing, "model") == "typing" and field(fill, "model") == "fill"
    assert field(typing, "device") == field(fill, "device") == "cpu"
    assert field(fill, "dtype") in ("float32", "bfloat16", "int8")


async def test_a_settings_change_swaps_the_fill_model_with_nothing_dropped(client, checkpoints):
    """Invoked completions queued on the fill model's worker, then the setting changes: each
    queued request is answered by the model it was queued on, typing goes on meanwhile, and
    requests after the swap get the new model."""
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": {**TEST_SETTINGS, "steps": 64, "maxMiddleTokens": 32}}))
    uris = [open_doc(client, CODE) for _ in range(6)]
    queued = [asyncio.ensure_future(offer(client, uri, INVOKED)) for uri in uris]
    for _ in range(3):  # each task's first step writes its request: on the wire before the change
        await asyncio.sleep(0)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": {**TEST_SETTINGS, "steps": 64, "maxMiddleTokens": 32,
                           "fillModel": str(checkpoints["newfill"])}}))
    typing_meanwhile = await offer(client, uris[0], AUTOMATIC)
    answered = await asyncio.gather(*queued)
    assert [words(a) for a in answered] == [{FILL_WORD}] * len(uris)  # none dropped
    assert words(typing_meanwhile) == {TYPING_WORD}
    await wait_for_status(client, lambda s: fill_model_of(s) == "newfill")
    uri = open_doc(client, CODE)
    assert words(await offer(client, uri, INVOKED)) == {NEW_FILL_WORD}
    assert words(await hole_fill(client, uri)) == {NEW_FILL_WORD}
    assert words(await offer(client, uri, AUTOMATIC)) == {TYPING_WORD}  # typing unchanged


async def test_a_fill_model_that_cannot_load_keeps_the_old_one(client, checkpoints):
    before = len(client.messages)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": {**TEST_SETTINGS, "fillModel": "/no/such/model"}}))

    async def said():
        while not any("/no/such/model" in m.message for m in client.messages[before:]):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(said(), 30)
    lines = [m.message for m in client.messages[before:] if "/no/such/model" in m.message]
    assert lines == ["coda-lsp: cannot load the model /no/such/model (fill): model folder not "
                     "found: /no/such/model; keeping the model it had"]
    uri = open_doc(client, CODE)
    assert words(await offer(client, uri, INVOKED)) == {NEW_FILL_WORD}


def typing_model_of(status) -> str | None:
    try:
        return field(field(status.models, "typing"), "model")
    except (AttributeError, KeyError):
        return None


async def test_a_settings_change_swaps_the_typing_model(client, checkpoints):
    """typingModel changes at run time; fillModel back to null means the command line's
    --fill-model, which is now the same folder: one model serves both roles."""
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": {**TEST_SETTINGS, "typingModel": str(checkpoints["fill"]),
                           "fillModel": None}}))
    await wait_for_status(client, lambda s: typing_model_of(s) == "fill"
                          and fill_model_of(s) == "fill")
    uri = open_doc(client, CODE)
    assert words(await offer(client, uri, AUTOMATIC)) == {FILL_WORD}
    assert words(await offer(client, uri, INVOKED)) == {FILL_WORD}
