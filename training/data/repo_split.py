"""Which files of a repository a fine-tune holds out for its before/after scores.

Stable: the choice hangs on a hash of each file's path *inside* its repository, so renaming or
moving the checkout (``~/src/boltons`` vs ``/tmp/boltons-26.2.0``) holds out the same files.
Balanced by tokens: files are taken in hash order while the held-out part stays under ``cap``
of the repository's tokens (a file that would overflow it is passed over), so one large module
cannot hold out 45 % of a small repository and starve the training split.

Tokens are counted without the tokenizer (words and punctuation marks, a close proxy for BPE
tokens on code) so the split is the same in every process that reads the corpus.
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

_TOKEN = re.compile(r"\w+|[^\w\s]")


class _Doc(Protocol):
    path: str
    text: str
    is_eval: bool
    is_val: bool
    train_only: bool


def path_in_repo(doc_path: str) -> str:
    """``root/pkg/mod.py`` → ``pkg/mod.py``: the corpus prefixes paths with the folder's name."""
    head, sep, rest = doc_path.partition("/")
    return rest if sep else head


def path_hash(doc_path: str) -> bytes:
    return hashlib.sha256(path_in_repo(doc_path).encode("utf-8")).digest()


def approx_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def hold_out(docs: list[_Doc], cap: float) -> int:
    """Mark held-out files in place (``is_eval``); returns the held-out token count.
    Train-only files (a repository's tests) are neither held out nor counted in the cap."""
    docs = _eligible(docs)
    sizes = {id(d): approx_tokens(d.text) for d in docs}
    budget = cap * sum(sizes.values())
    held = 0
    for doc in sorted(docs, key=lambda d: path_hash(d.path)):
        doc.is_eval = held + sizes[id(doc)] <= budget
        if doc.is_eval:
            held += sizes[id(doc)]
    return held


def hold_out_validation(docs: list[_Doc], cap: float) -> int:
    """Mark validation files (``is_val``) for early stopping: the train files next in hash
    order, while they stay under ``cap`` of the repository's tokens.  Apart from the held-out
    files, so choosing when to stop never looks at the files the verdict scores; returns the
    validation token count."""
    docs = _eligible(docs)
    sizes = {id(d): approx_tokens(d.text) for d in docs}
    budget = cap * sum(sizes.values())
    taken = 0
    for doc in sorted((d for d in docs if not d.is_eval), key=lambda d: path_hash(d.path)):
        doc.is_val = taken + sizes[id(doc)] <= budget
        if doc.is_val:
            taken += sizes[id(doc)]
    return taken


def _eligible(docs: list[_Doc]) -> list[_Doc]:
    return [d for d in docs if not d.train_only]
