"""The engine caps the context at the model's trained positions and keeps typing batches small."""

import dataclasses

import pytest

from coda_lsp.engine import INLINE_CANDIDATES, Engine, FillJob
from coda_lsp.settings import Settings


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine.load(tiny_model_dir, device="cpu")


def test_context_budget_is_capped_at_trained_positions(engine):
    trained = engine.model.config.max_position_embeddings
    assert engine.context_budget(dataclasses.replace(Settings(), context_tokens=10**6)) == trained
    assert engine.context_budget(dataclasses.replace(Settings(), context_tokens=64)) == 64


@pytest.mark.parametrize("fast, expected", [(True, INLINE_CANDIDATES), (False, 4)])
def test_typing_tries_fewer_lengths_than_hole_fills(engine, fast, expected):
    job = FillJob(prefix="def add(a, b):\n    return ", suffix="\n", span_lengths=(2, 4, 8, 16),
                  steps=2, settings=Settings(), fast=fast)
    assert len(engine.fill(job).fills) == expected


def test_typing_carries_context_per_document(engine):
    from coda_lsp.engine import CARRIED_DOCUMENTS

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
    assert engine.fill(hole).reused == 0   # hole fills are exact: no carry
    for i in range(CARRIED_DOCUMENTS + 1):
        engine.fill(dataclasses.replace(job, carry_key=f"file:///{i}.py"))
    assert len(engine.carries) == CARRIED_DOCUMENTS and "file:///a.py" not in engine.carries


def test_lone_surrogates_in_the_context_still_complete(engine):
    # a client may send a lone UTF-16 surrogate as "\ud800" in JSON; the tokenizer refuses it
    job = FillJob(prefix="s = '\ud800'\ndef add(a, b):\n    return ", suffix="\n# \udfff end\n",
                  span_lengths=(4, 8), steps=2, settings=Settings())
    fills = engine.fill(job).fills
    assert len(fills) == 2 and all("\ud800" not in f.text for f in fills)
