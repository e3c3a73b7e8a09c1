"""Edits land in client coordinates; fills are tidied against the suffix and ranked."""

import pytest
from lsprotocol import types

from coda_lsp.core import edits
from coda_lsp.core.documents import DocumentStore
from coda_lsp.core.engine import Fill, finishes_line, rank, tidy
from coda_lsp.core.positions import UTF8, UTF16


def doc_of(text):
    return DocumentStore().open(
        types.TextDocumentItem(uri="file:///a.py", language_id="python", version=3, text=text))


def test_inline_item_range_in_utf16_and_utf8():
    doc = doc_of("s = '😀' + f(\nnext\n")
    start = doc.text.index("f(") + 2
    end = edits.clamp_to_line(doc, start, len(doc.text))
    item = edits.inline_item(doc, start, end, "x)", UTF16)
    assert item.range.start == types.Position(line=0, character=13)
    assert item.range.end == item.range.start  # clamped to the end of the first line
    assert item.filter_text == item.insert_text == "x)"
    assert edits.inline_item(doc, start, end, "x)", UTF8).range.start.character == 15


def test_workspace_edit_is_versioned():
    doc = doc_of("a\r\nb")
    edit = edits.text_edit(doc, 0, 1, "z", UTF16)
    ws = edits.workspace_edit(doc, edit)
    assert ws.document_changes[0].text_document.version == 3
    assert edits.workspace_edit(doc, edit, versioned=False).changes == {"file:///a.py": [edit]}


def test_line_endings():
    assert edits.line_ending("a\r\nb\n") == "\r\n"
    assert edits.line_ending("a\nb") == "\n"
    assert edits.line_ending("a\rb") == "\r"
    assert edits.line_ending("") == "\n"


def test_tidy_never_duplicates_the_suffix():
    assert tidy("x + 1)", ")\n") == "x + 1"
    assert tidy("y = 2\n    return y", "\n    return y\n") == "y = 2"
    assert tidy("value\n\n", "\nmore") == "value"
    assert tidy("a\nb", "\r\nz", "\r\n") == "a\r\nb"


def test_tidy_does_not_indent_an_indented_line_twice():
    assert tidy(" self.items.pop()", "\n", prefix="    def pop(self):\n        ") == \
        "self.items.pop()"
    assert tidy("\tx", "\n", prefix="if a:\n\t") == "x"
    # the model's indentation is kept where the line has none yet, or after code
    assert tidy("    x = 1", "\n", prefix="def f():\n") == "    x = 1"
    assert tidy(" b", ")\n", prefix="f(a,") == " b"
    assert tidy("  ", "") == ""


@pytest.mark.parametrize("prefix, one_line", [
    ("for item in ", True),                  # finishing a statement
    ("x = f(a, ", True),
    ("    ", False),                          # a fresh line: a block may follow
    ("", False),                              # an empty file
    ("a = 1\n", False),                      # a line's start: lines may go above the code
    ("def pop(self):", False),               # after a block opener
    ("items = [", False),
    ("if ok {", False),
])
def test_finishes_line(prefix, one_line):
    assert finishes_line(prefix) is one_line


def test_tidy_keeps_a_one_line_fill_on_its_line():
    assert tidy("item in items:\n    print(item)", "\n", one_line=True) == "item in items:"
    assert tidy("a\r\nb", "\r\n", "\r\n", one_line=True) == "a"
    assert tidy("\n    return x", "\n", one_line=True) == ""   # rank drops it
    assert tidy("a\nb", "\n") == "a\nb"                      # holes keep their lines


def test_rank_drops_and_orders():
    fills = [Fill("   ", 0.9, 4), Fill("low", 0.01, 8), Fill("bad(", 0.8, 8), Fill("ok", 0.5, 16)]
    ranked = rank(fills, 0.1, lambda t: 1 if t.endswith("(") else 0)
    assert [f.text for f in ranked] == ["ok", "bad("]
    assert ranked[1].errors == 1


def test_rank_cuts_fills_where_a_character_is_broken():
    fills = [Fill("caf\ufffdxyz", 0.9, 4), Fill("\ufffd", 0.95, 4), Fill("cafe", 0.5, 4)]
    assert [f.text for f in rank(fills, 0.1, lambda t: 0)] == ["caf", "cafe"]
