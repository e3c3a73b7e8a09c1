"""The model's input: prefix tokens | mask canvas | suffix tokens, within a token budget.

The hole is fixed by the span; what varies is how much context surrounds it and how many
mask tokens each candidate gets. Context is cut at token boundaries from the far ends (the
code next to the hole matters most), and only a character window of the document is ever
tokenized, so a multi-megabyte file costs no more than a small one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Generous upper bound on characters per token: a window this wide always holds the budget.
CHARS_PER_TOKEN = 8
FIRST_CHARS_PER_TOKEN = 5.0  # the first window: code is usually 3-4.5 characters per token
MAX_CANDIDATES = 4
SUFFIX_SHARE = 0.25  # suffix gets a quarter of the context budget, prefix the rest


class TokenizerLike(Protocol):
    def encode(self, text: str, *, allow_special: bool = True) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class Prompt:
    prefix_ids: list[int]
    suffix_ids: list[int]
    lengths: tuple[int, ...]


def candidate_lengths(span_lengths: tuple[int, ...] | list[int],
                      max_middle: int) -> tuple[int, ...]:
    """Distinct mask counts, clipped to the setting, at most MAX_CANDIDATES of them."""
    clipped = sorted({max(1, min(int(n), max_middle)) for n in span_lengths})
    if not clipped:
        clipped = [min(16, max_middle)]
    if len(clipped) > MAX_CANDIDATES:  # keep the shortest, the longest and evenly between
        step = (len(clipped) - 1) / (MAX_CANDIDATES - 1)
        clipped = [clipped[round(i * step)] for i in range(MAX_CANDIDATES)]
    return tuple(clipped)


def _window_ids(tokenizer: TokenizerLike, text: str, budget: int,
                tail: bool) -> tuple[list[int], bool]:
    """Tokens of the ``budget``-token end (tail) or start of text, tokenizing a window only.

    The window starts at FIRST_CHARS_PER_TOKEN characters per token and grows by the density it
    showed, up to CHARS_PER_TOKEN, only if it did not hold the budget: tokenizing is most of
    the prompt's cost (tens of ms per request for an 8 KB window).
    """
    if budget <= 0:
        return []
    per_token = FIRST_CHARS_PER_TOKEN
    while True:
        window = int(budget * per_token)
        cut = len(text) > window
        piece, clean = _line_window(text, window, tail) if cut else (text, True)
        # User code is text: "<|mask|>" written in a file must not become a control token.
        ids = tokenizer.encode(piece, allow_special=False)
        if not clean and ids:  # the token at the cut may be half of a word
            ids = ids[1:] if tail else ids[:-1]
        if len(ids) >= budget or not cut or per_token >= CHARS_PER_TOKEN:
            whole = not cut and len(ids) <= budget
            if whole:
                return ids, True
            return (_line_start(tokenizer, ids[-budget:]) if tail else ids[:budget]), False
        per_token = min(CHARS_PER_TOKEN, per_token * (budget + 8) / max(len(ids), 1) * 1.1)


def _line_window(text: str, window: int, tail: bool) -> tuple[str, bool]:
    """The last (tail) or first ``window`` characters, cut at a line break in the outer half
    when there is one: then the cut is clean and, while the user types near the hole, the
    window's far end stays put, so its tokens (and their cached keys/values) do too."""
    if tail:
        piece = text[-window:]
        newline = piece.find("\n", 0, window // 2)
        return (piece[newline + 1 :], True) if newline >= 0 else (piece, False)
    piece = text[:window]
    newline = piece.rfind("\n", window - window // 2)
    return (piece[: newline + 1], True) if newline >= 0 else (piece, False)


def _line_start(tokenizer: TokenizerLike, ids: list[int], look: int = 64) -> list[int]:
    """Drop the tokens before the first line break among the first `look`: the far end of
    a prefix then moves a line at a time as the user types, not a token at a time."""
    for i, token in enumerate(ids[:look]):
        if "\n" in tokenizer.decode([token]):
            return ids[i + 1 :]
    return ids


def _tail(tokenizer: TokenizerLike, text: str, budget: int) -> tuple[list[int], bool]:
    return _window_ids(tokenizer, text, budget, tail=True)


def _head(tokenizer: TokenizerLike, text: str, budget: int) -> list[int]:
    return _window_ids(tokenizer, text, budget, tail=False)[0]


def build(
    tokenizer: TokenizerLike,
    prefix: str,
    suffix: str,
    span_lengths: tuple[int, ...] | list[int],
    context_tokens: int,
    max_middle_tokens: int,
) -> Prompt:
    """Token ids around the hole: at most ``context_tokens`` in all, canvas included.

    The prefix is never empty: the first mask is predicted by the output of the token before
    it, so an empty prefix gets a newline token.
    """
    lengths = candidate_lengths(span_lengths, max_middle_tokens)
    budget = max(2, context_tokens - max(lengths))
    suffix_budget = int(budget * SUFFIX_SHARE)
    suffix_ids = _head(tokenizer, suffix, suffix_budget) if suffix else []
    prefix_ids, whole = _tail(tokenizer, prefix, budget - len(suffix_ids)) if prefix else ([], True)
    if whole and len(prefix_ids) + len(suffix_ids) < budget and len(suffix_ids) == suffix_budget \
            and suffix:
        # a short prefix leaves room: give it to the suffix (only a whole prefix, so that the
        # suffix does not change length with every keystroke in a long file)
        suffix_ids = _head(tokenizer, suffix, budget - len(prefix_ids))
    if not prefix_ids:
        prefix_ids = tokenizer.encode("\n")[-1:]
    return Prompt(prefix_ids=prefix_ids, suffix_ids=suffix_ids, lengths=lengths)
