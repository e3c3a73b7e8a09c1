"""The grammars/ corpus is governed: pinned wheels, compiling queries, a closed vocabulary,
and fixtures that exercise every capture kind and every hole pattern."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest
import tree_sitter
from test_spans_fixtures import FIXTURES, parse_fixture

from coda_syntax import languages, spans

GRAMMARS = Path(languages.GRAMMARS)
LANGS = sorted(languages.table())


def vocabulary() -> set[str]:
    readme = (GRAMMARS / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Capture vocabulary")[1].split("\n## ")[0]
    return set(re.findall(r"^\| `@([a-z.]+)`", section, re.MULTILINE))


def captures_used(lang: languages.Language, kind: str) -> set[str]:
    query = lang.query(kind)
    assert query is not None
    return {query.capture_name(i) for i in range(query.capture_count)}


def fixture_for(name: str) -> Path:
    lang = languages.table()[name]
    found = [p for p in FIXTURES.iterdir() if p.suffix.lstrip(".") in lang.extensions]
    assert found, f"no fixture for {name}"
    return found[0]


def test_at_least_ten_languages() -> None:
    assert len(LANGS) >= 10


def test_vocabulary_is_documented() -> None:
    assert {"statement.outer", "block.inner", "function.inner", "call.inner", "hole"} <= (
        vocabulary()
    )
    assert set(spans.PRIORITY) | {"hole"} == vocabulary()


@pytest.mark.parametrize("name", LANGS)
def test_grammar_pinned_and_loadable(name: str) -> None:
    lang = languages.table()[name]
    assert version(lang.package) == lang.version
    assert isinstance(lang.grammar(), tree_sitter.Language)
    assert lang.grammar() is lang.grammar()  # loaded once


@pytest.mark.parametrize("name", LANGS)
@pytest.mark.parametrize("kind", languages.QUERY_KINDS)
def test_query_compiles_with_vocabulary_only(name: str, kind: str) -> None:
    lang = languages.table()[name]
    assert (GRAMMARS / lang.queries / f"{kind}.scm").is_file()
    allowed = vocabulary() - {"hole"} if kind == "spans" else {"hole"}
    used = {c for c in captures_used(lang, kind) if not c.startswith("_")}
    assert used and used <= allowed


@pytest.mark.parametrize("name", LANGS)
def test_fixture_covers_every_kind(name: str) -> None:
    _, cases = parse_fixture(fixture_for(name))
    assert len(cases) >= 8
    kinds = {c.kind for c in cases}
    wanted = {c for c in captures_used(languages.table()[name], "spans") if not c.startswith("_")}
    assert wanted <= kinds, f"no fixture case for {sorted(wanted - kinds)}"


@pytest.mark.parametrize("name", LANGS)
def test_fixture_covers_every_hole_pattern(name: str) -> None:
    path = fixture_for(name)
    source, cases = parse_fixture(path)
    lang = languages.table()[name]
    syn = spans.Syntax(lang, source)
    expected = {(c.start, c.end) for c in cases if c.mode == "hole" and c.kind == "hole"}
    matches = tree_sitter.QueryCursor(lang.query("holes")).matches(syn.tree.root_node)
    hit = {index for index, caps in matches
           if any((n.start_byte, n.end_byte) in expected for n in caps.get("hole", ()))}
    assert hit == set(range(lang.query("holes").pattern_count))


def test_inherits_prepends_parent_patterns() -> None:
    ts = languages.table()["typescript"].query_source("spans")
    js = languages.table()["javascript"].query_source("spans")
    assert js.strip() in ts
