"""Fast infill paths: the context K/V cache and threshold decoding against the exact path."""

import json
from pathlib import Path

import pytest
import torch

from coda_model import SamplerConfig, infill, load_model, load_tokenizer
from coda_model.forward import ContextCache
from coda_model.infill import build_batch


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


def ids_of(cands):
    return [c.ids for c in cands]


def prompt(tok):
    return (tok.encode("class Stack:\n    def push(self, item):\n        "),
            tok.encode("\n\n    def pop(self):\n        return self.items.pop()\n"))


def test_cache_refreshed_every_step_equals_the_exact_path(tiny):
    model, tok = tiny
    prefix, suffix = prompt(tok)
    exact = infill(model, tok, prefix, suffix, [4, 8], SamplerConfig(steps=8))
    cached = infill(model, tok, prefix, suffix, [4, 8],
                    SamplerConfig(steps=8, context_cache=True, refresh_every=1))
    assert ids_of(cached) == ids_of(exact)


def test_window_pass_with_fresh_cache_matches_full_logits(tiny):
    """Right after a refresh, the window computation must reproduce the full pass exactly."""
    model, tok = tiny
    prefix, suffix = prompt(tok)
    ids, key_mask = build_batch(prefix, suffix, [3, 7], tok.mask_id, tok.pad_id, "cpu")
    config = SamplerConfig(context_cache=True)
    cache = ContextCache(model, ids, key_mask, len(prefix), [3, 7], config)
    mask = ids == tok.mask_id
    full = cache(ids, mask)
    window = cache(ids, mask)  # same inputs, cached context: identical up to float noise
    assert cache.passes == 1 and cache.window_passes == 1
    torch.testing.assert_close(window, full, atol=1e-4, rtol=1e-4)


def test_cache_runs_fewer_full_passes(tiny):
    model, tok = tiny
    prefix, suffix = prompt(tok)
    ids, key_mask = build_batch(prefix, suffix, [8], tok.mask_id, tok.pad_id, "cpu")
    cache = ContextCache(model, ids, None, len(prefix), [8], SamplerConfig(refresh_every=4))
    from coda_model import denoise
    denoise(model, ids, SamplerConfig(steps=8, skip_idle_steps=False), mask_id=tok.mask_id,
            forward=cache)
    assert cache.passes == 2 and cache.window_passes == 6


FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "coda-reference-tiny"


@pytest.mark.skipif(not (FIXTURE / "golden.json").is_file(), reason="../shared is absent")
def test_golden_infill_through_the_infill_api_with_refresh_every_step():
    model = load_model(FIXTURE)
    tok = load_tokenizer(FIXTURE)
    for case in json.loads((FIXTURE / "golden.json").read_text())["infill"]:
        ids = case["input_ids"]
        first = ids.index(tok.mask_id)
        n = ids.count(tok.mask_id)
        config = SamplerConfig(steps=case["steps"], alg=case["alg"], context_cache=True,
                               refresh_every=1)
        [cand] = infill(model, tok, ids[:first], ids[first + n:], [n], config)
        middle = case["output_ids"][first : first + n]
        stops = {tok.pad_id, tok.eos_id}
        kept = next((i for i, t in enumerate(middle) if t in stops), n)
        assert cand.ids == middle[:kept]


def test_cancellation_still_works_on_the_cached_path(tiny):
    from coda_model import Cancelled

    model, tok = tiny
    prefix, suffix = prompt(tok)
    polls = []

    def should_stop():
        polls.append(1)
        return len(polls) > 3

    with pytest.raises(Cancelled):
        infill(model, tok, prefix, suffix, [8],
               SamplerConfig(steps=8, context_cache=True, threshold=2.0),
               should_stop=should_stop)
    assert len(polls) == 4


def test_cached_threshold_decoding_fills_every_mask_in_bf16(tiny_model_dir):
    model, tok = load_model(tiny_model_dir, dtype="bf16"), load_tokenizer(tiny_model_dir)
    prefix, suffix = prompt(tok)
    steps = []
    cands = infill(model, tok, prefix, suffix, [4, 12],
                   SamplerConfig(steps=12, context_cache=True, threshold=0.5, refresh_every=4),
                   on_step=lambda done, total: steps.append(done))
    assert [c.length for c in cands] == [4, 12]
    assert all(tok.mask_id not in c.ids for c in cands)
    assert all(len(c.confidences) == c.length for c in cands)
    assert steps and steps == sorted(steps)
