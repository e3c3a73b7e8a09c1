"""Open documents: text, version, line index and syntax tree, kept in step with the client.

The server owns its document store instead of pygls' workspace so that one position encoding
(ours) applies to every edit, and so that each edit also reaches the document's incremental
syntax tree (``spans.Syntax``). All methods run on the event loop thread; nothing here touches
the model. The store never raises on bad input: unknown URIs give ``None`` and out-of-range
edit positions are clamped (see ``positions``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lsprotocol import types

from coda_lsp.core import positions

# Above this size the document keeps its text but gets no tree-sitter tree (the line-based
# fallback), so multi-megabyte files never stall typing.
MAX_PARSED_BYTES = 2_000_000


class SyntaxLike(Protocol):
    def edit(self, start_byte: int, old_end_byte: int, new_bytes: bytes) -> None: ...


# (language_id, uri, source bytes, parse?) -> syntax object (spans.Syntax in production)
SyntaxFactory = Callable[[str, str, bytes, bool], Any]


@dataclass
class Document:
    uri: str
    language_id: str
    version: int
    text: str
    lines: positions.LineIndex
    syntax: Any = None
    binary: bool = False

    @property
    def parsed(self) -> bool:
        return not self.binary and positions.utf8_len(self.text) <= MAX_PARSED_BYTES

    def offset_at(self, position: types.Position, encoding: str) -> int:
        return positions.position_to_offset(self.text, self.lines, position, encoding)

    def position_at(self, offset: int, encoding: str) -> types.Position:
        return positions.offset_to_position(self.text, self.lines, offset, encoding)

    def byte_at(self, offset: int) -> int:
        return positions.offset_to_byte(self.text, offset)

    def offset_of_byte(self, byte: int) -> int:
        return positions.byte_to_offset(self.text, byte)


def _looks_binary(text: str) -> bool:
    return "\x00" in text


@dataclass
class DocumentStore:
    encoding: str = positions.UTF16
    syntax_factory: SyntaxFactory | None = None
    docs: dict[str, Document] = field(default_factory=dict)

    def get(self, uri: str) -> Document | None:
        return self.docs.get(uri)

    def open(self, item: types.TextDocumentItem) -> Document:
        doc = Document(
            uri=item.uri,
            language_id=item.language_id,
            version=item.version,
            text=item.text,
            lines=positions.LineIndex.of(item.text),
            binary=_looks_binary(item.text),
        )
        doc.syntax = self._new_syntax(doc)
        self.docs[item.uri] = doc
        return doc

    def close(self, uri: str) -> None:
        self.docs.pop(uri, None)

    def change(self, params: types.DidChangeTextDocumentParams) -> Document | None:
        doc = self.docs.get(params.text_document.uri)
        if doc is None:
            return None
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                self._apply_partial(doc, change.range, change.text)
            else:
                self._replace_all(doc, change.text)
        doc.version = params.text_document.version
        return doc

    def _apply_partial(self, doc: Document, rng: types.Range, new: str) -> None:
        start = doc.offset_at(rng.start, self.encoding)
        end = max(start, doc.offset_at(rng.end, self.encoding))
        old_text = doc.text
        doc.text = old_text[:start] + new + old_text[end:]
        doc.lines.replaced(doc.text, start, end, len(new))
        binary = _looks_binary(doc.text)
        if binary != doc.binary:  # NUL bytes appeared or went away: rebuild, do not patch
            doc.binary = binary
            doc.syntax = self._new_syntax(doc)
            return
        if doc.syntax is None:
            return
        start_byte = positions.offset_to_byte(old_text, start)
        old_end_byte = start_byte + positions.utf8_len(old_text[start:end])
        try:
            doc.syntax.edit(start_byte, old_end_byte, positions.to_bytes(new))
        except Exception:
            doc.syntax = self._new_syntax(doc)

    def _replace_all(self, doc: Document, text: str) -> None:
        doc.text = text
        doc.lines = positions.LineIndex.of(text)
        doc.binary = _looks_binary(text)
        doc.syntax = self._new_syntax(doc)

    def _new_syntax(self, doc: Document) -> Any:
        if self.syntax_factory is None:
            return None
        try:
            return self.syntax_factory(
                doc.language_id, doc.uri, positions.to_bytes(doc.text), doc.parsed
            )
        except Exception:
            return None
