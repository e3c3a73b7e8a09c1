"""A stand-in for coda-lsp that speaks the editors' wire contract (ARCHITECTURE.md) with canned
answers, so the editor clients can be tested without a model.

Inline completion always offers STANDIN_COMPLETION at the cursor, unless the editor turned
completions off with the `enabled` setting (a payload without `enabled` keeps the current
value, as in the server). "Fill this hole" (code action and the `coda.fillHole` command)
replaces the `...` on the requested lines with STANDIN_FILL. A hole whose line says SLOW is
filled lazily in `codeAction/resolve`, slowly, with `$/progress` on a token the stand-in
creates, and stops when the request is cancelled, like the server's long fills. A hole whose
line says BROKEN is refused as the server refuses a hole whose every candidate adds a syntax
error: it asks `window/showMessageRequest` (or, for a client without it, says
`window/showMessage`) and applies STANDIN_REJECTED_FILL only when "Fill anyway (…)" is chosen or
`coda.fillHole` got `acceptRejected: true`. Asked by hand (Invoked), inline completion offers
three: on a hole's line the STANDIN_CANDIDATES in place of the `...`, elsewhere
STANDIN_COMPLETION and two variants of it (STANDIN_ALTERNATIVES). Every
settings payload it receives is appended as a JSON line to the file named by
$CODA_STANDIN_LOG, so tests can check what the editor sent. Not a model, not the server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time

from lsprotocol import types
from pygls.lsp.server import LanguageServer

STANDIN_COMPLETION = "coda_value = 42"
STANDIN_FILL = "return 42"
STANDIN_REJECTED_FILL = "elif a =="
STANDIN_CANDIDATES = ("return 42", "return 41", "return 40")
STANDIN_ALTERNATIVES = ("coda_value = 41", "coda_value = 40")
BROKEN = "# broken"
REFUSAL = "coda-lsp: no fill for this hole: 3 candidate(s): 3 added a syntax error"
FILL_ANYWAY = "Fill anyway (adds a syntax error)"
HOLE = "..."
SLOW = "# slow"
SLOW_STEPS, SLOW_STEP_S = 40, 0.25  # ten seconds: long enough to watch and to cancel
FILL_PROGRESS_TITLE = "coda-lsp: filling the hole"

server = LanguageServer("coda-standin", "0")
settings = {"enabled": True}
tokens = itertools.count(1)


def _record(kind: str, payload) -> None:
    path = os.environ.get("CODA_STANDIN_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"kind": kind, "payload": payload}) + "\n")


def _status(state: str, message: str, latency_ms: float | None) -> None:
    server.protocol.notify(
        "coda/status", {"state": state, "message": message, "latencyMs": latency_ms}
    )


@server.feature(types.INITIALIZE)
def initialize(ls: LanguageServer, params: types.InitializeParams) -> None:
    _record("initializationOptions", params.initialization_options)
    _apply(params.initialization_options)


def _apply(payload) -> None:
    if isinstance(payload, dict):
        payload = payload.get("coda", payload)
        if isinstance(payload, dict) and isinstance(payload.get("enabled"), bool):
            settings["enabled"] = payload["enabled"]


@server.feature(types.INITIALIZED)
def initialized(ls: LanguageServer, params: types.InitializedParams) -> None:
    _status("loading", "loading the stand-in model", None)
    _status("ready", "stand-in ready", None)


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(ls: LanguageServer, params: types.DidChangeConfigurationParams):
    _record("didChangeConfiguration", params.settings)
    _apply(params.settings)


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
def inline_completion(ls: LanguageServer, params: types.InlineCompletionParams):
    started = time.perf_counter()
    doc = ls.workspace.get_text_document(params.text_document.uri)
    lines = doc.lines
    line = lines[params.position.line] if params.position.line < len(lines) else ""
    invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
    if invoked and HOLE in line and settings["enabled"]:
        return _hole_candidates(params, line)
    before = line[: params.position.character].strip()
    # Offer nothing on a blank line or after the completion itself, like a model that is done.
    if not before or STANDIN_COMPLETION in line or not settings["enabled"]:
        return None
    position = params.position
    _record("inlineCompletion", {"line": position.line, "character": position.character,
                                 "triggerKind": int(params.context.trigger_kind)})
    at = types.Range(start=params.position, end=params.position)
    item = types.InlineCompletionItem(
        insert_text=" " + STANDIN_COMPLETION if not line[: params.position.character].endswith(" ")
        else STANDIN_COMPLETION,
        range=at,
    )
    item.filter_text = item.insert_text
    items = [item]
    if invoked:
        lead = item.insert_text[: -len(STANDIN_COMPLETION)]
        items += [types.InlineCompletionItem(insert_text=lead + text, filter_text=lead + text,
                                             range=at) for text in STANDIN_ALTERNATIVES]
    _status("ready", "stand-in ready", round((time.perf_counter() - started) * 1000, 1))
    return types.InlineCompletionList(items=items)


def _hole_candidates(params: types.InlineCompletionParams, line: str):
    _record("inlineCompletion", {"line": params.position.line,
                                 "character": params.position.character,
                                 "triggerKind": int(params.context.trigger_kind)})
    column = line.find(HOLE)
    hole = types.Range(start=types.Position(line=params.position.line, character=column),
                       end=types.Position(line=params.position.line, character=column + len(HOLE)))
    items = [types.InlineCompletionItem(insert_text=text, filter_text=text, range=hole)
             for text in STANDIN_CANDIDATES]
    return types.InlineCompletionList(items=items)


def _sharpened(step: int) -> str:
    """The stand-in's fill as a diffusion fill reads after ``step``: decided left to right."""
    decided = len(STANDIN_FILL) * step // SLOW_STEPS
    return STANDIN_FILL[:decided] + "\u2591" * (len(STANDIN_FILL) - decided)


def _hole_edit(uri: str, lines: list[str], first: int, last: int,
               text: str = STANDIN_FILL) -> types.WorkspaceEdit | None:
    for number in range(first, min(last, len(lines) - 1) + 1):
        column = lines[number].find(HOLE)
        if column >= 0:
            hole = types.Range(
                start=types.Position(line=number, character=column),
                end=types.Position(line=number, character=column + len(HOLE)),
            )
            fill = types.TextEdit(range=hole, new_text=text)
            return types.WorkspaceEdit(changes={uri: [fill]})
    return None


def _is_broken(lines: list[str], first: int, last: int) -> bool:
    return any(BROKEN in line for line in lines[first : last + 1])


async def _refuse(ls: LanguageServer, uri: str, first: int, last: int) -> None:
    """Say why there is no fill; apply the rejected one only if the user picks Fill anyway."""
    window = ls.client_capabilities.window
    if window is None or window.show_message is None:
        ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning,
                                                       message=REFUSAL))
        _record("refused", {"asked": False})
        return
    choice = await ls.window_show_message_request_async(types.ShowMessageRequestParams(
        type=types.MessageType.Warning, message=REFUSAL,
        actions=[types.MessageActionItem(title=FILL_ANYWAY)]))
    chosen = choice.title if choice is not None else None
    _record("refused", {"asked": True, "choice": chosen})
    if chosen is not None and chosen.startswith("Fill anyway ("):
        _apply_rejected(ls, uri, first, last)


def _apply_rejected(ls: LanguageServer, uri: str, first: int, last: int) -> None:
    doc = ls.workspace.get_text_document(uri)
    edit = _hole_edit(uri, doc.lines, first, last, STANDIN_REJECTED_FILL)
    if edit is not None:
        ls.workspace_apply_edit(types.ApplyWorkspaceEditParams(edit=edit, label="Fill anyway"))


@server.feature(
    types.TEXT_DOCUMENT_CODE_ACTION,
    types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.QuickFix,
                                               types.CodeActionKind.RefactorRewrite],
                            resolve_provider=True),
)
def code_action(ls: LanguageServer, params: types.CodeActionParams):
    doc = ls.workspace.get_text_document(params.text_document.uri)
    first, last = params.range.start.line, params.range.end.line
    edit = _hole_edit(doc.uri, doc.lines, first, last)
    if edit is None:
        return None
    if any(SLOW in line or BROKEN in line for line in doc.lines[first : last + 1]):  # resolve
        data = {"uri": doc.uri, "first": first, "last": last}
        return [types.CodeAction(title="Fill this hole", kind=types.CodeActionKind.QuickFix,
                                 data=data)]
    return [types.CodeAction(title="Fill this hole", kind=types.CodeActionKind.QuickFix, edit=edit)]


@server.feature(types.CODE_ACTION_RESOLVE)
async def resolve_code_action(ls: LanguageServer, action: types.CodeAction):
    data = action.data
    doc = ls.workspace.get_text_document(data["uri"])
    if _is_broken(doc.lines, data["first"], data["last"]):
        await _refuse(ls, data["uri"], data["first"], data["last"])
        return action  # no edit: the refusal said why
    token = f"coda-standin-fill-{next(tokens)}"
    await ls.work_done_progress.create_async(token)
    ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(
        title=FILL_PROGRESS_TITLE, cancellable=True, percentage=0))
    try:
        for step in range(1, SLOW_STEPS + 1):
            await asyncio.sleep(SLOW_STEP_S)
            ls.work_done_progress.report(token, types.WorkDoneProgressReport(
                message=f"step {step}/{SLOW_STEPS}: {_sharpened(step)}",
                percentage=100 * step // SLOW_STEPS))
    except asyncio.CancelledError:
        _record("fillCancelled", data)
        ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message="cancelled"))
        raise
    ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message="filled"))
    doc = ls.workspace.get_text_document(data["uri"])
    action.edit = _hole_edit(doc.uri, doc.lines, data["first"], data["last"])
    return action


@server.command("coda.fillHole")
async def fill_hole(ls: LanguageServer, target: dict):
    # pygls 2 passes the command's arguments as separate parameters
    uri = target["uri"]
    first, last = target["range"]["start"]["line"], target["range"]["end"]["line"]
    doc = ls.workspace.get_text_document(uri)
    _record("fillHole", target)
    if _is_broken(doc.lines, first, last):
        if target.get("acceptRejected") is True:
            _apply_rejected(ls, uri, first, last)
        else:
            await _refuse(ls, uri, first, last)
        return None
    edit = _hole_edit(uri, doc.lines, first, last)
    if edit is not None:
        ls.workspace_apply_edit(types.ApplyWorkspaceEditParams(edit=edit, label="Fill this hole"))
    return None


if __name__ == "__main__":
    if "--version" in sys.argv:
        print("coda-standin 0")
        sys.exit(0)
    print("coda stand-in server on stdio", file=sys.stderr)
    server.start_io()
