"""The batched (device-side) forward process keeps the reference's invariants and rates."""

import pytest
import torch

from training.objective.batched import corrupt_batched, dense_spans, fim_rows, random_tokens
from training.objective.masks import IGNORE, ObjectiveConfig, corrupt
from training.run.recipes import SPAN_FIM_BLOCK

MASK, PAD, VOCAB = 2, 0, 300


def batch(B=64, L=96, seed=0, n_spans=24, max_span=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, VOCAB, (B, L), generator=g)
    start = torch.randint(0, L - 1, (B, n_spans), generator=g)
    end = (start + torch.randint(1, max_span, (B, n_spans), generator=g)).clamp(max=L)
    return ids, torch.stack([start, end], -1)


def run(cfg, ids, spans, seed=0, **kw):
    return corrupt_batched(ids, cfg, mask_id=MASK, pad_id=PAD, vocab_size=VOCAB,
                           generator=torch.Generator().manual_seed(seed), spans=spans, **kw)


@pytest.mark.parametrize("cfg", [
    ObjectiveConfig(),
    ObjectiveConfig(p_block=1.0),
    ObjectiveConfig(p_span=1.0),
    ObjectiveConfig(p_fim=1.0, fim_max_middle=16, fim_max_extra=8),
    SPAN_FIM_BLOCK,
    ObjectiveConfig(p_edit=1.0, edit_rate=0.2, p_prefix=0.5, p_truncate=0.5),
])
def test_invariants_of_every_mode(cfg):
    ids, spans = batch()
    c = run(cfg, ids, spans)
    assert not c.masked[:, 0].any()
    assert torch.equal(c.input_ids[c.masked], torch.full_like(c.input_ids[c.masked], MASK))
    assert torch.allclose(c.weights[c.masked], (1 / c.sigma[:, None]).expand_as(c.weights)
                          [c.masked])
    assert torch.equal(c.targets == IGNORE, c.weights == 0)
    assert ((c.sigma >= cfg.eps) & (c.sigma <= 1)).all()
    assert c.masked.any(1).float().mean() > 0.9       # almost every row trains on something
    torch.testing.assert_close(run(cfg, ids, spans).input_ids, c.input_ids)  # seeded


def test_token_masking_rate_is_sigma():
    ids, _ = batch(B=512, L=128)
    c = run(ObjectiveConfig(), ids, None)
    rate = c.masked[:, 1:].float().mean(1)
    assert (rate - c.sigma).abs().mean() < 0.05


def test_span_masks_are_unions_of_whole_spans_within_budget():
    ids, spans = batch(B=128)
    c = run(ObjectiveConfig(p_span=1.0, p_span_from_inside=0.0), ids, spans)
    L = ids.shape[1]
    spanned = 0
    for b in range(ids.shape[0]):
        covered = torch.zeros(L, dtype=torch.bool)
        for s, e in spans[b].tolist():
            covered[max(s, 1):e] = True
        budget = float(c.sigma[b]) * (L - 1)
        if min(e - max(s, 1) for s, e in spans[b].tolist()) <= budget:
            spanned += 1
            assert not (c.masked[b] & ~covered).any(), b   # only whole spans are masked
            assert c.masked[b].sum() <= budget
    assert spanned > 0.8 * ids.shape[0]


def test_fim_rows_keep_prefix_insert_pad_and_shift_the_suffix():
    ids, spans = batch(B=64, L=80)
    out, canvas = fim_rows(ids, spans, PAD, 12, 6, torch.Generator().manual_seed(0))
    L = ids.shape[1]
    for b in range(ids.shape[0]):
        where = canvas[b].nonzero().flatten().tolist()
        start, stop = where[0], where[-1] + 1
        assert where == list(range(start, stop)) and start >= 1
        row = out[b].tolist()
        k = row.count(PAD)                     # ids hold no pad: these are the k extra slots
        end = stop - k
        assert row[end:stop] == [PAD] * k and 0 < end - start <= 12 and k <= 6
        assert row[:end] == ids[b, :end].tolist()
        assert row[stop:] == ids[b, end:end + L - stop].tolist()
    c = run(ObjectiveConfig(p_fim=1.0, fim_max_middle=12, fim_max_extra=6), ids, spans)
    for b in range(ids.shape[0]):
        where = c.masked[b].nonzero().flatten()
        assert 0 < len(where) and int(where[-1] - where[0]) < 12 + 6


def test_fim_rows_start_inside_the_node_when_asked():
    ids = torch.arange(3, 67).repeat(200, 1)
    spans = torch.tensor([[[10, 30], [0, 0]]] * 200)
    g = torch.Generator().manual_seed(0)
    _, at_node = fim_rows(ids, spans, PAD, 20, 0, g)
    _, mixed = fim_rows(ids, spans, PAD, 20, 0, g, p_from_inside=0.5)
    assert all(canvas.nonzero().flatten().tolist() == list(range(10, 30)) for canvas in at_node)
    starts = [int(c.nonzero()[0]) for c in mixed]
    ends = [int(c.nonzero()[-1]) + 1 for c in mixed]
    assert set(ends) == {30} and min(starts) >= 10 and max(starts) < 30
    assert 70 < sum(s > 10 for s in starts) < 130


def test_mode_mixture_matches_the_reference_masking_rate():
    ids, spans = batch(B=256, L=96, seed=3)
    ref = corrupt(ids, SPAN_FIM_BLOCK, mask_id=MASK, pad_id=PAD, vocab_size=VOCAB,
                  generator=torch.Generator().manual_seed(0), spans=spans)
    new = run(SPAN_FIM_BLOCK, ids, spans)
    a, b = ref.masked.float().mean(), new.masked.float().mean()
    assert abs(a - b) < 0.06, (a, b)
    assert abs(ref.weights.sum(1).mean() - new.weights.sum(1).mean()) \
        < 0.15 * ref.weights.sum(1).mean()


def test_dense_spans_keep_a_subset_of_each_rows_spans():
    counts = torch.tensor([0, 3, 7, 1])
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    spans = torch.tensor([[i, i + 2] for i in range(int(counts.sum()))], dtype=torch.int32)
    dense = dense_spans(ptr, spans, 4, max_spans=4, seed=1)
    assert dense.shape == (4, 4, 2)
    for r in range(4):
        kept = {tuple(s) for s in dense[r].tolist() if s[1] > s[0]}
        own = {tuple(s) for s in spans[ptr[r]:ptr[r + 1]].tolist()}
        assert kept <= own and len(kept) == min(len(own), 4)


def test_random_tokens_never_draw_a_forbidden_id():
    r = random_tokens((20000,), 12, (MASK, PAD, 7), torch.Generator().manual_seed(0), "cpu")
    assert set(r.tolist()) == set(range(12)) - {MASK, PAD, 7}
