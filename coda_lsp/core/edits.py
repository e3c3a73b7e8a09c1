"""Fills as LSP edits in client coordinates: inline completion items and workspace edits.

Input is code-point offsets into a document's text; ``positions`` does the conversion to the
negotiated encoding. Nothing here decides *what* to insert, only where it goes.
"""

from __future__ import annotations

from lsprotocol import types

from coda_lsp.core.documents import Document


def line_ending(text: str) -> str:
    """The document's line terminator, judged by its first line break."""
    i = text.find("\n")
    if i > 0 and text[i - 1] == "\r":
        return "\r\n"
    if i < 0 and "\r" in text:
        return "\r"
    return "\n"


def to_range(doc: Document, start: int, end: int, encoding: str) -> types.Range:
    return types.Range(start=doc.position_at(start, encoding), end=doc.position_at(end, encoding))


def clamp_to_line(doc: Document, start: int, end: int) -> int:
    """End of an inline span, kept on the start's line (LSP requires one-line ranges)."""
    line = doc.lines.line_of(start)
    _, line_end = doc.lines.line_bounds(doc.text, line)
    return max(start, min(end, line_end))


def inline_item(
    doc: Document, start: int, end: int, text: str, encoding: str
) -> types.InlineCompletionItem:
    """An item replacing exactly [start, end); the filter text is what the range will hold."""
    return types.InlineCompletionItem(
        insert_text=text,
        filter_text=text,
        range=to_range(doc, start, end, encoding),
    )


def text_edit(doc: Document, start: int, end: int, text: str, encoding: str) -> types.TextEdit:
    return types.TextEdit(range=to_range(doc, start, end, encoding), new_text=text)


def workspace_edit(
    doc: Document, edit: types.TextEdit, versioned: bool = True
) -> types.WorkspaceEdit:
    """A workspace edit for one document; versioned ones are refused by a client that moved on."""
    if not versioned:
        return types.WorkspaceEdit(changes={doc.uri: [edit]})
    ident = types.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version)
    return types.WorkspaceEdit(
        document_changes=[types.TextDocumentEdit(text_document=ident, edits=[edit])]
    )
