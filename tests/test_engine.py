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
