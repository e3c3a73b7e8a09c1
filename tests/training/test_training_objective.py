"""Statistics of each corruption mode and the loss against a hand computation."""

import math

import pytest
import torch
import torch.nn.functional as F

from training.objective.masks import (
    IGNORE,
    ObjectiveConfig,
    block_mask,
    corrupt,
    diffusion_loss,
    diffusion_loss_sparse,
    edit_corrupt,
    fim_variable,
    response_maskable,
    sample_sigma,
    span_mask,
    token_mask,
    truncate_suffix,
    unmaskable_prefix,
)

MASK, PAD, V = 2, 0, 100


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def clean_ids(B, L, seed=0):
    return torch.randint(10, V, (B, L), generator=gen(seed))


def runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """Maximal runs of True as [start, end)."""
    out, start = [], None
    for i, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    return out


def test_sigma_is_uniform_above_eps():
    s = sample_sigma(20000, 0.1, gen())
    assert s.min() >= 0.1 and s.max() <= 1.0
    assert abs(s.mean().item() - 0.55) < 0.01


def test_sigma_is_stratified_within_a_batch():
    s, _ = sample_sigma(8, 0.0, gen()).sort()
    strata = (s * 8).floor()  # one draw in each eighth of [0, 1]
    assert strata.tolist() == list(range(8))
    firsts = torch.stack([sample_sigma(4, 0.0, torch.Generator().manual_seed(i))[0]
                          for i in range(4000)])
    assert abs(firsts.mean().item() - 0.5) < 0.02  # each position is still uniform
    assert abs((firsts < 0.25).float().mean().item() - 0.25) < 0.03


@pytest.mark.parametrize("sigma", [0.1, 0.5, 0.9])
def test_token_mask_rate_is_sigma(sigma):
    maskable = torch.ones(64, 512, dtype=torch.bool)
    m = token_mask(maskable, torch.full((64,), sigma), gen())
    assert abs(m.float().mean().item() - sigma) < 0.01


@pytest.mark.parametrize("sigma", [0.2, 0.6])
def test_block_mask_keeps_rate_and_blocks_are_contiguous(sigma):
    B, L = 400, 256
    maskable = torch.ones(B, L, dtype=torch.bool)
    m = block_mask(maskable, torch.full((B,), sigma), (2, 8, 32), gen(1))
    assert abs(m.float().mean().item() - sigma) < 0.03
    # one block size: every run away from the row edges is a whole number of blocks
    m4 = block_mask(maskable, torch.full((B,), sigma), (4,), gen(2))
    for row in m4[:50]:
        for a, b in runs(row):
            if a > 0 and b < L:
                assert (b - a) % 4 == 0


def test_unmaskable_prefix_leaves_a_clean_prefix():
    B, L = 200, 100
    maskable = torch.ones(B, L, dtype=torch.bool)
    out = unmaskable_prefix(maskable, 0.5, gen())
    lengths = (~out).sum(dim=1)
    for row, k in zip(out, lengths.tolist(), strict=True):
        assert not row[:k].any() and row[k:].all()
    assert lengths.max() <= 50 and lengths.float().std() > 5
    cfg = ObjectiveConfig(p_prefix=1.0, max_prefix_frac=0.5)
    ids = clean_ids(B, L)
    c = corrupt(ids, cfg, mask_id=MASK, pad_id=PAD, vocab_size=V, generator=gen(3))
    first_masked = [int(r.nonzero()[0]) for r in c.masked if r.any()]
    assert min(first_masked) >= 1 and torch.tensor(first_masked).float().mean() > 20


def test_truncated_suffix_is_pad_tail():
    ids = clean_ids(100, 64)
    out = truncate_suffix(ids, PAD, gen())
    for row, orig in zip(out, ids, strict=True):
        k = int((row != PAD).sum())
        assert (row[:k] == orig[:k]).all() and (row[k:] == PAD).all() and k >= 2


def test_span_mask_masks_whole_spans_within_budget():
    B, L = 64, 128
    spans = torch.zeros(B, 6, 2, dtype=torch.long)
    for b in range(B):
        for s, start in enumerate(range(4, 124, 20)):
            spans[b, s] = torch.tensor([start, start + 6 + s])
    maskable = torch.ones(B, L, dtype=torch.bool)
    sigma = torch.full((B,), 0.3)
    m = span_mask(maskable, spans, sigma, gen(), p_from_inside=0.0)
    covered = torch.zeros(B, L, dtype=torch.bool)
    for b in range(B):
        for a, e in spans[b].tolist():
            covered[b, a:e] = True
        row_runs = runs(m[b])
        assert all((a, e) in {tuple(x) for x in spans[b].tolist()} for a, e in row_runs)
    assert not (m & ~covered).any()
    rate = m.float().mean(dim=1)
    assert (rate <= 0.3 + 1e-6).all() and rate.mean() > 0.15
    inside = span_mask(maskable, spans, sigma, gen(5), p_from_inside=1.0)
    assert not (inside & ~covered).any()        # starts inside a node, ends at its end
    for b in range(B):
        ends = {e for _, e in spans[b].tolist()}
        assert all(e in ends for _, e in runs(inside[b]))


def test_fim_pad_targets_only_in_the_canvas_tail():
    B, L = 50, 96
    ids = clean_ids(B, L)
    out, canvas, pad_tail = fim_variable(ids, None, PAD, max_middle=20, max_extra=12,
                                         generator=gen())
    n_pad = []
    for b in range(B):
        assert not (pad_tail[b] & ~canvas[b]).any()
        (c0, c1), = runs(canvas[b])
        tail = runs(pad_tail[b])
        if tail:
            (p0, p1), = tail
            assert p1 == c1 and p0 > c0       # pads close the canvas, after a real middle
        assert ((out[b] == PAD) == pad_tail[b]).all()
        kept = out[b][~pad_tail[b]]
        assert (kept == ids[b][: len(kept)]).all()   # prefix, middle, suffix in order
        n_pad.append(int(pad_tail[b].sum()))
    assert max(n_pad) > 6 and min(n_pad) < 3
    cfg = ObjectiveConfig(p_fim=1.0, fim_max_middle=20, fim_max_extra=12)
    c = corrupt(ids, cfg, mask_id=MASK, pad_id=PAD, vocab_size=V, generator=gen(7))
    pad_targets = c.targets == PAD
    assert pad_targets.any()
    for b in range(B):
        masked_runs = runs(c.masked[b])
        lo, hi = masked_runs[0][0], masked_runs[-1][1]
        assert not pad_targets[b, :lo].any() and not pad_targets[b, hi:].any()


def test_fim_uses_syntax_spans_when_given():
    ids = clean_ids(10, 64)
    spans = torch.tensor([[[10, 17], [0, 0]]] * 10)
    _, canvas, pad_tail = fim_variable(ids, spans, PAD, 20, 4, gen())
    for b in range(10):
        middle = canvas[b] & ~pad_tail[b]
        assert runs(middle) == [(10, 17)]


def test_fim_middles_can_start_inside_their_node_as_a_cursor_does():
    ids = clean_ids(200, 64)
    spans = torch.tensor([[[10, 30], [0, 0]]] * 200)
    starts = []
    for p in (0.0, 0.5):
        _, canvas, pad_tail = fim_variable(ids, spans, PAD, 20, 4, gen(), p_from_inside=p)
        middles = [runs(canvas[b] & ~pad_tail[b]) for b in range(200)]
        assert all(m[0][1] == 30 and 10 <= m[0][0] < 30 for m in middles)  # node end kept
        starts.append([m[0][0] for m in middles])
    assert set(starts[0]) == {10}
    inside = sum(s > 10 for s in starts[1])
    assert 70 < inside < 130 and len(set(starts[1])) > 10
    with pytest.raises(ValueError, match="p_fim_from_inside"):
        ObjectiveConfig(p_fim_from_inside=1.5)


def test_edits_only_touch_unmasked_maskable_tokens():
    B, L = 40, 128
    ids = clean_ids(B, L)
    editable = torch.rand(B, L, generator=gen(1)) < 0.6
    out, changed = edit_corrupt(ids, editable, 0.2, V, gen(), forbidden=(MASK, PAD))
    assert not ((out != ids) & ~editable).any()
    assert ((out != ids) == changed).all() and changed.any()
    assert not (out == MASK).any()
    cfg = ObjectiveConfig(p_edit=1.0, edit_rate=0.1, edit_weight=0.5)
    c = corrupt(ids, cfg, mask_id=MASK, pad_id=PAD, vocab_size=V, generator=gen(2))
    edited = (c.input_ids != ids) & ~c.masked
    assert edited.any()
    assert not (edited & c.masked).any() and not edited[:, 0].any()
    assert torch.allclose(c.weights[edited], torch.tensor(0.5))
    assert (c.targets[edited] == ids[edited]).all()


def test_sft_prompt_is_never_masked():
    B, L = 30, 64
    prompt = torch.randint(1, 40, (B,), generator=gen())
    maskable = response_maskable(prompt, L)
    cfg = ObjectiveConfig(p_block=0.3, p_truncate=0.2)
    c = corrupt(clean_ids(B, L), cfg, mask_id=MASK, pad_id=PAD, vocab_size=V, generator=gen(1),
                maskable=maskable)
    for b in range(B):
        assert not c.masked[b, : prompt[b]].any()
    assert c.masked.any()


def test_mixture_rate_tracks_sigma_and_never_masks_position_zero():
    B, L = 256, 128
    cfg = ObjectiveConfig(p_block=0.5)
    c = corrupt(clean_ids(B, L), cfg, mask_id=MASK, pad_id=PAD, vocab_size=V, generator=gen())
    assert not c.masked[:, 0].any()
    rate = c.masked[:, 1:].float().mean(dim=1)
    assert (rate - c.sigma).abs().mean() < 0.06
    assert torch.allclose(c.weights[c.masked], (1 / c.sigma)[:, None].expand(B, L)[c.masked])
    assert (c.targets[~c.masked] == IGNORE).all()
    again = corrupt(clean_ids(B, L), cfg, mask_id=MASK, pad_id=PAD, vocab_size=V,
                    generator=gen())
    assert torch.equal(again.input_ids, c.input_ids)


def test_loss_matches_hand_computation_on_two_tokens():
    # Sequence [a, b] with b masked at σ = 0.25: output 0 predicts token 1.
    logits = torch.tensor([[[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]]])  # [1, 2, 3]
    targets = torch.tensor([[IGNORE, 1]])
    weights = torch.tensor([[0.0, 1 / 0.25]])
    loss, metrics = diffusion_loss(logits, targets, weights)
    p = math.exp(2.0) / (math.exp(1.0) + math.exp(2.0) + math.exp(0.5))
    expected = (1 / 0.25) * -math.log(p) / (1 * 2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["masked_ce"].item() == pytest.approx(-math.log(p), rel=1e-6)
    # the sparse path (head applied to scored positions only) agrees
    head = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3))
    sparse, _ = diffusion_loss_sparse(logits, head, targets, weights)
    assert sparse.item() == pytest.approx(expected, rel=1e-6)


def test_sparse_and_dense_losses_agree_with_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(3, 16, 8, requires_grad=True)
    head = torch.nn.Linear(8, V, bias=False)
    c = corrupt(clean_ids(3, 16), ObjectiveConfig(p_block=0.5), mask_id=MASK, pad_id=PAD,
                vocab_size=V, generator=gen())
    dense, _ = diffusion_loss(head(hidden), c.targets, c.weights)
    (g_dense,) = torch.autograd.grad(dense, hidden)
    sparse, _ = diffusion_loss_sparse(hidden, head, c.targets, c.weights)
    (g_sparse,) = torch.autograd.grad(sparse, hidden)
    assert torch.allclose(dense, sparse, atol=1e-6)
    assert torch.allclose(g_dense, g_sparse, atol=1e-6)
    ce = F.cross_entropy(head(hidden)[:, :-1].reshape(-1, V), c.targets[:, 1:].reshape(-1),
                         ignore_index=IGNORE, reduction="none")
    assert torch.isfinite(ce).all()


def test_config_validation():
    with pytest.raises(ValueError):
        ObjectiveConfig(p_block=0.6, p_span=0.6)
    with pytest.raises(ValueError):
        ObjectiveConfig(eps=0.0)
    with pytest.raises(ValueError):
        ObjectiveConfig(block_sizes=())
