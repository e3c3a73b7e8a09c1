"""Text-only reasoning about lines: the fallback when there is no tree, and length estimates.

Everything here works on raw bytes (any encoding, even invalid UTF-8) and never raises for
offsets inside the document. It knows nothing of tree-sitter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coda_syntax.languages import Language

BYTES_PER_TOKEN = 3.5  # rough average for code under a byte-level BPE
MAX_TOKENS = 256
_OPEN, _CLOSE = b"([{", b")]}"
_ASSIGN = re.compile(rb"(?<![=!<>:+\-*/%&|^~.])(?:[-+*/%&|^]|<<|>>|\*\*|//|\?\?|:)?=\s*$")
_TODO = re.compile(rb"^[ \t]*(?:#+|//+|--+|;+|/\*+)[ \t]*(?:TODO|FIXME)\b.*$", re.MULTILINE)
FILL_MARKER = b"<FILL>"
_WORD = re.compile(rb"\w$")


@dataclass(frozen=True)
class Line:
    """The line holding a byte offset: [start, end) excludes the line break."""

    start: int
    end: int
    before: bytes  # text from line start to the cursor
    after: bytes  # text from the cursor to line end

    @property
    def blank(self) -> bool:
        return not (self.before.strip() or self.after.strip())


def line_at(source: bytes, offset: int) -> Line:
    """The line containing offset, with CR of a CRLF left out."""
    start = source.rfind(b"\n", 0, offset) + 1
    end = source.find(b"\n", offset)
    end = len(source) if end < 0 else end
    if end > start and source[end - 1 : end] == b"\r" and offset < end:
        end -= 1
    end = max(end, offset)
    return Line(start, end, source[start:offset], source[offset:end])


def indent_of(text: bytes) -> int:
    """Indentation width with tabs counted as four columns."""
    stripped = text.lstrip(b" \t")
    return len(text[: len(text) - len(stripped)].replace(b"\t", b"    "))


def previous_code_line(source: bytes, offset: int, comment: bytes) -> tuple[int, bytes] | None:
    """(start, text) of the last line before offset's line with code (not blank, not comment)."""
    end = source.rfind(b"\n", 0, offset)
    while end >= 0:
        start = source.rfind(b"\n", 0, end) + 1
        text = source[start:end].rstrip(b"\r")
        if text.strip() and not (comment and text.lstrip().startswith(comment)):
            return start, text
        end = start - 1
    return None


def opens_block(language: Language | None, text: bytes) -> bool:
    """Whether a line opens a block: known openers, or a generic `:`/`{`/`(`/`[` ending."""
    stripped = text.strip()
    if not stripped:
        return False
    if language is None:
        return stripped.endswith((b":", b"{", b"(", b"[", b"=>", b" do", b" then"))
    for opener in language.openers:
        token = opener.encode()
        before = stripped[: len(stripped) - len(token)]
        if stripped.endswith(token) and not (token.isalpha() and _WORD.search(before)):
            return True  # a keyword opener must be a whole word: `do`, not `undo`
    words = stripped.split()
    return any(words[: len(s.split())] == s.encode().split() for s in language.opener_starts)


def open_paren_end(line: Line, offset: int) -> int | None:
    """If the cursor sits inside an unclosed `(` on its line, where its `)` is (or line end)."""
    depth = 0
    for ch in reversed(line.before):
        if ch in _CLOSE:
            depth += 1
        elif ch in _OPEN:
            if depth == 0:
                if ch != ord("("):
                    return None
                break
            depth -= 1
    else:
        return None
    depth = 0
    for i, ch in enumerate(line.after):
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            if depth == 0:
                return offset + i
            depth -= 1
    return line.end


def after_assignment(line: Line) -> bool:
    """Whether the typed text on the line ends with an assignment operator (`=`, `+=`, `:=`)."""
    return bool(_ASSIGN.search(line.before)) and bool(line.before.strip(b" \t=:"))


def todo_comments(source: bytes) -> list[tuple[int, int]]:
    """Byte ranges of whole-line TODO/FIXME comments, for languages without a grammar."""
    spans = []
    for m in _TODO.finditer(source):
        start = m.start() + indent_width_bytes(m.group(0))
        spans.append((start, m.end() - (1 if m.group(0).endswith(b"\r") else 0)))
    return spans


def indent_width_bytes(text: bytes) -> int:
    return len(text) - len(text.lstrip(b" \t"))


def fill_markers(source: bytes) -> list[tuple[int, int]]:
    """Byte ranges of every `<FILL>` marker."""
    found, at = [], source.find(FILL_MARKER)
    while at >= 0:
        found.append((at, at + len(FILL_MARKER)))
        at = source.find(FILL_MARKER, at + len(FILL_MARKER))
    return found


# Lines a span of this kind usually covers, and its share of a typical line when single-line.
_LINES = {"function.inner": 6.0, "block.inner": 3.0, "hole": 4.0}
_LINE_SHARE = {
    "line": 1.0,
    "statement.outer": 1.0,
    "assignment.rhs": 0.7,
    "expression": 0.6,
    "call.inner": 0.6,
    "string.inner": 0.6,
}


def estimate_lengths(source: bytes, start: int, kind: str, typed: bytes = b"") -> tuple[int, ...]:
    """Up to four sorted candidate mask counts (tokens) for a span of `kind` starting at `start`.

    Scales with the neighbouring lines: long lines → more tokens per line, deep indentation →
    shorter bodies; text already typed on the line leaves less to generate.
    """
    window = source[max(0, start - 600) : start + 600].split(b"\n")[1:-1] or [source]
    lines = [w.strip() for w in window if w.strip()]
    per_line = sum(map(len, lines)) / len(lines) / BYTES_PER_TOKEN if lines else 10.0
    per_line = min(max(per_line, 8.0), 30.0)
    if kind in _LINES:
        depth = indent_of(line_at(source, start).before) / 4
        base = _LINES[kind] * per_line / (1 + 0.2 * depth)
        factors = (0.5, 1.0, 2.0, 4.0) if kind == "function.inner" else (0.5, 1.0, 2.0)
    else:
        left = per_line - len(typed.strip()) / BYTES_PER_TOKEN
        base = max(left * _LINE_SHARE.get(kind, 1.0), 4.0)
        factors = (0.5, 1.0, 2.0)
    sizes = {min(MAX_TOKENS, max(2, 2 * round(base * f / 2))) for f in factors}
    return tuple(sorted(sizes))
