"""Which tree-sitter grammar and which queries serve a document.

The table is data (grammars/languages.toml); this module only resolves an LSP languageId or a
file URI to a `Language` and loads grammars and queries lazily, once per language. It does not
parse documents or choose spans (that is `spans`). Importing it reads nothing and loads nothing.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import tree_sitter

log = logging.getLogger(__name__)

# Installed: package data beside this module; a source checkout: the repository's grammars/.
GRAMMARS = next((d for d in (Path(__file__).resolve().parent / "grammars",
                             Path(__file__).resolve().parent.parent / "grammars")
                 if (d / "languages.toml").is_file()),
                Path(__file__).resolve().parent.parent / "grammars")
QUERY_KINDS = ("spans", "holes")
_INHERITS = re.compile(r"^;\s*inherits:\s*(.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Language:
    """One row of languages.toml: how to load a grammar and where its queries are."""

    name: str
    package: str
    version: str
    module: str
    function: str
    language_ids: tuple[str, ...]
    extensions: tuple[str, ...]
    comment: str
    openers: tuple[str, ...] = ()
    opener_starts: tuple[str, ...] = ()
    offside: bool = False
    queries: str = ""

    def grammar(self) -> tree_sitter.Language | None:
        """The compiled grammar, or None when its wheel is missing or incompatible."""
        return _grammar(self.module, self.function)

    def parser(self) -> tree_sitter.Parser | None:
        """A parser for this grammar, one per thread (parsers are not thread-safe)."""
        grammar = self.grammar()
        if grammar is None:
            return None
        cache = _parsers.__dict__.setdefault("by_name", {})
        parser = cache.get(self.name)
        if parser is None:
            parser = cache[self.name] = tree_sitter.Parser(grammar)
        return parser

    def query(self, kind: str) -> tree_sitter.Query | None:
        """The compiled `spans` or `holes` query (with inherited patterns), or None."""
        return _query(self, kind)

    def query_source(self, kind: str) -> str:
        """The query text with its `; inherits:` parents prepended, parents first."""
        return _query_source(self.queries or self.name, kind, frozenset())


_parsers = threading.local()


@functools.cache
def table() -> dict[str, Language]:
    """Every language in grammars/languages.toml, by folder name (read once)."""
    with open(GRAMMARS / "languages.toml", "rb") as f:
        raw = tomllib.load(f)
    rows: dict[str, Language] = {}
    for name, row in raw.items():
        fields = dict(row)
        for key in ("language_ids", "extensions", "openers", "opener_starts"):
            fields[key] = tuple(fields.get(key, ()))
        fields.setdefault("queries", name)
        rows[name] = Language(name=name, **fields)
    return rows


@functools.cache
def _by_id() -> dict[str, Language]:
    return {lid: lang for lang in table().values() for lid in lang.language_ids}


@functools.cache
def _by_extension() -> dict[str, Language]:
    return {ext: lang for lang in table().values() for ext in lang.extensions}


def resolve(language_id: str | None = None, uri: str | None = None) -> Language | None:
    """The language for an LSP languageId, else for the URI's file extension, else None."""
    if language_id and language_id in _by_id():
        return _by_id()[language_id]
    if language_id and language_id in table():
        return table()[language_id]
    if uri:
        path = unquote(urlparse(uri).path) if "://" in uri else uri
        suffix = Path(path).suffix.lstrip(".").lower()
        return _by_extension().get(suffix)
    return None


@functools.cache
def _grammar(module: str, function: str) -> tree_sitter.Language | None:
    try:
        return tree_sitter.Language(getattr(importlib.import_module(module), function)())
    except Exception as exc:  # a missing or ABI-incompatible wheel must not break the server
        log.warning("grammar %s.%s unavailable: %s", module, function, exc)
        return None


def _query_source(folder: str, kind: str, seen: frozenset[str]) -> str:
    path = GRAMMARS / folder / f"{kind}.scm"
    if folder in seen or not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8")
    parents = [p.strip() for m in _INHERITS.finditer(text) for p in m.group(1).split(",")]
    inherited = "".join(_query_source(p, kind, seen | {folder}) for p in parents if p)
    return inherited + "\n" + text


@functools.cache
def _query(lang: Language, kind: str) -> tree_sitter.Query | None:
    grammar = lang.grammar()
    source = lang.query_source(kind)
    if grammar is None or not source.strip():
        return None
    try:
        return tree_sitter.Query(grammar, source)
    except Exception as exc:  # a broken query degrades to the line fallback, never a crash
        log.warning("query %s/%s.scm does not compile: %s", lang.name, kind, exc)
        return None
