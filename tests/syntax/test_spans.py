"""spans and languages beyond the fixtures: properties, edits, validity, widening, fallback."""

from __future__ import annotations

import json
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from coda_syntax import languages, spans

PY = languages.resolve("python")
SAMPLE = b"def f(a):\n    x = g(a, 1)\n    return x\n"


def test_resolve_by_id_extension_and_unknown() -> None:
    assert languages.resolve(language_id="typescriptreact").name == "tsx"
    assert languages.resolve(uri="file:///src/main%20x.rs").name == "rust"
    assert languages.resolve(language_id="plaintext", uri="file:///a.go").name == "go"
    assert languages.resolve(language_id="cobol", uri="file:///x.cbl") is None
    assert languages.resolve() is None


def test_import_is_cheap_and_side_effect_free() -> None:
    code = (
        "import sys; import coda_syntax.spans, coda_syntax.languages as l;"
        "assert l.table.cache_info().currsize == 0;"
        "assert not [m for m in sys.modules if m.startswith('tree_sitter_')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parser_and_queries_are_cached() -> None:
    assert PY.parser() is PY.parser()
    assert PY.query("spans") is PY.query("spans")


def test_incremental_edit_matches_fresh_parse() -> None:
    syn = spans.Syntax(PY, SAMPLE)
    at = SAMPLE.index(b"1)")
    syn.edit(at, at + 1, b"42, b")
    fresh = spans.Syntax(PY, syn.source)
    assert syn.source == SAMPLE.replace(b"1)", b"42, b)")
    assert str(syn.tree.root_node) == str(fresh.tree.root_node)
    span = spans.choose(syn, syn.source.index(b"42"))
    assert span.kind == "call.inner" and syn.source[span.start : span.end] == b"42, b"


def test_edit_out_of_range_is_clamped() -> None:
    syn = spans.Syntax(PY, SAMPLE)
    syn.edit(10_000, 20_000, b"y = 1\n")
    assert syn.source.endswith(b"y = 1\n")


def test_new_errors_counts_only_what_the_fill_breaks() -> None:
    source = b"def f(a):\n    return \n"
    syn = spans.Syntax(PY, source)
    span = spans.choose(syn, source.index(b"\n    return ") + 11)
    assert spans.new_errors(syn, span, b"a + 1") == 0
    assert spans.new_errors(syn, span, b"a + (1") > 0
    assert spans.new_errors(spans.Syntax(None, source), span, b"((((") == 0


def test_widen_grows_to_whole_nodes() -> None:
    syn = spans.Syntax(PY, SAMPLE)
    start = SAMPLE.index(b"g(")
    span = spans.widen(syn, start, start + 4)  # `g(a,`
    assert SAMPLE[span.start : span.end] == b"g(a, 1)"
    args = spans.widen(syn, start + 1, start + 5)  # `(a, `
    assert (SAMPLE[args.start : args.end], args.kind) == (b"(a, 1)", "call.inner")
    whole = spans.widen(syn, SAMPLE.index(b"x ="), SAMPLE.index(b"return") + 3)
    assert SAMPLE[whole.start : whole.end] == b"x = g(a, 1)\n    return x"
    assert whole.kind == "function.inner"  # the selection is the whole body


def test_widen_without_grammar_takes_whole_lines() -> None:
    syn = spans.Syntax(None, b"alpha beta\n  gamma delta\n")
    span = spans.widen(syn, 3, 16)
    assert syn.source[span.start : span.end] == b"alpha beta\n  gamma delta"


def test_fallback_without_grammar() -> None:
    source = b"task:\n    \n    <FILL>\n# TODO later\nsome text here\n"
    syn = spans.Syntax(None, source)
    assert syn.tree is None
    assert spans.choose(syn, source.index(b"    \n") + 4).kind == "block.inner"
    mid = spans.choose(syn, source.index(b"text"))
    assert (mid.kind, source[mid.start : mid.end]) == ("line", b"text here")
    assert [source[h.start : h.end] for h in spans.holes(syn)] == [b"<FILL>", b"# TODO later"]


def test_holes_lists_every_hole_in_order() -> None:
    source = b"def f():\n    ...\n\ndef g():\n    pass  # TODO\n"
    found = spans.holes(spans.Syntax(PY, source))
    assert [source[h.start : h.end] for h in found] == [b"...", b"pass", b"# TODO"]
    assert all(h.kind == "hole" for h in found)


def test_hole_at_from_the_indentation_or_the_end_of_its_line() -> None:
    source = b"def f():\n    ...\n\ndef g(a):\n\tx = <FILL>;  \r\n    return a\n"
    syn = spans.Syntax(PY, source)
    dots, fill = source.index(b"..."), source.index(b"<FILL>")
    line2 = source.index(b"\tx")
    for cursor in (dots - 4, dots - 1, dots, dots + 3):  # column 0, indentation, in, after
        hole = spans.hole_at(syn, cursor)
        assert hole is not None and source[hole.start : hole.end] == b"...", cursor
    for cursor in (line2, source.index(b";  \r") + 1, source.index(b"\r\n    r")):
        hole = spans.hole_at(syn, cursor)
        assert hole is not None and source[hole.start : hole.end] == b"<FILL>", cursor
    assert spans.hole_at(syn, fill - 2) is None  # in the code before the hole: not a request
    assert spans.hole_at(syn, line2 + 1) is None  # on the first character of that code too
    top = spans.Syntax(PY, b"x = <FILL>\n")
    assert spans.hole_at(top, 0) is not None and spans.hole_at(top, 1) is None
    assert spans.hole_at(syn, source.index(b"return")) is None  # a line without a hole
    assert spans.hole_at(syn, source.index(b"\n\ndef g") + 1) is None  # a blank line
    plain = spans.Syntax(None, b"task:\n    <FILL>\n  # TODO later\n")
    for cursor, want in ((6, b"<FILL>"), (16, b"<FILL>"), (17, b"# TODO later")):
        hole = spans.hole_at(plain, cursor)
        assert hole is not None and plain.source[hole.start : hole.end] == want, cursor


def test_lengths_grow_with_the_span_kind() -> None:
    source = b"def f(a):\n    \n\nx = g(a)\n"
    syn = spans.Syntax(PY, source)
    body = spans.choose(syn, source.index(b"    \n") + 4)
    rest = spans.choose(syn, source.index(b"g(a)") + 2)
    assert body.kind == "function.inner" and rest.kind == "call.inner"
    assert max(body.lengths) > max(rest.lengths)
    assert 1 <= len(body.lengths) <= 4 and list(body.lengths) == sorted(set(body.lengths))


def _check(span: spans.Span, size: int, cursor: int) -> None:
    assert 0 <= span.start <= span.end <= size
    assert span.start == min(max(cursor, 0), size) <= span.end
    assert span.lengths and all(n > 0 for n in span.lengths)


LANGS = [None, *sorted(languages.table())]
code_text = st.text(alphabet=st.sampled_from(list("ab =:(){}[];,.\"'#/\n\t \\<>")), max_size=80)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(LANGS), code_text, st.integers(-5, 100))
def test_choose_never_raises_on_random_text(name: str | None, text: str, cursor: int) -> None:
    lang = languages.table()[name] if name else None
    syn = spans.Syntax(lang, text.encode())
    _check(spans.choose(syn, cursor), len(syn.source), cursor)
    hole = spans.hole_at(syn, cursor)
    assert hole is None or 0 <= hole.start <= hole.end <= len(syn.source)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(LANGS), st.binary(max_size=80), st.integers(-5, 100), st.binary(max_size=8))
def test_choose_never_raises_on_random_bytes(
    name: str | None, data: bytes, cursor: int, fill: bytes
) -> None:
    lang = languages.table()[name] if name else None
    syn = spans.Syntax(lang, data)
    span = spans.choose(syn, cursor)
    _check(span, len(data), cursor)
    assert spans.new_errors(syn, span, fill) >= 0
    widened = spans.widen(syn, cursor, cursor + 3)
    assert 0 <= widened.start <= widened.end <= len(data)
    syn.edit(cursor, cursor + 2, fill)
    _check(spans.choose(syn, cursor), len(syn.source), cursor)


def test_new_errors_in_a_large_document_parses_only_the_enclosing_definition() -> None:
    method = "    def m{i}(self, a):\n        x = g(a, {i})\n        return \n\n"
    source = ("class C:\n" + "".join(method.format(i=i) for i in range(800))).encode()
    assert len(source) > 2 * spans.VALIDATION_BYTES
    syn = spans.Syntax(PY, source)
    cursor = source.index(b"return \n", len(source) // 2) + 7
    span = spans.choose(syn, cursor)
    lo, hi = spans._validation_region(syn, span.start, span.end)
    region = source[lo:hi]
    assert region.startswith(b"    def m") and len(region) < 100  # one method, indented
    count = spans.error_counter(syn, span)
    assert count(b"x + 1") == 0 and count(b"x + (1") > 0
    assert spans.new_errors(syn, span, b"x +") > 0
    small = spans.Syntax(PY, b"class C:\n" + region + b"\n")
    assert spans._validation_region(small, 12, 12) is None  # small: the whole document


# Run where a crash of tree-sitter (SIGSEGV) fails the test instead of killing pytest.
_PAST_THE_LAST_CHILD = r"""
import json
from coda_syntax import languages, spans

py = languages.resolve("python")
out = {}
functions = ("def f():\n    return 1\n" * 800).encode()  # the issue's repro: 17.6 KB
syn = spans.Syntax(py, functions)
count = spans.error_counter(syn, spans.choose(syn, len(functions)))
out["functions"] = [count(b"x = 1"), count(b"x = (")]
method = "    def m{i}(self):\n        return {i}\n\n"
big_class = ("class C:\n" + "".join(method.format(i=i) for i in range(600)) + "\n").encode()
syn = spans.Syntax(py, big_class)  # the blank line after a top-level class over 16 KB
count = spans.error_counter(syn, spans.choose(syn, len(big_class)))
out["class"] = [count(b"x = 1"), count(b"x = (")]
from coda_syntax.syntax import first_named_child_for_byte
root = syn.tree.root_node
out["helper"] = [first_named_child_for_byte(root, len(big_class)) is None,
                 first_named_child_for_byte(root, 0).type,
                 first_named_child_for_byte(root.named_children[0], len(big_class)) is None]
spans.VALIDATION_BYTES = 40  # every offset of small documents walks the region search
for name, lang in sorted(languages.table().items()):
    for source in (b"a = 1\nb = 2\n\n", b"f(x) {\n  y;\n}\n\n", b"class A:\n  def f(): pass\n\n"):
        syn = spans.Syntax(lang, source * 4)
        for cursor in range(len(syn.source) + 1):
            spans.new_errors(syn, spans.Span(cursor, cursor, "line", (4,)), b"z")
out["walked"] = True
print(json.dumps(out))
"""


def test_validation_past_the_last_child_of_a_large_document_does_not_crash() -> None:
    run = subprocess.run([sys.executable, "-c", _PAST_THE_LAST_CHILD], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    out = json.loads(run.stdout)
    assert out["functions"][0] == 0 and out["functions"][1] > 0
    assert out["class"][0] == 0 and out["class"][1] > 0
    assert out["helper"] == [True, "class_definition", True]
    assert out["walked"]
