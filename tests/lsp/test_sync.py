"""Property: after random incremental edits the server's text equals the client's.

Edits carry emoji (surrogate pairs in UTF-16, four bytes in UTF-8), CJK, CRLF, lone CR and
tabs, and are sent through a real client under each profile, so both negotiated encodings
(VS Code: UTF-16, Neovim: UTF-8) are covered. The server's copy is read back with the
read-only ``coda/documentText`` request. Positions are computed here independently of
``coda_lsp.core.positions``.
"""

from __future__ import annotations

import bisect
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lsp_session import open_doc
from lsprotocol import types
from pygls.exceptions import JsonRpcException

pytestmark = pytest.mark.asyncio(loop_scope="module")

PIECES = ["a", "bc", "x = 1", " ", "\t", "\n", "\r\n", "\r", "é", "中", "😀", "𝄞", "👍🏽",
          "\u200d"]
pieces = st.lists(st.sampled_from(PIECES), max_size=6).map("".join)
# (start, length, replacement): start and length are folded into the current text
edit = st.tuples(st.integers(0, 10_000), st.integers(0, 12), pieces)
batches = st.lists(st.lists(edit, min_size=1, max_size=4), min_size=1, max_size=5)
_BREAK = re.compile(r"\r\n|\r|\n")


def position(text: str, offset: int, utf8: bool) -> types.Position:
    starts = [0] + [m.end() for m in _BREAK.finditer(text)]
    line = bisect.bisect_right(starts, offset) - 1
    before = text[starts[line] : offset]
    units = len(before.encode("utf-8")) if utf8 else len(before.encode("utf-16-le")) // 2
    return types.Position(line=line, character=units)


def expressible(text: str, offset: int) -> int:
    """No LSP position lies between the CR and LF of a CRLF: step back before the CR."""
    if 0 < offset < len(text) and text[offset - 1] == "\r" and text[offset] == "\n":
        return offset - 1
    return offset


async def document_text(client, uri: str):
    result = await client.protocol.send_request_async("coda/documentText", {"uri": uri})
    if result is None:
        return None
    return (result["text"], result["version"]) if isinstance(result, dict) else (
        result.text, result.version)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=pieces, batches=batches)
async def test_server_text_follows_random_incremental_edits(client, initial, batches):
    utf8 = client.profile == "neovim"
    text, version = initial, 1
    uri = open_doc(client, text, "python")
    for batch in batches:
        changes = []
        for start, length, new in batch:
            a = expressible(text, start % (len(text) + 1))
            b = expressible(text, min(len(text), a + length))
            changes.append(types.TextDocumentContentChangePartial(
                range=types.Range(start=position(text, a, utf8), end=position(text, b, utf8)),
                text=new))
            text = text[:a] + new + text[b:]
        version += 1
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=changes))
    assert await document_text(client, uri) == (text, version)
    client.text_document_did_close(types.DidCloseTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=uri)))


async def test_document_text_of_unknown_and_malformed_requests(client):
    assert await document_text(client, "file:///never/opened.py") is None
    with pytest.raises(JsonRpcException):
        await client.protocol.send_request_async("coda/documentText", {"path": 3})
