"""Which language a snippet is in, when nobody says: parse it with every grammar, keep the one
whose parse is clean.

HTTP clients (llama.vim, OpenAI-style scripts) send the text around the cursor and usually no
file name; without a language the fill's candidates are never checked for syntax errors. Each
grammar parses the text near the cursor; the language whose tree has the fewest bytes under
ERROR nodes (and MISSING nodes) wins, if that is at most ``CLEAN_SHARE`` of the text (the hole
at the cursor leaves most languages a small error, the right one usually none). Ties go to
the table's order (C before C++, JavaScript before TypeScript: the smaller grammar, whose
clean parse the larger one shares). No clean parse: None, and the fill runs without a
grammar, as before.
"""

from __future__ import annotations

import functools
import logging

from coda_syntax.languages import Language, table

log = logging.getLogger(__name__)

WINDOW_BEFORE = 6000  # characters of the prefix parsed (whole lines), the cursor's end
WINDOW_AFTER = 2000  # characters of the suffix parsed (whole lines)
CLEAN_SHARE = 0.05  # the most of the window's bytes that may sit under errors
MIN_BYTES = 16  # text away from the cursor's lines needed to tell languages apart


def window(prefix: str, suffix: str) -> tuple[str, str]:
    """The text near the cursor, before and after it, cut at line ends."""
    before = prefix[-WINDOW_BEFORE:]
    if len(prefix) > WINDOW_BEFORE and "\n" in before:
        before = before[before.index("\n") + 1:]
    after = suffix[:WINDOW_AFTER]
    if len(suffix) > WINDOW_AFTER and "\n" in after:
        after = after[: after.rindex("\n") + 1]
    return before, after


def error_bytes(tree, excused: tuple[int, int] = (0, 0)) -> int:
    """Bytes the grammar could not place: tokens stranded in ERROR nodes (a whole construct
    inside one, parsed cleanly, is not counted) plus one per MISSING node, outside the
    ``excused`` range (the cursor's lines: the unwritten rest of the code is a hole there)."""
    lo, hi = excused
    total, stack = 0, [(tree.root_node, False)]
    while stack:
        node, in_error = stack.pop()
        if node.is_missing:
            total += not lo <= node.start_byte <= hi
        elif node.child_count == 0:
            if in_error or node.is_error:
                total += _outside(node.start_byte, node.end_byte, lo, hi)
        elif node.is_error or node.has_error:
            stack.extend((child, node.is_error) for child in node.children)
    return total


def _outside(start: int, end: int, lo: int, hi: int) -> int:
    return max(1, end - start) - max(0, min(end, hi) - max(start, lo))


def detect(prefix: str, suffix: str = "") -> Language | None:
    """The language whose grammar parses the lines around the cursor's cleanly, or None.

    The cursor's own line is left out (it is being written: the parse excuses the lines
    where it was), so the answer is the same for every keystroke on a line and is parsed
    once per line: a grammar that does not fit costs ~3 ms per KB of window, and a Go file
    went through five of them, 100-350 ms, on every keystroke."""
    head = prefix[: prefix.rfind("\n") + 1]
    rest = suffix.find("\n")
    before, after = window(head, "" if rest < 0 else suffix[rest + 1 :])
    source = (before + after).encode("utf-8", "surrogatepass")
    if len(source.strip()) < MIN_BYTES:
        return None
    join = len(before.encode("utf-8", "surrogatepass"))
    line_before = source.rfind(b"\n", 0, max(0, join - 1)) + 1
    line_after = source.find(b"\n", join)
    excused = (line_before, len(source) if line_after < 0 else line_after)
    if len(source) - (excused[1] - excused[0]) < MIN_BYTES:
        return None  # all of it is the lines around the cursor: nothing a parse can judge
    return _detect(source, excused)


@functools.lru_cache(maxsize=256)  # typing: the same lines around the cursor every keystroke
def _detect(source: bytes, excused: tuple[int, int]) -> Language | None:
    best: tuple[int, Language] | None = None
    for lang in _parseable():
        parser = lang.parser()
        if parser is None:
            continue
        try:
            errors = error_bytes(parser.parse(source), excused)
        except Exception as exc:  # a grammar bug costs that grammar, not the request
            log.warning("detect: %s failed to parse: %s", lang.name, exc)
            continue
        if best is None or errors < best[0]:
            best = (errors, lang)
        if errors == 0:
            break  # nothing beats clean; the table's order breaks ties
    if best is None or best[0] > CLEAN_SHARE * len(source):
        return None
    return best[1]


@functools.cache
def _parseable() -> tuple[Language, ...]:
    return tuple(lang for lang in table().values() if lang.grammar() is not None)
