"""HTTP fills see a grammar: the one the request names (``language``, ``filename``), else the
one the text parses cleanly in; then HTTP answers what ``coda-lsp fill`` writes in the real
file, language by language (the shipped model, so candidates differ in whether they parse)."""

from __future__ import annotations

from pathlib import Path

import pytest
from http_kit import Server, fill_cli

from coda_lsp.http.grammar import document_uri
from coda_syntax.detect import detect

FIXTURES = Path(__file__).parent / "fixtures"
SHIPPED = Path(__file__).resolve().parents[2] / "model"
# (file, the text typed on the hole's line): the rest of that line is not written yet
HOLES = [
    ("inventory.py", "price: "),
    ("inventory.js", "this.price = "),
    ("inventory.go", "result := "),
    ("inventory.rs", "result += "),
    ("Inventory.java", "result += "),
    ("inventory.c", "printf("),
]


def hole(name: str, typed: str) -> tuple[str, str]:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    cursor = text.index(typed) + len(typed)
    return text[:cursor], text[text.index("\n", cursor):]


@pytest.mark.parametrize(("name", "typed"), HOLES)
def test_the_language_is_detected_from_the_text_around_the_cursor(name, typed):
    from coda_syntax.languages import resolve

    lang = detect(*hole(name, typed))
    assert lang is not None and lang.name == resolve(uri=name).name


def test_keystrokes_on_one_line_are_parsed_once():
    """The cursor's line is left out of the parse: every keystroke on it is answered from
    the line's first (a grammar that does not fit costs ~3 ms per KB, so a Go file used to
    pay 100-350 ms on every keystroke), and what is typed there cannot change the answer."""
    from coda_syntax.detect import _detect

    prefix, suffix = hole("inventory.go", "result := ")
    first = detect(prefix, suffix)
    before = _detect.cache_info()
    typed = [detect(prefix + text, suffix) for text in ("t", "to", "tot", "{{ <<<", "'")]
    after = _detect.cache_info()
    assert first is not None and first.name == "go"
    assert all(lang is first for lang in typed)
    assert after.misses == before.misses and after.hits == before.hits + len(typed)


def test_no_language_for_prose_or_too_little_text():
    assert detect("The quick brown fox jumps over the lazy dog, and then", " it rests.") is None
    assert detect("x", "") is None


def test_a_named_language_or_file_wins_over_detection():
    prefix, suffix = hole("inventory.js", "this.price = ")
    assert document_uri(prefix, suffix) == ("untitled:fim.js", "detected")
    assert document_uri(prefix, suffix, language="typescript")[0].endswith(".ts")
    assert document_uri(prefix, suffix, filename="src/../a/b.rs") == ("untitled:b.rs",
                                                                      "filename")
    assert document_uri(prefix, suffix, filename="C:\\work\\x.go")[0] == "untitled:x.go"
    assert document_uri(prefix, suffix, language="plaintext") == ("untitled:fim", "none")


@pytest.fixture(scope="module")
def shipped_server():
    server = Server(SHIPPED)
    yield server
    server.stop()


def http_fill(server: Server, prefix: str, suffix: str, **extra) -> str:
    status, body = server.request("POST", "/infill", {
        "input_prefix": prefix, "input_suffix": suffix, **extra})
    assert status == 200, body
    return body["content"]


def test_http_and_coda_lsp_fill_agree_on_real_files(shipped_server, tmp_path):
    differs_without_grammar = 0
    for i, (name, typed) in enumerate(HOLES):
        prefix, suffix = hole(name, typed)
        folder = tmp_path / str(i)
        folder.mkdir()
        # one fill contract: where fill refuses (writes nothing), HTTP answers an empty fill
        written = fill_cli(SHIPPED, folder, prefix, suffix, 4, name)
        assert written.startswith(prefix) and written.endswith(suffix), name
        expected = written[len(prefix): len(written) - len(suffix)]
        assert http_fill(shipped_server, prefix, suffix) == expected, name
        assert http_fill(shipped_server, prefix, suffix, filename=name) == expected, name
        plain = http_fill(shipped_server, prefix, suffix, language="plaintext")
        differs_without_grammar += plain != expected
    # the grammar changes some answer here, or this test could not catch its loss
    assert differs_without_grammar >= 1
