"""Fill-in-the-middle for callers that hold plain text, not an editor's document.

``coda-lsp fill`` and the HTTP server both end in ``fill_span``, so the same text, span,
steps and settings give the same fill whichever way it was asked for. The HTTP clients
(llama.vim, llama.vscode, OpenAI-style ``suffix``) insert at the cursor and keep the suffix,
so ``fill_between`` uses the span tree-sitter chooses there only for its candidate lengths
and fills exactly the gap between prefix and suffix. Both judge their candidates by the fill
contract (``coda_lsp.core.contract``), as the language server does.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace

from lsprotocol import types

from coda_lsp.core import contract, edits, positions
from coda_lsp.core.documents import Document, DocumentStore
from coda_lsp.core.engine import Engine, Fill, FillJob, FillResult
from coda_lsp.core.settings import Settings
from coda_syntax import spans

Partial = Callable[[int, int, list[str]], None]


@dataclass
class Outcome:
    fills: list[Fill]  # fills that pass the contract, best first
    candidates: int = 0  # fills the model wrote, before ranking dropped any
    prompt_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds
    reused: int = 0  # fast: context tokens whose keys/values the previous request left
    decision: contract.Decision | None = None  # why nothing passed, the best rejected one
    batch: int = 1  # requests that shared the first attempt's forward passes


def open_document(text: str, uri: str, language_id: str = "") -> Document:
    """A one-off document (code points as positions) with its syntax tree, language by
    ``language_id`` or else by the uri."""
    from coda_syntax.syntax import make_syntax

    store = DocumentStore(encoding=positions.UTF32, syntax_factory=make_syntax)
    return store.open(types.TextDocumentItem(uri=uri, language_id=language_id, version=1,
                                                     text=text))


def hole_span(doc: Document, start: int, end: int) -> spans.Span | None:
    """The span "Fill this hole" regenerates for a selection (code points ``start``-``end``):
    the hole at the cursor when nothing is selected, else the selection widened to whole
    syntax nodes. The language server and the benchmarks that time it share this choice."""
    if start >= end:
        return spans.hole_at(doc.syntax, doc.byte_at(start))
    return spans.widen(doc.syntax, doc.byte_at(start), doc.byte_at(end))


FillSteps = Generator[FillJob, FillResult, "Outcome"]
"""A fill as steps: it yields each ``FillJob`` the model must run, is sent the
``FillResult`` back (or thrown its exception), and returns the ``Outcome``. One driver runs
it alone (``drive``), another as rows of a batch with other requests' (``core.batching``)."""


def drive(steps: FillSteps, run: Callable[[FillJob], FillResult]) -> Outcome:
    """Run a fill's steps to their outcome, ``run`` answering each job; a failure of
    ``run`` is raised inside the steps (their ``finally`` sees it), then here."""
    try:
        job = next(steps)
        while True:
            try:
                result = run(job)
            except BaseException as exc:
                job = steps.throw(exc)
            else:
                job = steps.send(result)
    except StopIteration as end:
        return end.value


def span_steps(doc: Document, span: spans.Span, steps: int, settings: Settings,
               fast: bool = False, carry_key: str | None = None, inline: bool = False,
               retry: bool | None = None, choices: int = 1) -> FillSteps:
    """``fill_span``'s steps: the fill contract's attempts, each a job for the model."""
    start, end = doc.offset_of_byte(span.start), doc.offset_of_byte(span.end)
    job = FillJob(doc.text[:start], doc.text[end:], tuple(span.lengths), steps, settings,
                  edits.line_ending(doc.text), fast=fast, carry_key=carry_key if fast else None,
                  inline=inline, choices=choices)
    errors = spans.error_counter(doc.syntax, span)
    attempts = contract.Attempts(job, settings.confidence_threshold,
                                 lambda text: errors(positions.to_bytes(text)),
                                 retry=not fast if retry is None else retry)
    first = None
    while (next_job := attempts.next_job()) is not None:
        result = yield next_job
        first = first or result
        attempts.add(result.fills, contract.engine_seconds(result.timings))
    decision = attempts.decision
    timings = dict(first.timings) if first else {}
    if decision.attempts > 1:
        timings["retries"] = attempts.elapsed_s * 1e3 - sum(timings.values())
    return Outcome(decision.fills, decision.candidates, first.prompt_tokens if first else 0,
                   timings, first.reused if first else 0, decision,
                   getattr(first, "batch", 1))


def fill_span(engine: Engine, doc: Document, span: spans.Span, steps: int, settings: Settings,
              should_stop: Callable[[], bool] | None = None,
              on_partial: Partial | None = None, fast: bool = False,
              carry_key: str | None = None, inline: bool = False,
              retry: bool | None = None, choices: int = 1) -> Outcome:
    """Regenerate the span's bytes: the fills the contract accepts (confidence bar:
    ``settings.confidence_threshold``), and its decision.

    fast: the language server's typing path (the shortest candidates, context keys/values
    cached, and carried from the previous request with the same carry_key): approximate.
    inline: a span on the cursor's line (not a hole), filled as ghost text would be.
    retry: try again when every candidate fails (default: unless fast, where a keystroke
    cannot wait).
    choices: fills the caller can show; fast tries two lengths for more than one, else one
    (``engine.typing_lengths``).
    """
    return drive(span_steps(doc, span, steps, settings, fast, carry_key, inline, retry,
                            choices),
                 lambda job: engine.fill(job, should_stop, on_partial=on_partial))


def between_steps(prefix: str, suffix: str, settings: Settings, steps: int,
                  uri: str = "untitled:fim", fast: bool = False, carry_key: str | None = None,
                  retry: bool | None = None, choices: int = 1) -> FillSteps:
    """``fill_between``'s steps."""
    doc = open_document(prefix + suffix, uri)
    cursor = doc.byte_at(len(prefix))
    span = replace(spans.choose(doc.syntax, cursor), start=cursor, end=cursor)
    return (yield from span_steps(doc, span, steps, settings, fast, carry_key, inline=True,
                                  retry=retry, choices=choices))


def fill_between(engine: Engine, prefix: str, suffix: str, settings: Settings, steps: int,
                 uri: str = "untitled:fim", should_stop: Callable[[], bool] | None = None,
                 on_partial: Partial | None = None, fast: bool = False,
                 carry_key: str | None = None, retry: bool | None = None,
                 choices: int = 1) -> Outcome:
    """Fill the gap between prefix and suffix (nothing of either is replaced).

    Equal to ``coda-lsp fill`` at the same place whenever the span there ends at the cursor
    (the cursor at the end of its line, the common case for these clients), unless fast.
    """
    return drive(between_steps(prefix, suffix, settings, steps, uri, fast, carry_key, retry,
                               choices),
                 lambda job: engine.fill(job, should_stop, on_partial=on_partial))


def best_fill(model, tokenizer) -> Callable[[str, str, int], str]:
    """``fill(prefix, suffix, steps) -> text``: what the server would offer between them as
    ghost text (its first-ranked fill, "" when it offers none; no retries). Evaluations score
    the model through this, so they see the server's span lengths, sampler, one-line rule and
    ranking."""
    engine, settings = Engine(model, tokenizer), Settings()

    def fill(prefix: str, suffix: str, steps: int) -> str:
        outcome = fill_between(engine, prefix, suffix, settings, steps, retry=False)
        offered = [f for f in outcome.decision.ranked
                   if f.confidence >= settings.confidence_threshold]
        return offered[0].text if offered else ""
    return fill
