"""Fill-in-the-middle for callers that hold plain text, not an editor's document.

``coda-lsp fill`` and the HTTP server both end in ``fill_span``, so the same text, span,
steps and settings give the same fill whichever way it was asked for. The HTTP clients
(llama.vim, llama.vscode, OpenAI-style ``suffix``) insert at the cursor and keep the suffix,
so ``fill_between`` uses the span tree-sitter chooses there only for its candidate lengths
and fills exactly the gap between prefix and suffix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from lsprotocol import types

from coda_lsp.core import edits, positions
from coda_lsp.core.documents import Document, DocumentStore
from coda_lsp.core.engine import Engine, Fill, FillJob, rank
from coda_lsp.core.settings import Settings
from coda_syntax import spans

Partial = Callable[[int, int, list[str]], None]


@dataclass
class Outcome:
    fills: list[Fill]  # usable fills, best first
    candidates: int = 0  # fills the model wrote, before ranking dropped any
    prompt_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds
    reused: int = 0  # fast: context tokens whose keys/values the previous request left


def open_document(text: str, uri: str) -> Document:
    """A one-off document (code points as positions) with its syntax tree, language by uri."""
    from coda_syntax.syntax import make_syntax

    store = DocumentStore(encoding=positions.UTF32, syntax_factory=make_syntax)
    return store.open(types.TextDocumentItem(uri=uri, language_id="", version=1, text=text))


def fill_span(engine: Engine, doc: Document, span: spans.Span, steps: int, settings: Settings,
              should_stop: Callable[[], bool] | None = None,
              on_partial: Partial | None = None, fast: bool = False,
              carry_key: str | None = None, inline: bool = False) -> Outcome:
    """Regenerate the span's bytes: ranked fills, dropping those under the threshold.

    fast: the language server's typing path (the shortest candidates, context keys/values
    cached, and carried from the previous request with the same carry_key): approximate.
    inline: a span on the cursor's line (not a hole), filled as ghost text would be.
    """
    start, end = doc.offset_of_byte(span.start), doc.offset_of_byte(span.end)
    job = FillJob(doc.text[:start], doc.text[end:], tuple(span.lengths), steps, settings,
                  edits.line_ending(doc.text), fast=fast, carry_key=carry_key if fast else None,
                  inline=inline)
    result = engine.fill(job, should_stop, on_partial=on_partial)
    errors = spans.error_counter(doc.syntax, span)
    fills = rank(result.fills, settings.confidence_threshold,
                 lambda text: errors(positions.to_bytes(text)))
    return Outcome(fills, len(result.fills), result.prompt_tokens, result.timings, result.reused)


def fill_between(engine: Engine, prefix: str, suffix: str, settings: Settings, steps: int,
                 uri: str = "untitled:fim", should_stop: Callable[[], bool] | None = None,
                 on_partial: Partial | None = None, fast: bool = False,
                 carry_key: str | None = None) -> Outcome:
    """Fill the gap between prefix and suffix (nothing of either is replaced).

    Equal to ``coda-lsp fill`` at the same place whenever the span there ends at the cursor
    (the cursor at the end of its line, the common case for these clients), unless fast.
    """
    doc = open_document(prefix + suffix, uri)
    cursor = doc.byte_at(len(prefix))
    span = replace(spans.choose(doc.syntax, cursor), start=cursor, end=cursor)
    return fill_span(engine, doc, span, steps, settings, should_stop, on_partial, fast,
                     carry_key, inline=True)


def best_fill(model, tokenizer) -> Callable[[str, str, int], str]:
    """``fill(prefix, suffix, steps) -> text``: what the server would offer between them (its
    first-ranked fill, "" when it offers none). Evaluations score the model through this, so
    they see the server's span lengths, sampler, one-line rule and ranking."""
    engine, settings = Engine(model, tokenizer), Settings()

    def fill(prefix: str, suffix: str, steps: int) -> str:
        outcome = fill_between(engine, prefix, suffix, settings, steps)
        return outcome.fills[0].text if outcome.fills else ""
    return fill
