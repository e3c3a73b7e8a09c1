"""The engine caps the context at the model's trained positions and keeps typing batches small."""

import dataclasses

import pytest

from coda_lsp.core.engine import (
    CARRIED_DOCUMENTS,
    CARRY_IDLE_S,
    INLINE_CANDIDATES,
    Engine,
    FillJob,
    typing_lengths,
)
from coda_lsp.core.settings import Settings


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine.load(tiny_model_dir, device="cpu")


def test_context_budget_is_capped_at_trained_positions(engine):
    trained = engine.model.config.max_position_embeddings
    assert engine.context_budget(dataclasses.replace(Settings(), context_tokens=10**6)) == trained
    assert engine.context_budget(dataclasses.replace(Settings(), context_tokens=64)) == 64


def test_typing_tries_fewer_lengths_than_hole_fills(engine):
    """A hole fill tries every length; a keystroke the second shortest alone (the surest,
    measured), or the two shortest when the caller shows alternatives."""
    job = FillJob(prefix="def add(a, b):\n    return ", suffix="\n", span_lengths=(2, 4, 8, 16),
                  steps=2, settings=Settings())

    def lengths(**kw):
        return sorted(f.length for f in engine.fill(dataclasses.replace(job, **kw)).fills)

    every = lengths()  # each mask count, plus the healed prompt's tokens if any
    assert len(every) == 4
    assert lengths(fast=True) == every[1:2]
    assert lengths(fast=True, choices=2) == every[:INLINE_CANDIDATES]


def test_typing_lengths_for_short_spans():
    assert typing_lengths([3]) == [3] and typing_lengths([3], choices=4) == [3]
    assert typing_lengths([2, 5, 9]) == [5] and typing_lengths([2, 5, 9], choices=3) == [2, 5]


def test_typing_carries_context_per_document(engine):
    body = "".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(20))
    job = FillJob(prefix=body + "def g(x):\n    return ", suffix="\n\nprint(g(2))\n",
                  span_lengths=(4, 8), steps=2, settings=Settings(), fast=True,
                  carry_key="file:///a.py")
    assert engine.fill(job).reused == 0   # the document's first request: a full pass
    typed = dataclasses.replace(job, prefix=job.prefix + "x")
    assert engine.fill(typed).reused > 100
    other = dataclasses.replace(typed, carry_key="file:///b.py")
    assert engine.fill(other).reused == 0   # another document has its own carry
    hole = dataclasses.replace(typed, fast=False)
    assert engine.fill(hole).reused == 0   # hole fills carry nothing across requests
    engine.carried_documents = 3  # the bound, whatever the model's size allows
    for i in range(3 + 1):
        engine.fill(dataclasses.replace(job, carry_key=f"file:///{i}.py"))
    assert len(engine.carries) == 3 and "file:///a.py" not in engine.carries


def test_carries_left_idle_go_but_the_most_recent_stay(engine):
    """An HTTP client that left never says so: its carry goes once unused for CARRY_IDLE_S,
    unless it is among the CARRIED_DOCUMENTS most recently used (a large model's few)."""
    fresh = Engine(engine.model, engine.tokenizer)
    fresh.carried_documents = 64
    for i in range(10):
        fresh.carry(f"client:{i}", now=1000.0 + i)
    fresh.carry("client:0", now=1010.0)  # used again: the most recent now
    assert len(fresh.carries) == 10
    fresh.carry("client:new", now=1003.5 + CARRY_IDLE_S)  # 1..3 idle past the limit
    assert list(fresh.carries) == [f"client:{i}" for i in range(4, 10)] + ["client:0",
                                                                          "client:new"]
    fresh.carry("client:last", now=5000.0)  # everyone idle: the most recent few stay
    assert len(fresh.carries) == CARRIED_DOCUMENTS
    assert list(fresh.carries)[-3:] == ["client:0", "client:new", "client:last"]
    assert set(fresh.carry_used) == set(fresh.carries)


def test_lone_surrogates_in_the_context_still_complete(engine):
    # a client may send a lone UTF-16 surrogate as "\ud800" in JSON; the tokenizer refuses it
    job = FillJob(prefix="s = '\ud800'\ndef add(a, b):\n    return ", suffix="\n# \udfff end\n",
                  span_lengths=(4, 8), steps=2, settings=Settings())
    fills = engine.fill(job).fills
    assert len(fills) == 2 and all("\ud800" not in f.text for f in fills)


@pytest.mark.parametrize("cpuinfo, expected", [
    ("flags\t\t: fpu sse2 avx2 avx512f avx512bw\n", None),            # emulated bf16: fp32
    ("flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n", "int8"),  # int8 dot products
    ("flags\t\t: fpu avx2 avx_vnni\n", "int8"),
    ("flags\t\t: fpu avx512f avx512_bf16 avx512_vnni amx_tile\n", "bfloat16"),
    ("flags\t\t: fpu avx512f amx_bf16 amx_tile\n", "bfloat16"),
    ("Features\t: fp asimd sve bf16 i8mm\n", "bfloat16"),                 # aarch64
    (None, None),                                                         # no /proc/cpuinfo
])
def test_cpu_dtype_follows_the_cpu(tmp_path, monkeypatch, cpuinfo, expected):
    from coda_lsp.core import engine as engine_module
    from coda_model import quantize

    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text("processor\t: 0\n" + cpuinfo)
    monkeypatch.setattr(quantize, "CPUINFO", path)
    monkeypatch.setattr(quantize, "int8_available", lambda: True)
    assert engine_module.pick_dtype(None, "cpu") == expected
    assert engine_module.pick_dtype("auto", "cpu") == expected
    assert engine_module.pick_dtype("float32", "cpu") == "float32"  # --dtype still decides
    assert engine_module.pick_dtype(None, "cuda") == "bfloat16"
    big = engine_module.budget.BIG_MODEL_PARAMS
    assert engine_module.pick_dtype(None, "cpu", big) == "int8"  # a 1.7B: int8 on any CPU
    assert engine_module.pick_dtype(None, "cpu", big - 1) == expected
    assert engine_module.pick_dtype("bfloat16", "cpu", big) == "bfloat16"
    assert engine_module.pick_dtype(None, "cuda", big) == "bfloat16"


def test_a_short_real_fill_beats_a_long_padded_one(engine, monkeypatch):
    """The issue's case: `0` on a mostly padded canvas beat `0, 1,1` on the canvas mean."""
    from coda_lsp.core import engine as engine_module
    from coda_model import InfillCandidate

    def candidates(model, tok, prefix_ids, suffix_ids, lengths, config, **kw):
        padded = [0.3] + [0.99] * 15   # "0", then 15 confident pads
        written = [0.6, 0.5, 0.7, 0.6]
        return [InfillCandidate(4, [11, 12, 13, 14], "0, 1,1", written, sum(written) / 4),
                InfillCandidate(16, [11], "0", padded, sum(padded) / 16)]

    monkeypatch.setattr(engine_module, "infill", candidates)
    job = FillJob(prefix="xs = [", suffix="]\n", span_lengths=(4, 16), steps=4,
                  settings=Settings())
    fills = engine.fill(job).fills
    assert [round(f.confidence, 3) for f in fills] == [0.6, 0.3]
    assert [f.text for f in engine_module.rank(fills, 0.1, lambda t: 0)] == ["0, 1,1", "0"]


@pytest.mark.parametrize("multiline, mid_statement, fresh_line", [
    ("auto", "item in items:", "item in items:\n    print(item)"),
    ("never", "item in items:", "item in items:"),
    ("always", "item in items:\n    print(item)", "item in items:\n    print(item)"),
])
def test_the_multiline_setting_decides_where_inline_fills_keep_their_lines(
        engine, monkeypatch, multiline, mid_statement, fresh_line):
    """"auto": mid-statement, the lines a model runs on to are cut (HTTP/inline path); on a
    fresh line and in holes they are kept. "never" / "always": cut / kept everywhere inline."""
    from coda_lsp.core import engine as engine_module
    from coda_lsp.core import fim
    from coda_model import InfillCandidate

    def candidates(model, tok, prefix_ids, suffix_ids, lengths, config, **kw):
        return [InfillCandidate(n, [11], "item in items:\n    print(item)", [0.9], 0.9)
                for n in lengths]

    monkeypatch.setattr(engine_module, "infill", candidates)
    chosen = dataclasses.replace(Settings(), multiline=multiline)
    assert {f.text for f in fim.fill_between(engine, "for ", "\n", chosen, 2).fills} == \
        {mid_statement}
    assert {f.text for f in fim.fill_between(engine, "def f():\n    ", "\n", chosen,
                                              2).fills} == {fresh_line}
    hole = FillJob(prefix="for ", suffix="\n", span_lengths=(4,), steps=2, settings=chosen)
    assert engine.fill(hole).fills[0].text == "item in items:\n    print(item)"


def test_the_last_prefix_token_is_decided_again_with_the_fill(engine, monkeypatch):
    """Token healing: "return a" cut after "a" is a split the model never saw; the token goes
    from the prefix, the fill's first token must start with its text, and the ghost text is
    what follows the cursor; a hole's fill likewise replaces the hole without the text."""
    from coda_lsp.core import engine as engine_module
    from coda_lsp.core import fim
    from coda_model import InfillCandidate

    calls = []

    def candidates(model, tok, prefix_ids, suffix_ids, lengths, config, **kw):
        calls.append((list(prefix_ids), list(lengths), kw.get("first_banned")))
        return [InfillCandidate(n, [11], " abc + b", [0.9], 0.9) for n in lengths]

    monkeypatch.setattr(engine_module, "infill", candidates)
    tok = engine.tokenizer
    word = fim.fill_between(engine, "def add(a, b):\n    return a", "\n", Settings(), 2)
    hole = engine.fill(FillJob(prefix="x = a", suffix="\n", span_lengths=(4,), steps=2,
                               settings=Settings()))
    monkeypatch.setattr(Engine, "healing", lambda self, ids: None)   # healing off
    fim.fill_between(engine, "def add(a, b):\n    return a", "\n", Settings(), 2)
    (word_ids, word_lengths, banned), (hole_ids, _, hole_ban), (ids, lengths, _) = calls
    assert tok.decode(ids[-1:]) == " a" and word_ids == ids[:-1]
    assert word_lengths == [n + 1 for n in lengths]   # the canvas holds the token again
    assert banned is not None and hole_ban is not None
    assert tok.decode(hole_ids) == "x ="
    allowed = {i for i in range(len(banned)) if not banned[i]}
    assert allowed == {i for i, t in enumerate(tok.token_texts) if t.startswith(" a")}
    assert {f.text for f in word.fills} == {"bc + b"}       # " a" was typed already
    assert hole.fills[0].text == "bc + b"


@pytest.mark.parametrize("source, healed, taken_back", [
    ("f(x)", ")", 1),                  # punctuation: ")" may become "):" or "))"
    ("return a", " a", 1),             # a word piece with its space
    ("x = self.ite", "ite", 2),        # "it" + "e": a token starts with "ite" ("item")
    ("x = ", " ", 1),                  # BPE joins the blank to the next word
])
def test_healing_takes_back_the_tokens_the_cursor_cut(engine, source, healed, taken_back):
    tok = engine.tokenizer
    ids = tok.encode(source)
    heal = engine.healing(ids)
    assert heal.text == healed and heal.prefix_ids == ids[:-taken_back]
    assert heal.extra == taken_back and tok.decode(heal.prefix_ids) + heal.text == source
    allowed = {i for i in range(len(heal.banned)) if not heal.banned[i]}
    specials = {tok.mask_id, tok.pad_id, tok.eos_id, *tok.control_ids}
    assert allowed == {i for i, t in enumerate(tok.token_texts)
                       if t.startswith(healed) and i not in specials}


def test_healing_stops_where_no_token_spans_the_pieces(engine):
    """"x = self.ite": no token starts with ".ite", so "." stays in the prompt."""
    texts = engine.tokenizer.token_texts
    assert any(t.startswith("ite") for t in texts) and not any(t.startswith(".ite")
                                                               for t in texts)
    assert engine.healing(engine.tokenizer.encode("x = self.ite")).text == "ite"


def test_healing_gives_back_only_the_last_blank_of_an_indentation(engine):
    """BPE gives a word the blank before it (" return"), so an indentation the cursor ends is
    cut one blank short and the fill starts with that blank."""
    tok = engine.tokenizer
    source = "def f():\n        "
    ids = tok.encode(source)
    assert tok.token_texts[ids[-1]] == "    "   # this tokenizer's last token: four blanks
    heal = engine.healing(ids)
    assert tok.decode(heal.prefix_ids) == source[:-1] and heal.text == " "
    assert heal.extra == 1


def test_healing_leaves_one_token_prefixes_and_parts_of_characters_alone(engine, monkeypatch):
    tok = engine.tokenizer
    assert engine.healing(tok.encode("x")) is None        # the fill needs a token before it
    ids = tok.encode("x = y")
    texts = list(tok.token_texts)
    texts[ids[-1]] = "\ufffd"                            # a byte of a character, on its own
    monkeypatch.setitem(vars(tok), "token_texts", texts)   # the cached property's value
    assert engine.healing(ids) is None


@pytest.mark.parametrize("text", ["import import", " self self", "1,1,1,1", "self.self.self.",
                                  "x = x = x = x"])
def test_stuttering_fills_are_degenerate(text):
    from coda_lsp.core.engine import degenerate

    assert degenerate(text)


@pytest.mark.parametrize("text", ["import sys", "self.items.pop()", "f(a, b, c)", "[0, 1]",
                                  '"""Stack."""', "x == y", "a, a", "))", "0, 1,1",
                                  "return self.x + self.y"])
def test_fluent_fills_are_not_degenerate(text):
    from coda_lsp.core.engine import degenerate

    assert not degenerate(text)


def test_rank_puts_degenerate_fills_after_fluent_ones():
    from coda_lsp.core.engine import Fill, rank

    fills = [Fill("import import", 0.9, 4), Fill("1,1,1,1", 0.8, 8), Fill("import sys", 0.3, 4),
             Fill("import (", 0.95, 4)]
    ranked = rank(fills, 0.1, lambda t: t.count("("))
    assert [f.text for f in ranked] == ["import sys", "import import", "1,1,1,1", "import ("]


def test_hole_fills_take_the_cached_path_unless_exact_is_set(engine, monkeypatch):
    from coda_lsp.core import engine as engine_module

    configs = []

    def spy(*args, **kw):
        configs.append(args[5])
        return real_infill(*args, **kw)

    real_infill = engine_module.infill
    monkeypatch.setattr(engine_module, "infill", spy)
    job = FillJob(prefix="def add(a, b):\n    return ", suffix="\n", span_lengths=(2, 4, 8),
                  steps=4, settings=Settings())
    engine.fill(job)
    exact = dataclasses.replace(job, settings=dataclasses.replace(Settings(),
                                                                  fill_hole_exact=True))
    engine.fill(exact)
    assert [c.context_cache for c in configs] == [True, False]
    assert configs[0].cache_window > 0 == engine.sampler(Settings(), 8, fast=True).cache_window
    assert configs[0].shared_context and not engine.sampler(Settings(), 8, fast=True).shared_context
    assert engine.fill(job).reused == 0   # cached within the request, never carried


def test_cached_hole_fill_equals_the_exact_one_when_every_step_is_a_full_pass(engine,
                                                                            monkeypatch):
    """One step: the cache's first (and only) pass is the full pass, so the fills agree. With
    the shared context only the longest candidate's pass is a full pass of its own."""
    from coda_lsp.core import engine as engine_module

    body = "".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(6))
    job = FillJob(prefix=body + "def g(x):\n    return ", suffix="\n\nprint(g(2))\n",
                  span_lengths=(3, 6, 12), steps=1, settings=Settings())
    exact = dataclasses.replace(job, settings=dataclasses.replace(Settings(),
                                                                  fill_hole_exact=True))
    slow, shared = engine.fill(exact).fills, engine.fill(job).fills
    assert len(shared) == 3 and shared[-1].text == slow[-1].text
    assert shared[-1].confidence == pytest.approx(slow[-1].confidence, abs=1e-4)
    monkeypatch.setattr(engine_module, "SHARED_HOLE_CONTEXT", False)
    fast = engine.fill(job).fills
    assert [f.text for f in fast] == [f.text for f in slow] and len(fast) == 3
    assert [f.confidence for f in fast] == pytest.approx([f.confidence for f in slow], abs=1e-4)


def test_fills_commit_padding_last(engine):
    for fast in (True, False):
        assert engine.sampler(Settings(), 8, fast).stop_weight == 0.0


def test_a_fill_shown_while_it_sharpens_ends_where_the_fill_will(engine):
    from coda_lsp.core.engine import MASK_GLYPH

    tok = engine.tokenizer
    a, b, c = tok.encode("x ="), tok.encode(" 1"), tok.encode("y")
    fim = tok.backend.token_to_id("<|fim_prefix|>")
    shown = engine.partial_text([*a, tok.mask_id, *b, fim, *c])
    assert shown == tok.decode(a) + MASK_GLYPH + tok.decode(b)
    assert engine.partial_text([*a, tok.pad_id, *c]) == tok.decode(a)


def test_the_warm_up_fills_through_the_typing_path(engine, monkeypatch):
    """What --compile runs at start on a GPU (there it compiles); here it must simply fill."""
    from coda_lsp.core import engine as engine_module
    calls = []
    real = engine_module.infill
    monkeypatch.setattr(engine_module, "infill",
                        lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    assert engine.warm_up() > 0
    assert calls == [[8, 16], [16]]
