"""The document store follows the client's edits exactly, in every position encoding."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types

from coda_lsp.core.documents import DocumentStore
from coda_lsp.core.positions import UTF8, UTF16, UTF32

URI = "file:///t.py"


class ByteMirror:
    """A fake syntax tree that only replays byte edits, to check they are the right ones."""

    def __init__(self, lang, uri, data, parse):
        self.data = bytearray(data)
        self.parse = parse

    def edit(self, start, old_end, new):
        self.data[start:old_end] = new


def client_position(text: str, offset: int, encoding: str) -> types.Position:
    """An independent client-side conversion, written the slow obvious way."""
    before = text[:offset]
    breaks = list(re.finditer(r"\r\n|\r|\n", before))
    line_start = breaks[-1].end() if breaks else 0
    col_text = before[line_start:]
    if encoding == UTF16:
        col = len(col_text.encode("utf-16-le", "surrogatepass")) // 2
    elif encoding == UTF8:
        col = len(col_text.encode("utf-8", "surrogatepass"))
    else:
        col = len(col_text)
    return types.Position(line=len(breaks), character=col)


def open_doc(store, text, version=1):
    return store.open(types.TextDocumentItem(uri=URI, language_id="python", version=version,
                                             text=text))


def change(store, version, *changes):
    return store.change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=version),
        content_changes=list(changes)))


def partial(text, a, b, new, enc):
    return types.TextDocumentContentChangePartial(
        range=types.Range(start=client_position(text, a, enc), end=client_position(text, b, enc)),
        text=new)


pieces = st.sampled_from(["a", "def f():\n", "\r\n", "\n", "😀", "\t", "é", " ", "\r"])


@settings(max_examples=150, deadline=None)
@given(st.lists(pieces, max_size=10), st.sampled_from([UTF8, UTF16, UTF32]), st.data())
def test_random_edits_keep_text_and_bytes_in_step(initial, encoding, data):
    store = DocumentStore(encoding=encoding, syntax_factory=ByteMirror)
    text = "".join(initial)
    doc = open_doc(store, text)
    for version in range(2, 8):
        a = data.draw(st.integers(0, len(text)))
        b = data.draw(st.integers(a, len(text)))
        # a client never puts a position between CR and LF
        if text[a - 1 : a + 1] == "\r\n" or text[b - 1 : b + 1] == "\r\n":
            continue
        new = "".join(data.draw(st.lists(pieces, max_size=4)))
        change(store, version, partial(text, a, b, new, encoding))
        text = text[:a] + new + text[b:]
        assert doc.text == text
        assert bytes(doc.syntax.data) == text.encode("utf-8")
        assert doc.version == version


def test_whole_document_change_and_unknown_uri():
    store = DocumentStore(syntax_factory=ByteMirror)
    doc = open_doc(store, "x = 1\n")
    change(store, 2, types.TextDocumentContentChangeWholeDocument(text="y = 2\n"))
    assert doc.text == "y = 2\n" and doc.version == 2
    assert store.get("file:///nope") is None
    params = types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri="file:///nope", version=1),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text="z")])
    assert store.change(params) is None


def test_edit_past_the_end_is_clamped():
    store = DocumentStore()
    doc = open_doc(store, "ab\ncd")
    far = types.Position(line=40, character=3)
    change(store, 2, types.TextDocumentContentChangePartial(
        range=types.Range(start=types.Position(line=0, character=99), end=far), text="!"))
    assert doc.text == "ab!"


def test_binary_and_large_documents_skip_parsing():
    store = DocumentStore(syntax_factory=ByteMirror)
    assert open_doc(store, "a\x00b").binary
    big = open_doc(store, "x = 1\n" * 900_000)  # about 5 MB
    assert big.syntax.parse is False
    change(store, 2, partial(big.text, 4, 5, "2", UTF16))
    assert big.text.startswith("x = 2\nx = 1")


def test_close_forgets():
    store = DocumentStore()
    open_doc(store, "x")
    store.close(URI)
    store.close(URI)
    assert store.get(URI) is None
