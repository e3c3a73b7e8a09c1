"""A document's bytes and (when a grammar exists) its tree-sitter tree, kept in step by edits.

`Syntax` owns parsing and incremental reparsing; choosing spans lives in `spans`. Any failure
to parse leaves `tree` as None so callers take the line fallback instead of raising.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import tree_sitter

from coda_syntax.languages import Language, resolve

log = logging.getLogger(__name__)


class Syntax:
    """Source bytes plus an optional tree; byte offsets everywhere."""

    def __init__(self, language: Language | None, source: bytes) -> None:
        self.language = language
        self.source = bytes(source)
        self.tree: tree_sitter.Tree | None = None
        self._parse(None)

    def edit(self, start_byte: int, old_end_byte: int, new_bytes: bytes) -> None:
        """Replace source[start:old_end] with new_bytes and reparse only what changed."""
        size = len(self.source)
        start = min(max(0, start_byte), size)
        old_end = min(max(start, old_end_byte), size)
        old = self.source
        self.source = old[:start] + bytes(new_bytes) + old[old_end:]
        new_end = start + len(new_bytes)
        if self.tree is None:
            self._parse(None)
            return
        self.tree.edit(
            start_byte=start,
            old_end_byte=old_end,
            new_end_byte=new_end,
            start_point=point_at(old, start),
            old_end_point=point_at(old, old_end),
            new_end_point=point_at(self.source, new_end),
        )
        self._parse(self.tree)

    def reparsed_with(self, start: int, end: int, fill: bytes) -> tree_sitter.Tree | None:
        """The tree after replacing [start, end) with fill, leaving this document untouched."""
        if self.tree is None:
            return None
        source = self.source[:start] + fill + self.source[end:]
        tree = self.tree.copy()
        tree.edit(
            start_byte=start,
            old_end_byte=end,
            new_end_byte=start + len(fill),
            start_point=point_at(self.source, start),
            old_end_point=point_at(self.source, end),
            new_end_point=point_at(source, start + len(fill)),
        )
        parser = self.language.parser() if self.language else None
        try:
            return parser.parse(source, tree) if parser else None
        except Exception as exc:
            log.warning("reparse for validity failed: %s", exc)
            return None

    def parse_bytes(self, data: bytes) -> tree_sitter.Tree | None:
        """A fresh tree of other bytes (e.g. one definition) in this document's language."""
        parser = self.language.parser() if self.language else None
        try:
            return parser.parse(data) if parser else None
        except Exception as exc:
            log.warning("parse for validity failed: %s", exc)
            return None

    def _parse(self, old_tree: tree_sitter.Tree | None) -> None:
        parser = self.language.parser() if self.language else None
        if parser is None:
            self.tree = None
            return
        try:
            self.tree = parser.parse(self.source, old_tree) if old_tree else parser.parse(
                self.source
            )
        except Exception as exc:  # a grammar bug must cost us the tree, not the request
            log.warning("parse failed (%s): %s", self.language and self.language.name, exc)
            self.tree = None


def point_at(source: bytes, offset: int) -> tuple[int, int]:
    """(row, byte column) of a byte offset, as tree-sitter counts them."""
    row = source.count(b"\n", 0, offset)
    line_start = source.rfind(b"\n", 0, offset) + 1
    return row, offset - line_start


def first_named_child_for_byte(node: tree_sitter.Node, byte: int) -> tree_sitter.Node | None:
    """The first named child of ``node`` that ends after ``byte``, or None.

    Never call tree-sitter's own method directly: in 0.26.1 it returns a hollow node instead of
    None when no child ends after ``byte`` (past the last child), and reading that node kills
    the process. So it is asked only when its answer exists, and a hollow answer (id 0) anyway
    becomes None.
    """
    count = node.named_child_count
    if count == 0 or node.named_child(count - 1).end_byte <= byte:
        return None
    child = node.first_named_child_for_byte(byte)
    return child if child is not None and child.id != 0 else None


def error_nodes(tree: tree_sitter.Tree, start: int, end: int) -> Iterator[tree_sitter.Node]:
    """ERROR and MISSING nodes touching [start, end]; clean subtrees are skipped."""
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.end_byte < start or node.start_byte > end:
            continue
        if node.is_error or node.is_missing:
            yield node
        if node.has_error:
            stack.extend(node.children)


def make_syntax(language_id: str, uri: str, source: bytes, parse: bool) -> Syntax:
    """A document's syntax, its language from the LSP languageId or else the file name."""
    lang = resolve(language_id=language_id or None, uri=uri) if parse else None
    return Syntax(lang, source)
