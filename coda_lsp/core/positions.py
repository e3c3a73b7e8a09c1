"""Coordinate conversions: the one place that knows about UTF-16, UTF-8 and code points.

LSP columns count code units of the negotiated encoding (UTF-16 unless the client offers
UTF-8 or UTF-32), Python strings index code points, tree-sitter counts UTF-8 bytes. Every
other module talks in code-point offsets or byte offsets and asks this module to convert.

Out-of-range input is clamped, never rejected: a column past the end of a line means the end
of that line, a line past the end of the document means the end of the document, and a UTF-16
column that falls inside a surrogate pair (or a UTF-8 column inside a multi-byte sequence)
rounds down to the start of that character. Lone surrogates (binary content sent as JSON) are
carried through with ``surrogatepass`` so that nothing here ever raises; ``for_model`` replaces
them where they must go (the tokenizer).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from lsprotocol import types

UTF8 = types.PositionEncodingKind.Utf8
UTF16 = types.PositionEncodingKind.Utf16
UTF32 = types.PositionEncodingKind.Utf32

_TERMINATOR = re.compile(r"\r\n|\r|\n")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # in a str only a lone one can be: pairs are joined
_ANY_BREAK = re.compile(r"[\r\n]")


def choose_encoding(client: types.ClientCapabilities | None) -> types.PositionEncodingKind:
    """UTF-16 is mandatory in LSP; we switch to UTF-8 only when the client offers it."""
    offered = (client.general.position_encodings if client and client.general else None) or []
    return UTF8 if UTF8 in offered else UTF16


def _units(ch: str, encoding: str) -> int:
    """Width of one code point in the given encoding's code units."""
    cp = ord(ch)
    if encoding == UTF16:
        return 2 if cp > 0xFFFF else 1
    if encoding == UTF8:
        if cp < 0x80:
            return 1
        if cp < 0x800:
            return 2
        return 3 if cp <= 0xFFFF else 4
    return 1


def column_to_index(line: str, column: int, encoding: str) -> int:
    """Code-point index within ``line`` for an LSP column; clamped, rounds down mid-character."""
    if column <= 0:
        return 0
    if encoding == UTF32 or line.isascii():
        return min(column, len(line))
    used = 0
    for i, ch in enumerate(line):
        used += _units(ch, encoding)
        if used > column:
            return i
    return len(line)


def index_to_column(line: str, index: int, encoding: str) -> int:
    """LSP column for a code-point index within ``line``."""
    index = max(0, min(index, len(line)))
    if encoding == UTF32 or line.isascii():
        return index
    return sum(_units(ch, encoding) for ch in line[:index])


def utf8_len(text: str) -> int:
    """Number of UTF-8 bytes in ``text`` (lone surrogates count as three, as we encode them)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def from_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def for_model(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD: a tokenizer refuses them (they
    are not Unicode scalar values). One code point for one, so offsets into it still hold."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


@dataclass
class LineIndex:
    """Start offsets (code points) of every line of a text, updated incrementally on edits.

    Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r``, as the LSP specification says.
    """

    starts: list[int]

    @classmethod
    def of(cls, text: str) -> LineIndex:
        return cls([0] + [m.end() for m in _TERMINATOR.finditer(text)])

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset) - 1

    def line_bounds(self, text: str, line: int) -> tuple[int, int]:
        """[start, end) of a line's content, without its terminator."""
        start = self.starts[line]
        end = self.starts[line + 1] if line + 1 < len(self.starts) else len(text)
        while end > start and text[end - 1] in "\r\n":
            end -= 1
        return start, end

    def replaced(self, new_text: str, start: int, old_end: int, inserted: int) -> None:
        """Update after ``[start, old_end)`` became ``inserted`` code points of ``new_text``.

        Line starts before ``start`` and after ``old_end`` keep their meaning (shifted); only
        starts inside the new region, where a CR and an LF may have joined or split, are
        recomputed.
        """
        lo = bisect.bisect_left(self.starts, start)
        hi = bisect.bisect_right(self.starts, old_end)
        delta = inserted - (old_end - start)
        tail = [s + delta for s in self.starts[hi:]]
        fresh: list[int] = []
        limit = start + inserted
        for m in _ANY_BREAK.finditer(new_text, max(start - 1, 0), min(limit, len(new_text))):
            s = m.end()
            if s < start or s > limit:
                continue
            if new_text[s - 1] == "\r" and s < len(new_text) and new_text[s] == "\n":
                continue
            fresh.append(s)
        self.starts[lo:] = fresh + tail
        if not self.starts or self.starts[0] != 0:
            self.starts.insert(0, 0)  # an edit at offset 0 removed the first line's start


def position_to_offset(
    text: str, index: LineIndex, position: types.Position, encoding: str
) -> int:
    """Code-point offset of an LSP position, clamped into the document."""
    if position.line < 0:
        return 0
    if position.line >= len(index.starts):
        return len(text)
    start, end = index.line_bounds(text, position.line)
    return start + column_to_index(text[start:end], position.character, encoding)


def offset_to_position(
    text: str, index: LineIndex, offset: int, encoding: str
) -> types.Position:
    """LSP position of a code-point offset (clamped into the document)."""
    offset = max(0, min(offset, len(text)))
    line = index.line_of(offset)
    start, end = index.line_bounds(text, line)
    column = index_to_column(text[start:end], min(offset, end) - start, encoding)
    return types.Position(line=line, character=column)


def offset_to_byte(text: str, offset: int) -> int:
    return utf8_len(text[:offset])


def byte_to_offset(text: str, byte: int) -> int:
    """Code-point offset of a UTF-8 byte offset; rounds down inside a multi-byte character."""
    if text.isascii():
        return max(0, min(byte, len(text)))
    data = to_bytes(text)
    byte = max(0, min(byte, len(data)))
    while byte > 0 and byte < len(data) and (data[byte] & 0xC0) == 0x80:
        byte -= 1
    return len(from_bytes(data[:byte]))
