"""Caret-annotated fixtures: one parametrized test per annotation in tests/fixtures/spans/.

An annotation is a comment line under the code it points at (the nearest line above that is
not an annotation): `<comment> <marks> <mode> <kind>`. Marks are `^` over the expected span
(the cursor is the first `^`) or a single `|` for an empty span at that column; `mode` is
`choose` or `hole`; `kind` is the expected Span.kind (`none`: hole_at returns None).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from coda_syntax import languages, spans

FIXTURES = Path(__file__).parent / "fixtures" / "spans"


@dataclass(frozen=True)
class Case:
    language: str
    path: Path
    lineno: int
    mode: str
    kind: str
    cursor: int
    start: int
    end: int


def parse_fixture(path: Path) -> tuple[bytes, list[Case]]:
    lang = languages.resolve(uri=path.name)
    assert lang is not None, path
    pattern = re.compile(
        rf"^\s*{re.escape(lang.comment)}(?P<marks>[ |^]*?)(?P<mode>choose|hole)\s+(?P<kind>\S+)\s*$"
    )
    source = path.read_bytes()
    cases: list[Case] = []
    offset, target = 0, None
    for lineno, line in enumerate(source.split(b"\n"), 1):
        m = pattern.match(line.decode())
        marks = m and m.group("marks").strip()
        if not marks or target is None:
            target = offset
            offset += len(line) + 1
            continue
        first = line.index(marks.encode())
        cursor = target + first
        end = cursor if marks == "|" else cursor + len(marks)
        cases.append(
            Case(lang.name, path, lineno, m.group("mode"), m.group("kind"), cursor, cursor, end)
        )
        offset += len(line) + 1
    return source, cases


def all_cases() -> list[Case]:
    return [case for path in sorted(FIXTURES.iterdir()) for case in parse_fixture(path)[1]]


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: f"{c.path.name}:{c.lineno}")
def test_fixture(case: Case) -> None:
    source, _ = parse_fixture(case.path)
    syn = spans.Syntax(languages.table()[case.language], source)
    if case.mode == "choose":
        got = spans.choose(syn, case.cursor)
    else:
        got = spans.hole_at(syn, case.cursor)
        if case.kind == "none":
            assert got is None
            return
    assert got is not None
    shown = (got.kind, source[got.start : got.end])
    assert shown == (case.kind, source[case.start : case.end])
    assert (got.start, got.end) == (case.start, case.end)
    assert got.lengths == tuple(sorted(set(got.lengths))) and 1 <= len(got.lengths) <= 4
