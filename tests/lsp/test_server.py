"""The server pipeline in-process, with a fake engine: readiness, outdated results, bad input."""

import asyncio
import threading

from lsprotocol import types

from coda_lsp.core import positions
from coda_lsp.core.engine import Engine, Fill, FillResult
from coda_lsp.core.settings import Settings
from coda_lsp.lsp.server import STATUS_INTERVAL, create_server

URI = "file:///w/a.py"


class FakeEngine:
    def __init__(self, text="x + 1", confidence=0.9):
        self.text, self.confidence = text, confidence
        self.jobs = []
        self.release = threading.Event()
        self.release.set()

    def fill(self, job, should_stop=None):
        self.jobs.append(job)
        self.release.wait(5)
        return FillResult([Fill(self.text, self.confidence, n) for n in job.span_lengths])

    def forget(self, key):
        pass


def make_server(engine=None, text="def f(a):\n    return \n", encoding=positions.UTF16):
    ls = create_server(Settings(confidence_threshold=0.1), lambda spec: engine)
    ls.is_initialized = True
    ls.protocol.client_capabilities = types.ClientCapabilities()
    ls.encoding = ls.store.encoding = encoding
    if engine is not None:
        ls.serve(engine)
    ls.store.open(types.TextDocumentItem(uri=URI, language_id="python", version=1, text=text))
    return ls


def inline(line, ch, uri=URI, kind=types.InlineCompletionTriggerKind.Invoked):
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=ch),
        context=types.InlineCompletionContext(trigger_kind=kind),
    )


def run(ls, coro):
    async def main():
        try:
            return await coro
        finally:
            ls.models.close()

    return asyncio.run(main())


def test_completion_replaces_the_span_from_the_cursor():
    ls = make_server(FakeEngine())
    result = run(ls, ls.complete_inline(inline(1, 11)))
    item = result.items[0]
    assert item.insert_text == "x + 1" and item.filter_text == "x + 1"
    assert item.range.start == types.Position(line=1, character=11)
    assert item.range.end.line == 1


def test_not_ready_returns_none_without_touching_the_worker():
    ls = make_server(None)
    assert run(ls, ls.complete_inline(inline(1, 11))) is None
    assert ls.models.roles == {}  # no model, no worker to touch


def test_low_confidence_and_whitespace_are_dropped():
    for engine in (FakeEngine(confidence=0.01), FakeEngine(text=" \n ")):
        ls = make_server(engine)
        assert run(ls, ls.complete_inline(inline(1, 11))) is None


def test_typing_needs_the_automatic_bar_an_explicit_request_does_not(caplog):
    automatic = types.InlineCompletionTriggerKind.Automatic
    ls = make_server(FakeEngine(confidence=0.3))  # over 0.1, under the automatic 0.4
    with caplog.at_level("INFO", logger="coda_lsp.lsp.server"):
        assert run(ls, ls.complete_inline(inline(1, 11, kind=automatic))) is None
    assert "hidden: confidence 0.30 < 0.4 (automatic)" in caplog.text
    ls = make_server(FakeEngine(confidence=0.3))
    assert run(ls, ls.complete_inline(inline(1, 11))).items[0].insert_text == "x + 1"
    ls = make_server(FakeEngine(confidence=0.5))
    assert run(ls, ls.complete_inline(inline(1, 11, kind=automatic))).items


def test_result_for_an_outdated_version_is_dropped():
    engine = FakeEngine()
    engine.release.clear()
    ls = make_server(engine)

    async def main():
        task = asyncio.ensure_future(ls.complete_inline(inline(1, 11)))
        while not engine.jobs:
            await asyncio.sleep(0.001)
        ls.store.change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text="y = 2\n")]))
        engine.release.set()
        return await task

    assert run(ls, main()) is None


def test_bad_input_gives_empty_results():
    engine = FakeEngine()
    ls = make_server(engine)
    assert run(ls, ls.complete_inline(inline(0, 0, uri="file:///unknown.py"))) is None
    for line, ch in [(0, 999), (99, 5), (1, 0)]:
        ls = make_server(engine)
        run(ls, ls.complete_inline(inline(line, ch)))  # clamped, never raises
    ls = make_server(engine, text="a\x00b")
    assert run(ls, ls.complete_inline(inline(0, 1))) is None
    ls = make_server(engine, text="s = '😀'\n")
    result = run(ls, ls.complete_inline(inline(0, 6)))  # inside the surrogate pair
    assert result is None or result.items[0].range.start.character in (5, 7)


def test_disabled_languages_and_settings():
    ls = make_server(FakeEngine())
    ls.apply_settings({"enabledLanguages": ["rust"]})
    assert run(ls, ls.complete_inline(inline(1, 11))) is None


def test_hole_code_action_and_fill():
    ls = make_server(FakeEngine(text="return a"), text="def f(a):\n    ...\n")
    params = types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=URI),
        range=types.Range(start=types.Position(line=1, character=5),
                          end=types.Position(line=1, character=5)),
        context=types.CodeActionContext(diagnostics=[]))
    actions = ls.code_actions(params)
    assert actions and actions[0].title == "Fill this hole"
    assert actions[0].kind == types.CodeActionKind.QuickFix
    edit = run(ls, ls.fill_hole(URI, params.range))
    change = (edit.changes or {}).get(URI) or edit.document_changes[0].edits
    assert change[0].new_text == "return a"
    assert change[0].range.start == types.Position(line=1, character=4)


def test_a_hole_with_nothing_to_offer_tells_only_a_user_who_asked():
    """Chosen ("Fill this hole" resolved or run): a message. Listed for a client without
    resolve (every action filled up front): silence, the action is simply not offered."""
    ls = make_server(FakeEngine(text="return a", confidence=0.05), text="def f(a):\n    ...\n")
    shown = []
    ls.window_show_message = shown.append
    rng = types.Range(start=types.Position(line=1, character=5),
                      end=types.Position(line=1, character=5))
    assert run(ls, ls.fill_hole(URI, rng, asked=False)) is None and shown == []
    ls = make_server(FakeEngine(text="return a", confidence=0.05), text="def f(a):\n    ...\n")
    ls.window_show_message = shown.append
    assert run(ls, ls.fill_hole(URI, rng)) is None
    # FakeEngine writes one candidate per length, each under the bar; retries add theirs
    assert len(shown) == 1 and shown[0].message.startswith("coda-lsp: no fill for this hole: ")
    assert shown[0].message.endswith("were below the confidence threshold 0.1")
    assert shown[0].type == types.MessageType.Warning


def test_ghost_text_jobs_are_inline_and_hole_jobs_are_not():
    """The engine keeps an inline fill on a line that has code (engine.finishes_line); a hole
    may take as many lines as it needs."""
    engine = FakeEngine()
    ls = make_server(engine)
    run(ls, ls.complete_inline(inline(1, 11)))
    ls = make_server(engine, text="def f(a):\n    ...\n")
    hole = types.Range(start=types.Position(line=1, character=5),
                       end=types.Position(line=1, character=5))
    run(ls, ls.fill_hole(URI, hole))
    assert [job.inline for job in engine.jobs] == [True, False]


def test_latency_status_follows_completions_throttled():
    ls = make_server(FakeEngine())
    ls.state = "ready"
    sent, got = [], asyncio.Event()

    def notify(method, params):
        sent.append((asyncio.get_running_loop().time(), method, params))
        got.set()

    ls.protocol.notify = notify

    async def main():
        await ls.complete_inline(inline(1, 11))
        assert sent == []  # never inside the request: the response goes first
        await asyncio.wait_for(got.wait(), 5)
        got.clear()
        for _ in range(5):  # a burst within one interval: one more status, the latest value
            await ls.complete_inline(inline(1, 11))
        await asyncio.wait_for(got.wait(), 5)
        return ls.last_latency_ms

    latest = run(ls, main())
    assert [m for _, m, _ in sent] == ["coda/status", "coda/status"]
    assert sent[1][0] - sent[0][0] >= STATUS_INTERVAL - 1e-3
    status = sent[1][2]
    assert {k: status[k] for k in ("state", "message", "latencyMs")} == \
        {"state": "ready", "message": "", "latencyMs": latest}
    assert status["models"]["typing"] == status["models"]["fill"]  # one model serves both
    assert isinstance(latest, float) and latest > 0


class ChunkTokenizer:
    """``width`` characters per token, recording how much text each call tokenizes."""

    def __init__(self, width):
        self.width, self.calls = width, []

    def encode(self, text, allow_special=True):
        self.calls.append(len(text))
        return [hash(text[i:i + self.width]) for i in range(0, len(text), self.width)]

    def decode(self, ids):
        return "x" * self.width * len(ids)  # the only text these tests tokenize


def test_hot_path_tokenizes_a_window_sized_to_the_budget():
    from coda_lsp.core import prompt

    far = "x" * 100_000
    typical = ChunkTokenizer(4)  # code: ~4 characters per token
    p = prompt.build(typical, far, far, [16], 1024, 64)
    assert len(p.prefix_ids) + len(p.suffix_ids) == 1024 - 16  # the budget, less the canvas
    assert len(typical.calls) == 2  # one window per side, no retry
    assert max(typical.calls) <= 1024 * prompt.FIRST_CHARS_PER_TOKEN
    sparse = ChunkTokenizer(7)  # long identifiers: the first window is too short, then widened
    p = prompt.build(sparse, far, far, [16], 1024, 64)
    assert len(p.prefix_ids) + len(p.suffix_ids) == 1024 - 16
    assert max(sparse.calls) <= 1024 * prompt.CHARS_PER_TOKEN


def test_closing_a_document_drops_its_typing_carry(tiny_model_dir):
    engine = Engine.load(tiny_model_dir, device="cpu")
    ls = make_server(engine)
    automatic = types.InlineCompletionTriggerKind.Automatic
    run(ls, ls.complete_inline(inline(1, 11, kind=automatic)))
    assert URI in engine.carries   # typing keeps the document's context keys/values
    close = ls.protocol.fm.features[types.TEXT_DOCUMENT_DID_CLOSE]
    close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=URI)))
    assert URI not in engine.carries and ls.store.get(URI) is None


def test_handled_notifications_leave_no_futures_behind():
    """pygls keeps a future per handler it runs as a generator, a task or a thread, under the
    message id; a notification's id is made up and never answered, so without
    ``CodaProtocol._execute_handler`` every didChange kept one for good."""
    ls = make_server(FakeEngine())
    sent = []

    async def main():
        ls.protocol.transport = type("Sink", (), {"write": lambda self, data: sent.append(data),
                                                   "is_closing": lambda self: False})()
        other = "file:///other.py"
        messages = [{"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
            "textDocument": {"uri": other, "languageId": "python", "version": 1,
                             "text": "x = 1\n"}}}]
        for version in range(2, 52):
            messages.append({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
                "textDocument": {"uri": other, "version": version},
                "contentChanges": [{"range": {"start": {"line": 0, "character": 0},
                                              "end": {"line": 0, "character": 0}},
                                    "text": "a"}]}})
        messages.append({"jsonrpc": "2.0", "method": "workspace/didChangeConfiguration",
                         "params": {"settings": {"coda": {"steps": 4}}}})
        messages.append({"jsonrpc": "2.0", "method": "textDocument/didClose",
                         "params": {"textDocument": {"uri": other}}})
        for message in messages:
            ls.protocol.handle_message(message)
        for _ in range(50):  # the configuration handler is a coroutine: let it finish
            await asyncio.sleep(0.01)
            if not ls.protocol._request_futures:
                break
        return ls.store.get(other), ls.settings.steps

    closed, steps = run(ls, main())
    assert closed is None and steps == 4   # every message was handled...
    assert ls.protocol._request_futures == {}   # ...and none is remembered
