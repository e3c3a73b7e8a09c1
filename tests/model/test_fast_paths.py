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


def test_window_steps_write_their_keys_after_the_context_in_place(tiny):
    """The window's keys/values go into per-layer buffers after the context's (no per-step
    concatenation): each step must see its own new tokens, exactly as a concatenation would."""
    model, tok = tiny
    prefix, suffix = prompt(tok)
    ids, key_mask = build_batch(prefix, suffix, [3, 7], tok.mask_id, tok.pad_id, "cpu")
    cache = ContextCache(model, ids, key_mask, len(prefix), [3, 7], SamplerConfig(
        context_cache=True))
    cache(ids, ids == tok.mask_id)                       # the full pass fills the buffers
    a, b = cache.start, cache.stop
    for token in (5, 9):                                  # two steps, each commits a token
        ids[:, len(prefix) + token % 3] = token
        mask = ids == tok.mask_id
        got = cache(ids, mask)
        hidden = model.hidden_states(ids[:, a:b], positions=torch.arange(a, b),
                                     key_mask=cache._split_mask(a, b),
                                     kv_context=cache.context_kv)  # context concatenated
        rows, cols = mask.nonzero(as_tuple=True)
        assert torch.equal(got, model.lm_head(hidden[rows, cols - 1 - a]))


def test_cache_runs_fewer_full_passes(tiny):
    model, tok = tiny
    prefix, suffix = prompt(tok)
    ids, key_mask = build_batch(prefix, suffix, [8], tok.mask_id, tok.pad_id, "cpu")
    cache = ContextCache(model, ids, None, len(prefix), [8], SamplerConfig(refresh_every=4))
    from coda_model import denoise
    denoise(model, ids, SamplerConfig(steps=8, skip_idle_steps=False), mask_id=tok.mask_id,
            forward=cache)
    assert cache.passes == 2 and cache.window_passes == 6


FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "coda-reference-tiny"


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


def batch_sizes_seen(model, monkeypatch):
    sizes = []
    real = model.hidden_states

    def spy(ids, **kw):
        sizes.append(ids.shape[0])
        return real(ids, **kw)

    monkeypatch.setattr(model, "hidden_states", spy)
    return sizes


@pytest.mark.parametrize("cached", [True, False])
def test_rows_that_commit_nothing_are_not_computed(tiny, monkeypatch, cached):
    """A short candidate commits only in the last steps: until then a step computes the
    longer rows alone, and the fills are those of computing every row every step."""
    from coda_model import forward

    model, tok = tiny
    prefix, suffix = prompt(tok)
    config = SamplerConfig(steps=16, context_cache=cached)
    sizes = batch_sizes_seen(model, monkeypatch)
    monkeypatch.setattr(forward, "ROWS_ON_DEMAND", False)
    every_row = infill(model, tok, prefix, suffix, [2, 5, 10], config)
    assert set(sizes) == {3}
    sizes.clear()
    monkeypatch.setattr(forward, "ROWS_ON_DEMAND", True)
    on_demand = infill(model, tok, prefix, suffix, [2, 5, 10], config)
    assert ids_of(on_demand) == ids_of(every_row)
    assert 1 in sizes and 2 in sizes and sum(sizes) < 3 * len(sizes)


def cache_after_first_pass(model, tok, prefix, suffix, lengths, shared):
    ids, key_mask = build_batch(prefix, suffix, lengths, tok.mask_id, tok.pad_id, "cpu")
    cache = ContextCache(model, ids, key_mask, len(prefix), lengths,
                         SamplerConfig(context_cache=True, cache_window=4,
                                       shared_context=shared))
    mask = ids == tok.mask_id
    mask[:-1] = False   # the longest row commits first
    return cache, cache(ids, mask)


def test_shared_context_moves_the_longest_rows_keys_to_each_row(tiny):
    """Layer-0 keys/values depend on the token and its position only: the shared ones (taken
    from the longest row, the suffix re-rotated per row) must equal each row's own. The
    longest row's keys are its own full pass at every layer, and so are its logits."""
    model, tok = tiny
    prefix, suffix = long_prompt(tok)
    lengths = [3, 6, 11]
    shared, logits = cache_after_first_pass(model, tok, prefix, suffix, lengths, True)
    own, own_logits = cache_after_first_pass(model, tok, prefix, suffix, lengths, False)
    assert shared.shared and shared.passes == 1 and shared.window_passes == 0
    torch.testing.assert_close(logits, own_logits, atol=1e-4, rtol=1e-4)
    real = shared._split_mask(shared.start, shared.stop)[:, : shared.context_kv[0][0].shape[2]]
    for layer, ((sk, sv), (ok, ov)) in enumerate(zip(shared.context_kv, own.context_kv,
                                                     strict=True)):
        rows = range(len(lengths)) if layer == 0 else [len(lengths) - 1]
        for r in rows:
            torch.testing.assert_close(sk[r][:, real[r]], ok[r][:, real[r]], atol=1e-4, rtol=0)
            torch.testing.assert_close(sv[r][:, real[r]], ov[r][:, real[r]], atol=1e-4, rtol=0)
    deeper = shared.context_kv[-1][0][0][:, real[0]] - own.context_kv[-1][0][0][:, real[0]]
    assert deeper.abs().max() > 1e-4   # a shorter row's deeper keys: the approximation


def test_shared_context_fills_every_row_when_all_commit_in_the_first_step(tiny):
    """One step: every row commits in the first call, the shorter ones through a window pass
    against the shared context; the longest row's fill is its own full pass's."""
    model, tok = tiny
    prefix, suffix = long_prompt(tok)
    shared = infill(model, tok, prefix, suffix, [2, 4, 7],
                    SamplerConfig(steps=1, context_cache=True, shared_context=True))
    own = infill(model, tok, prefix, suffix, [2, 4, 7], SamplerConfig(steps=1))
    assert [len(c.confidences) for c in shared] == [2, 4, 7]
    assert all(tok.mask_id not in c.ids for c in shared)
    assert shared[-1].ids == own[-1].ids


# --------------------------------------------------------------------------------------------
# ContextCarry: context keys/values handed from one request to the next (typing)
# --------------------------------------------------------------------------------------------

def long_prompt(tok):
    body = "".join(f"    def method_{i}(self, value):\n        return value + {i}\n\n"
                   for i in range(12))
    return tok.encode("class Numbers:\n" + body + "    def total(self):\n        return "), \
        tok.encode("\n\n    def count(self):\n        return len(self.items)\n")


def first_pass_kv(model, tok, prefix, suffix, lengths, carry=None):
    ids, key_mask = build_batch(prefix, suffix, lengths, tok.mask_id, tok.pad_id, "cpu")
    key_mask = None if key_mask.all() else key_mask
    cache = ContextCache(model, ids, key_mask, len(prefix), lengths,
                         SamplerConfig(context_cache=True), carry)
    logits = cache(ids, ids == tok.mask_id)
    return cache, logits


def test_a_rotated_key_moves_position_by_one_more_rotation():
    from coda_model.forward import _rotate
    from coda_model.modeling import apply_rotary, rotary_tables

    k = torch.randn(1, 2, 1, 64, generator=torch.Generator().manual_seed(0))

    def at(p):
        return apply_rotary(k, *[t[:, None, None, :] for t in
                                 rotary_tables(torch.tensor([p]), 64, 10000.0, k.dtype)])

    [(moved, _)] = _rotate([(at(300), k)], torch.tensor([-7]), 10000.0)
    # fp32 rotations composed at position ~300: ~1e-5 apart, as the sin/cos tables round
    torch.testing.assert_close(moved, at(293), atol=5e-5, rtol=1e-5)
    rows = torch.cat([at(50), at(60)])
    [(both, _)] = _rotate([(rows, rows)], torch.tensor([5, -10]), 10000.0)
    torch.testing.assert_close(both, torch.cat([at(55), at(50)]), atol=5e-5, rtol=1e-5)


def test_carry_matches_shifted_windows():
    from coda_model import ContextCarry

    carry = ContextCarry(max_shift=16)
    carry.prefix_ids = list(range(100, 200))
    assert carry.match(list(range(100, 150))) == (0, 50)
    assert carry.match(list(range(107, 200)) + [5, 6]) == (7, 93)   # far end dropped 7 tokens
    assert carry.match(list(range(130, 200)))[1] == 0   # beyond max_shift: nothing carried
    assert carry.match([1, 2, 3]) == (0, 0)
    # the far end moved back (a backspace): the caller drops the tokens before the carry's
    assert carry.overhang([5, 6, 7] + list(range(100, 200))) == 3
    assert carry.overhang(list(range(100, 200))) == 0
    assert carry.overhang(list(range(300, 400))) == 0


def test_layer_zero_keys_carried_across_a_shifted_window_equal_fresh_ones(tiny):
    """Layer-0 keys/values depend on the token and its position only, so whatever the carry
    re-rotated (prefix shifted left, suffix moved per row) must equal a fresh computation."""
    from coda_model import ContextCarry

    model, tok = tiny
    prefix, suffix = long_prompt(tok)
    carry = ContextCarry(margin=4)
    first_pass_kv(model, tok, prefix, suffix, [3, 7], carry)
    moved = prefix[5:] + tok.encode("self.")   # far end dropped 5 tokens, the user typed
    warm, _ = first_pass_kv(model, tok, moved, suffix, [4, 9], carry)
    cold, _ = first_pass_kv(model, tok, moved, suffix, [4, 9])
    assert carry.last_reused == len(prefix) - 5 - 4 + len(suffix)
    (wk, wv), (ck, cv) = warm.context_kv[0], cold.context_kv[0]
    real = torch.cat([torch.ones(len(moved) - 1, dtype=torch.bool),
                      warm.key_mask[:, warm.stop:].all(0)])  # columns no row pads
    torch.testing.assert_close(wk[:, :, real], ck[:, :, real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wv[:, :, real], cv[:, :, real], atol=1e-5, rtol=1e-5)


def test_carry_of_an_unchanged_prompt_reproduces_the_exact_first_pass(tiny):
    model, tok = tiny
    from coda_model import ContextCarry

    prefix, suffix = long_prompt(tok)
    carry = ContextCarry()   # one row: carried keys/values are exactly what a full pass makes
    _, cold = first_pass_kv(model, tok, prefix, suffix, [6], carry)
    _, warm = first_pass_kv(model, tok, prefix, suffix, [6], carry)
    assert carry.last_reused == len(prefix) - carry.margin + len(suffix)
    torch.testing.assert_close(warm, cold, atol=1e-4, rtol=1e-4)
    config = SamplerConfig(steps=6, context_cache=True)
    assert ids_of(infill(model, tok, prefix, suffix, [6], config, carry=carry)) == \
        ids_of(infill(model, tok, prefix, suffix, [6], config))


def test_carry_lets_go_of_changed_suffixes_and_stale_prefixes(tiny):
    model, tok = tiny
    from coda_model import ContextCarry

    prefix, suffix = long_prompt(tok)
    carry = ContextCarry(max_stale=6)
    first_pass_kv(model, tok, prefix, suffix, [4], carry)
    first_pass_kv(model, tok, prefix, tok.encode("\n# changed\n") + suffix, [4], carry)
    assert carry.last_reused == len(prefix) - carry.margin   # the prefix only
    typed = prefix
    for word in ["self", ".", "items", "[", "0", "]", " +", " 1"]:
        typed = typed + tok.encode(word)
        first_pass_kv(model, tok, typed, suffix, [4], carry)
        if carry.last_reused == 0:
            break
    assert carry.last_reused == 0 and carry.stale == 0   # drifted: a full pass, a new carry
    first_pass_kv(model, tok, typed, suffix, [4], carry)
    assert carry.last_reused > 0


def test_a_suffix_shorter_than_the_canvas_difference_is_carried(tiny):
    from coda_model import ContextCarry

    model, tok = tiny
    prefix, _ = long_prompt(tok)
    suffix = tok.encode(")\n\n# done\n")[:3]   # row 0's suffix ends inside the longer row's hole
    carry = ContextCarry()
    config = SamplerConfig(steps=3, context_cache=True)
    infill(model, tok, prefix, suffix, [4, 9], config, carry=carry)
    cands = infill(model, tok, prefix + tok.encode("x"), suffix, [4, 9], config, carry=carry)
    assert [c.length for c in cands] == [4, 9]
    # both the prefix (less the recomputed margin) and the suffix came from the carry
    assert carry.last_reused > len(suffix) and carry.suffix_ids == suffix
