"""Which bytes the diffusion model regenerates: inline spans, holes, widened selections.

Byte offsets in and out; the positions module converts to LSP coordinates. Span kinds are the
capture names of grammars/README.md. Every entry point degrades to the line/indentation
fallback when there is no grammar or no usable tree, and never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import tree_sitter

from coda_syntax import text
from coda_syntax.syntax import Syntax, error_nodes, first_named_child_for_byte

__all__ = ["Span", "Syntax", "choose", "error_counter", "hole_at", "holes", "widen", "new_errors"]

log = logging.getLogger(__name__)

BODY_KINDS = ("function.inner", "block.inner")
# Ties between captures over the same bytes go to the more specific kind.
PRIORITY = (
    "function.inner",
    "block.inner",
    "string.inner",
    "call.inner",
    "assignment.rhs",
    "expression",
    "statement.outer",
)
_DELIMITERS = frozenset(b"()[]{}<>\"'`|")


@dataclass(frozen=True)
class Span:
    """Bytes [start, end) to regenerate, what they are, and candidate mask counts (tokens)."""

    start: int
    end: int
    kind: str
    lengths: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"bad span [{self.start}, {self.end})")


@dataclass(frozen=True)
class _Found:
    kind: str
    start: int  # inner region: delimiters excluded
    end: int
    node: tree_sitter.Node


def choose(syn: Syntax, cursor: int) -> Span:
    """The inline span at the cursor: starts at the cursor and stays on the cursor's line."""
    cursor = min(max(0, cursor), len(syn.source))
    try:
        return _choose(syn, cursor)
    except Exception:  # a bad grammar or query must not cost the user a completion
        log.exception("choose failed; using the line fallback")
        line = text.line_at(syn.source, cursor)
        return Span(cursor, line.end, "line", text.estimate_lengths(syn.source, cursor, "line"))


def _choose(syn: Syntax, cursor: int) -> Span:
    source = syn.source
    line = text.line_at(source, cursor)
    if line.blank:
        kind = _blank_line_kind(syn, cursor, line)
        return Span(cursor, line.end, kind, text.estimate_lengths(source, cursor, kind))
    if not line.before.strip():
        # In the indentation before code: an insertion, never a rewrite of the code after it.
        kind = "statement.outer" if syn.tree else "line"
        return Span(cursor, cursor, kind, text.estimate_lengths(source, cursor, kind))
    found = _innermost(syn, cursor, cursor, inline=True) if syn.tree else None
    kind, end = _text_guess(line, cursor)
    if found is not None and (found.kind != "statement.outer" or kind == "line"):
        kind, end = found.kind, found.end
    elif syn.tree is None and kind != "line":
        kind = "line"  # without a grammar only the fallback kinds are promised
    end = min(max(end, cursor), line.end)
    if kind == "statement.outer" and end > cursor and source[end - 1 : end] == b";":
        end -= 1  # the terminator stays in the suffix, as in the text guess
    return Span(cursor, end, kind, text.estimate_lengths(source, cursor, kind, line.before))


def _text_guess(line: text.Line, cursor: int) -> tuple[str, int]:
    paren_end = text.open_paren_end(line, cursor)
    if paren_end is not None:
        return "call.inner", paren_end
    end = line.end - (len(line.after) - len(line.after.rstrip(b" \t;")))
    end = max(end, cursor)  # a statement's `;` stays in the suffix
    if text.after_assignment(line):
        return "assignment.rhs", end
    return "line", end


def _blank_line_kind(syn: Syntax, cursor: int, line: text.Line) -> str:
    """Body kind after a block opener, else a new statement (or plain line)."""
    fallback = "statement.outer" if syn.tree else "line"
    lang = syn.language
    prev = text.previous_code_line(syn.source, cursor, lang.comment.encode() if lang else b"")
    if prev is None or not text.opens_block(lang, prev[1]):
        return fallback
    if lang is not None and lang.offside and text.indent_of(line.before) <= text.indent_of(prev[1]):
        return fallback  # dedented below the opener: the block is over
    if syn.tree is not None:
        anchor = prev[0] + len(prev[1].rstrip())
        found = _innermost(syn, anchor, _body_start(syn, anchor), inline=False, opener=anchor)
        if found is not None:
            return found.kind
    return "block.inner"


def _body_start(syn: Syntax, anchor: int) -> int:
    """Where the node after the opener token starts (comments skipped): the body, if any."""
    node = syn.tree.root_node.descendant_for_byte_range(max(0, anchor - 1), anchor)
    while node is not None and node.next_sibling is None and node.parent is not None:
        node = node.parent  # `)` closes the parameters; the body follows the parameters
    after = node.next_sibling if node is not None else None
    while after is not None and after.is_extra:
        after = after.next_sibling
    return after.start_byte if after is not None else anchor


def _captures(syn: Syntax, kind: str, lo: int, hi: int) -> dict[str, list[tree_sitter.Node]]:
    query = syn.language.query(kind) if syn.language and syn.tree else None
    if query is None:
        return {}
    qc = tree_sitter.QueryCursor(query)
    qc.set_byte_range(max(0, lo - 1), min(len(syn.source), hi + 1))
    return qc.captures(syn.tree.root_node)


def _inner(node: tree_sitter.Node) -> tuple[int, int]:
    """The node's bytes without its own bracket or quote delimiters."""
    if node.child_count >= 2:
        first, last = node.children[0], node.children[-1]
        if _is_delimiter(first) and _is_delimiter(last):
            return first.end_byte, max(first.end_byte, last.start_byte)
    return node.start_byte, node.end_byte


def _is_delimiter(node: tree_sitter.Node) -> bool:
    if node.child_count or node.is_missing or not 0 < node.end_byte - node.start_byte <= 4:
        return False
    token = (node.text or b"").lstrip(b"fFrRbBuU@$")
    return bool(token) and all(ch in _DELIMITERS for ch in token)


def _innermost(
    syn: Syntax, lo: int, hi: int, *, inline: bool, opener: int | None = None
) -> _Found | None:
    """The smallest allowed capture whose inner region contains [lo, hi]; ties by PRIORITY."""
    best: _Found | None = None
    for kind, nodes in _captures(syn, "spans", lo, hi).items():
        if kind not in PRIORITY:
            continue
        if opener is not None and kind not in BODY_KINDS:
            continue
        for node in nodes:
            start, end = _inner(node)
            if opener is not None:
                # A body belongs to the opener when it starts right after it.
                prev = node.prev_sibling
                while prev is not None and prev.is_extra:  # comments between opener and body
                    prev = prev.prev_sibling
                start = prev.end_byte if prev is not None and start > opener else start
                if start != opener:
                    continue
            elif not start <= lo <= hi <= end:
                continue
            if inline and kind in BODY_KINDS and syn.source[start:end].strip():
                continue  # mid-line inside a non-empty body is not a body completion
            cand = _Found(kind, start, end, node)
            if best is None or _rank(cand) < _rank(best):
                best = cand
    return best


def _rank(found: _Found) -> tuple[int, int]:
    return found.end - found.start, PRIORITY.index(found.kind)


def holes(syn: Syntax) -> list[Span]:
    """Every explicit hole in the document, in order."""
    try:
        return [_hole_span(syn, s, e) for s, e in _hole_ranges(syn, 0, len(syn.source))]
    except Exception:
        log.exception("holes failed")
        return []


def hole_at(syn: Syntax, cursor: int) -> Span | None:
    """The innermost hole containing the cursor (ends inclusive), or None.

    Editors often leave the cursor at column 0 or in a line's leading indentation (VS Code
    "Go to line", Neovim ``2G``) or at its end: there the cursor means the line, so the hole
    on that line nearest to the cursor is taken (the first one from the start, the last from
    the end).
    """
    cursor = min(max(0, cursor), len(syn.source))
    try:
        return _hole_containing(syn, cursor) or _hole_on_line(syn, cursor)
    except Exception:
        log.exception("hole_at failed")
        return None


def _hole_containing(syn: Syntax, cursor: int) -> Span | None:
    inside = [(e - s, s, e) for s, e in _hole_ranges(syn, cursor, cursor) if s <= cursor <= e]
    return _hole_span(syn, *min(inside)[1:]) if inside else None


def _hole_on_line(syn: Syntax, cursor: int) -> Span | None:
    line = text.line_at(syn.source, cursor)
    if line.blank:
        return None
    content = line.before + line.after
    first = line.start + text.indent_width_bytes(content)  # first byte of code
    last = line.start + len(content.rstrip())  # just past the last byte of code
    if cursor < first or cursor == line.start:
        # At the first character of code the cursor is on that code, not on the line (the
        # fixtures' `| hole none`); column 0 and the indentation before it mean the line.
        on_line = [(s, e) for s, e in _hole_ranges(syn, first, last) if first <= s <= last]
        pick = min(on_line, key=lambda r: (r[0], r[1] - r[0]), default=None)
    elif cursor >= last:
        on_line = [(s, e) for s, e in _hole_ranges(syn, first, last) if first <= e <= last]
        pick = min(on_line, key=lambda r: (-r[1], r[1] - r[0]), default=None)
    else:
        return None  # inside the line's code but in no hole: not a hole request
    return _hole_span(syn, *pick) if pick is not None else None


def _hole_ranges(syn: Syntax, lo: int, hi: int) -> list[tuple[int, int]]:
    found = set(text.fill_markers(syn.source))
    caps = _captures(syn, "holes", lo, hi)
    if syn.tree is not None and syn.language is not None and syn.language.query("holes"):
        found.update((n.start_byte, n.end_byte) for n in caps.get("hole", ()))
    else:
        found.update(text.todo_comments(syn.source))
    return sorted((s, e) for s, e in found if e >= lo and s <= hi)


def _hole_span(syn: Syntax, start: int, end: int) -> Span:
    """A hole's span; its lengths depend on whether it is a whole body, a line or less."""
    source = syn.source
    hole_text = source[start:end].strip()
    sizing = "hole"
    for body_kind, nodes in _captures(syn, "spans", start, end).items():
        if body_kind not in BODY_KINDS:
            continue
        for node in nodes:
            s, e = _inner(node)
            if s <= start and end <= e and source[s:e].strip() == hole_text:
                if sizing == "hole" or body_kind == "function.inner":
                    sizing = body_kind
    if sizing == "hole" and text.line_at(source, start).before.strip():
        sizing = "expression"  # a hole inside a line, e.g. `x = <FILL>`
    return Span(start, end, "hole", text.estimate_lengths(source, start, sizing))


def widen(syn: Syntax, start_byte: int, end_byte: int) -> Span:
    """A selection grown to whole syntax nodes (whole lines without a tree)."""
    size = len(syn.source)
    start, end = sorted((min(max(0, start_byte), size), min(max(0, end_byte), size)))
    try:
        return _widen(syn, start, end)
    except Exception:
        log.exception("widen failed")
        return Span(start, end, "line", text.estimate_lengths(syn.source, start, "line"))


def _widen(syn: Syntax, start: int, end: int) -> Span:
    source = syn.source
    chunk = source[start:end]
    if chunk.strip():  # whitespace at the edges of a selection is not meant
        start += len(chunk) - len(chunk.lstrip())
        end -= len(chunk) - len(chunk.rstrip())
    if syn.tree is None:
        first, last = text.line_at(source, start), text.line_at(source, end)
        start = first.start + text.indent_width_bytes(first.before + first.after)
        start, end = min(start, end), max(last.end, end)
        kind = "line" if b"\n" not in source[start:end] else "block.inner"
        return Span(start, end, kind, text.estimate_lengths(source, start, kind))
    node = syn.tree.root_node.named_descendant_for_byte_range(start, end)
    if node is not None and (node.start_byte, node.end_byte) != (start, end):
        kids = [c for c in node.named_children if c.end_byte > start and c.start_byte < end]
        inner_start, inner_end = _inner(node)
        if len(kids) >= 2 and inner_start <= start and end <= inner_end:
            # Several siblings (statements, arguments): keep exactly those, whole.
            start, end = min(start, kids[0].start_byte), max(end, kids[-1].end_byte)
        elif node.parent is not None:
            start, end = node.start_byte, node.end_byte
    kind = _kind_of_range(syn, start, end)
    return Span(start, end, kind, text.estimate_lengths(source, start, kind))


def _kind_of_range(syn: Syntax, start: int, end: int) -> str:
    for kind, nodes in sorted(_captures(syn, "spans", start, end).items(),
                              key=lambda kv: PRIORITY.index(kv[0]) if kv[0] in PRIORITY else 99):
        if kind in PRIORITY and any(_inner(n) == (start, end) or (n.start_byte, n.end_byte) ==
                                    (start, end) for n in nodes):
            return kind
    return "block.inner" if b"\n" in syn.source[start:end] else "expression"


# A fill is validated by parsing the smallest enclosing node (from the top) of at most this many
# bytes, not the whole document: tree-sitter's incremental reparse still costs ~0.3 ms per KB
# (tens of ms per candidate in a 100 KB file, on the event loop).
VALIDATION_BYTES = 16_384


def new_errors(syn: Syntax, span: Span, fill_bytes: bytes) -> int:
    """ERROR/MISSING nodes overlapping the span after the fill minus before (0 without a tree)."""
    return error_counter(syn, span)(fill_bytes)


def error_counter(syn: Syntax, span: Span) -> Callable[[bytes], int]:
    """``new_errors`` for many fills of one span: the region and its "before" count once."""
    try:
        size = len(syn.source)
        start, end = min(span.start, size), min(max(span.start, span.end), size)
        if syn.tree is None:
            return lambda fill: 0
        region = _validation_region(syn, start, end)
        if region is None:  # small document: reparse it all, with every bit of context
            before = _count_errors(syn.tree, start, end)

            def after(fill: bytes) -> int:
                return _count_errors(syn.reparsed_with(start, end, fill), start, start + len(fill))
        else:
            lo, hi = region
            chunk = syn.source[lo:hi]
            start, end = start - lo, end - lo
            before = _count_errors(syn.parse_bytes(chunk), start, end)

            def after(fill: bytes) -> int:
                tree = syn.parse_bytes(chunk[:start] + fill + chunk[end:])
                return _count_errors(tree, start, start + len(fill))
    except Exception:
        log.exception("new_errors failed")
        return lambda fill: 0

    def count(fill_bytes: bytes) -> int:
        try:
            return max(0, after(bytes(fill_bytes)) - before)
        except Exception:
            log.exception("new_errors failed")
            return 0

    return count


def _validation_region(syn: Syntax, start: int, end: int) -> tuple[int, int] | None:
    """The bytes of the largest node within VALIDATION_BYTES that holds [start, end], found from
    the top (a top-level definition, a method...), as such a node parses on its own; a span in
    the whitespace after a node goes with it. None: check the whole document."""
    root = syn.tree.root_node
    node, hi = root, root.end_byte
    while hi - node.start_byte > VALIDATION_BYTES:
        child = first_named_child_for_byte(node, start)  # the first one ending after start
        if child is None:
            count = node.named_child_count
            child = node.named_child(count - 1) if count else None
        elif child.start_byte > start:  # start is in the gap before it
            child = child.prev_named_sibling
        if child is None or child.start_byte > start:
            break
        after = child.next_named_sibling
        if end > (after.start_byte if after is not None else hi):
            break  # the span reaches into the next node
        node, hi = child, max(child.end_byte, end)
    if node == root or hi - node.start_byte > VALIDATION_BYTES:
        return None
    line = text.line_at(syn.source, node.start_byte)
    # keep the node's own indentation: Python reads a method's body relative to it
    return (line.start if not line.before.strip() else node.start_byte), hi


def _count_errors(tree: tree_sitter.Tree | None, start: int, end: int) -> int:
    return 0 if tree is None else sum(1 for _ in error_nodes(tree, start, end))
