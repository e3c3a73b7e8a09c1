"""Infilling examples and their text metrics: held-out corpus spans chosen like the server does.

An :class:`Example` is prefix | middle | suffix text (plus, for HumanEval, the test program).
:func:`heldout_examples` draws random cursor positions in the held-out files of a training
corpus (the same per-file split as training, ``training.data.eval_split``), asks
``coda_syntax.spans.choose`` for the inline span there (what the server would regenerate at that
cursor) and keeps spans with a non-blank middle of at most ``max_tokens`` tokens.

Metrics: :func:`exact_match`, :func:`edit_similarity` (1 − Levenshtein / longer length, on
characters) and :func:`parses` (the fill adds no tree-sitter ERROR/MISSING node,
``coda_syntax.spans.new_errors``).  Nothing here runs a model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from coda_syntax import languages, spans
from training.data.packing import DataConfig, Document, read_corpus


@dataclass(frozen=True)
class Example:
    task: str              # heldout | single-line | multi-line | random-span
    id: str
    prefix: str
    middle: str            # the truth
    suffix: str
    kind: str = ""         # the span's kind (held-out) or "" (HumanEval)
    language: str = "python"
    test: str = ""         # HumanEval: check code run after prefix + fill + suffix
    entry_point: str = ""


def exact_match(fill: str, truth: str) -> bool:
    """Equal up to trailing whitespace (editors trim it; a newline more is not a mistake)."""
    return fill.rstrip() == truth.rstrip()


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def edit_similarity(fill: str, truth: str) -> float:
    """1 − Levenshtein distance / the longer length (1.0 for two empty strings)."""
    longest = max(len(fill), len(truth))
    return 1.0 if longest == 0 else 1.0 - levenshtein(fill, truth) / longest


_SYNTAX: dict[tuple[str, int], spans.Syntax] = {}


def _syntax(example: Example) -> spans.Syntax:
    source = (example.prefix + example.middle + example.suffix).encode("utf-8")
    key = (example.language, hash(source))
    if key not in _SYNTAX:
        if len(_SYNTAX) > 64:
            _SYNTAX.clear()
        _SYNTAX[key] = spans.Syntax(languages.resolve(language_id=example.language), source)
    return _SYNTAX[key]


def parses(example: Example, fill: str) -> bool:
    """True when putting ``fill`` in the middle's place adds no syntax error."""
    start = len(example.prefix.encode("utf-8"))
    end = start + len(example.middle.encode("utf-8"))
    span = spans.Span(start, end, example.kind or "expression", ())
    return spans.new_errors(_syntax(example), span, fill.encode("utf-8")) == 0


def heldout_documents(cfg: DataConfig) -> list[Document]:
    return [d for d in read_corpus(cfg) if d.is_eval]


def heldout_examples(docs: list[Document], tokenizer, *, per_file: int = 4,
                     max_tokens: int = 64, seed: int = 0) -> list[Example]:
    """Up to ``per_file`` inline spans per document at seeded random cursors."""
    rng = random.Random(seed)
    out: list[Example] = []
    for doc in sorted(docs, key=lambda d: d.path):
        lang = languages.resolve(language_id=doc.language)
        source = doc.text.encode("utf-8")
        syn = spans.Syntax(lang, source)
        lines = [i for i, line in enumerate(doc.text.splitlines(keepends=True)) if line.strip()]
        starts = _line_starts(doc.text)
        seen: set[int] = set()
        for _ in range(per_file * 8):          # some cursors give empty or overlong spans
            if len([e for e in out if e.id.startswith(doc.path + "#")]) >= per_file or not lines:
                break
            n = rng.choice(lines)
            line = doc.text[starts[n]:starts[n + 1]]
            indent = len(line) - len(line.lstrip())
            char = starts[n] + rng.randrange(indent, max(indent + 1, len(line.rstrip())))
            cursor = len(doc.text[:char].encode("utf-8"))
            span = spans.choose(syn, cursor)
            if span.start in seen:
                continue
            middle = source[span.start:span.end].decode("utf-8", "replace")
            if not middle.strip() or len(tokenizer.encode(middle)) > max_tokens:
                continue
            seen.add(span.start)
            out.append(Example("heldout", f"{doc.path}#{span.start}",
                               source[:span.start].decode("utf-8", "replace"), middle,
                               source[span.end:].decode("utf-8", "replace"), kind=span.kind,
                               language=doc.language))
    return out


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts
