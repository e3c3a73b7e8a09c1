"""The CoDA forward process as whole-batch tensor ops, for corruption on the training device.

:func:`training.objective.corrupt` is the reference: readable, per-row Python for span masks,
FIM rearrangement and edits, and on the CPU it stays the default (the golden loss curve is
its output).  On a GPU that per-row Python and the host→device copies of every corrupted batch
starve the device, so :func:`corrupt_batched` draws the same mixture with no per-row loop and
no host synchronisation: every tensor stays on ``ids.device`` and the generator lives there
too.  It follows the reference mode for mode with two documented simplifications:

* span masking takes the spans that fit the budget σ·n on their own, in a random order, while
  their running length fits it (the reference also goes on past a span that no longer fits,
  and counts only the new tokens of a nested span), so it masks a little under σ;
* edits are substitutions only (the reference also shifts a short window: delete + insert).

Spans come precomputed at packing (``PackedSplit`` CSR); :func:`dense_spans` turns them once
into a ``[N, S, 2]`` tensor that lives on the device beside the token rows.
"""

from __future__ import annotations

import torch

from training.objective.masks import IGNORE, Corrupted, ObjectiveConfig


def dense_spans(span_ptr: torch.Tensor, spans: torch.Tensor, n_rows: int, max_spans: int,
                seed: int = 0) -> torch.Tensor:
    """CSR spans → ``[n_rows, S, 2]`` int16 (empty ranges pad), at most ``max_spans`` per row.

    A row with more spans keeps a seeded random subset (the first ones would favour the row's
    start).  Vectorised: one sort over all spans, no per-row loop.
    """
    counts = (span_ptr[1:] - span_ptr[:-1]).long()
    width = max(1, min(max_spans, int(counts.max()) if n_rows else 1))
    out = torch.zeros(n_rows, width, 2, dtype=torch.int16)
    if spans.shape[0] == 0:
        return out
    if int(spans.max()) > torch.iinfo(torch.int16).max:
        raise ValueError("span offsets exceed int16: sequences longer than 32767 tokens")
    row_of = torch.repeat_interleave(torch.arange(n_rows), counts)
    g = torch.Generator().manual_seed(seed)
    order = torch.argsort(row_of.double() + torch.rand(len(row_of), generator=g,
                                                       dtype=torch.float64) * 0.5)
    rank = torch.arange(len(order)) - span_ptr[row_of[order]]
    keep = rank < width
    out[row_of[order][keep], rank[keep]] = spans[order][keep].to(torch.int16)
    return out


def _rand(shape, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=device)


def sample_sigma(batch: int, eps: float, g: torch.Generator, device) -> torch.Tensor:
    """Stratified σ ~ U[eps, 1] as in the reference (one draw per 1/B stratum, shuffled)."""
    u = (_rand(1, g, device) + torch.arange(batch, device=device) / batch) % 1.0
    u = u[torch.randperm(batch, generator=g, device=device)]
    return eps + (1.0 - eps) * u


def _cover(starts: torch.Tensor, ends: torch.Tensor, take: torch.Tensor, length: int
           ) -> torch.Tensor:
    """[B, L] bool: positions inside any taken [start, end) range (a +1/−1 prefix sum)."""
    B = starts.shape[0]
    delta = torch.zeros(B, length + 1, dtype=torch.int32, device=starts.device)
    w = take.to(torch.int32)
    delta.scatter_add_(1, starts.clamp(0, length), w)
    delta.scatter_add_(1, ends.clamp(0, length), -w)
    return delta.cumsum(1)[:, :length] > 0


def span_mask(maskable, spans, sigma, g, p_from_inside: float) -> torch.Tensor:
    """Whole syntax spans in a random order while their total length fits σ·n (see above)."""
    B, L = maskable.shape
    dev = maskable.device
    start = spans[..., 0].long().clamp(min=1)
    end = spans[..., 1].long().clamp(max=L)
    inside = _rand(start.shape, g, dev) < p_from_inside
    cut = (_rand(start.shape, g, dev) * (end - start).clamp(min=0)).long()
    start = torch.where(inside, start + cut, start)
    budget = (sigma * maskable.sum(1))[:, None]
    valid = (end > start) & (end - start <= budget)    # spans that fit on their own
    order = torch.where(valid, _rand(start.shape, g, dev), 2.0).argsort(dim=1)
    start, end, valid = start.gather(1, order), end.gather(1, order), valid.gather(1, order)
    used = torch.where(valid, end - start, 0).cumsum(1)
    take = valid & (used <= budget)
    out = _cover(start, end, take, L) & maskable
    fallback = maskable & (_rand((B, L), g, dev) < sigma[:, None])
    return torch.where(out.any(1, keepdim=True), out, fallback)


def fim_rows(ids, spans, pad_id: int, max_middle: int, max_extra: int, g,
             p_from_inside: float = 0.0):
    """Every row as prefix | middle + k pad | suffix (the caller keeps the FIM rows).

    Returns (ids, canvas); the middle is a random fitting syntax span (starting inside it with
    probability p_from_inside), else a random range.
    """
    B, L = ids.shape
    dev = ids.device
    pos = torch.arange(L, device=dev)[None, :]
    n = 1 + (_rand(B, g, dev) * min(max_middle, L - 2)).long()
    room = (L - 1 - n).clamp(min=0)
    start = torch.where(room > 0, 1 + (_rand(B, g, dev) * room).long(), 1)
    end = (start + n).clamp(max=L)
    if spans is not None and spans.shape[1] > 0:
        s0, s1 = spans[..., 0].long(), spans[..., 1].long()
        ok = (s0 >= 1) & (s1 > s0) & (s1 - s0 <= max_middle) & (s1 <= L)
        pick = torch.where(ok, _rand(s0.shape, g, dev), -1.0).argmax(dim=1, keepdim=True)
        has = ok.any(1)
        node_start, node_end = s0.gather(1, pick)[:, 0], s1.gather(1, pick)[:, 0]
        if p_from_inside > 0:   # no extra draws otherwise: old runs replay exactly
            inside = _rand(B, g, dev) < p_from_inside
            cut = (_rand(B, g, dev) * (node_end - node_start)).long()
            node_start = torch.where(inside, node_start + cut, node_start)
        start = torch.where(has, node_start, start)
        end = torch.where(has, node_end, end)
    extra = (_rand(B, g, dev) * (max_extra + 1)).long()
    stop = (end + extra)[:, None]
    source = torch.where(pos >= stop, pos - extra[:, None], pos)
    out = ids.gather(1, source)
    out = torch.where((pos >= end[:, None]) & (pos < stop), pad_id, out)
    canvas = (pos >= start[:, None]) & (pos < stop)
    return out, canvas


def random_tokens(shape, vocab_size: int, forbidden: tuple[int, ...], g, device):
    """Uniform over the vocabulary minus ``forbidden``, with no host round trip."""
    banned = sorted(set(forbidden))
    r = torch.randint(vocab_size - len(banned), shape, generator=g, device=device)
    for f in banned:   # shift past each banned id in increasing order
        r = r + (r >= f).long()
    return r


def corrupt_batched(ids: torch.Tensor, cfg: ObjectiveConfig, *, mask_id: int, pad_id: int,
                    vocab_size: int, generator: torch.Generator,
                    spans: torch.Tensor | None = None,
                    maskable: torch.Tensor | None = None) -> Corrupted:
    """:func:`training.objective.corrupt`'s mixture on ``ids.device`` (see the module doc)."""
    g, dev = generator, ids.device
    ids = ids.long()
    B, L = ids.shape
    pos = torch.arange(L, device=dev)[None, :]
    maskable = torch.ones(B, L, dtype=torch.bool, device=dev) if maskable is None \
        else maskable.clone()
    maskable[:, 0] = False
    sigma = sample_sigma(B, cfg.eps, g, dev)

    u = _rand(B, g, dev)
    is_block = u < cfg.p_block
    is_span = (u >= cfg.p_block) & (u < cfg.p_block + cfg.p_span)
    is_fim = (u >= cfg.p_block + cfg.p_span) & (u < cfg.p_block + cfg.p_span + cfg.p_fim)
    has_prefix = (_rand(B, g, dev) < cfg.p_prefix) & ~is_fim
    has_trunc = (_rand(B, g, dev) < cfg.p_truncate) & ~is_fim
    has_edit = _rand(B, g, dev) < cfg.p_edit

    keep = 2 + (_rand(B, g, dev) * (L - 2)).long()
    clean = torch.where(has_trunc[:, None] & (pos >= keep[:, None]), pad_id, ids)
    canvas = torch.zeros(B, L, dtype=torch.bool, device=dev)
    if cfg.p_fim > 0:
        fim_ids, fim_canvas = fim_rows(clean, spans, pad_id, cfg.fim_max_middle,
                                       cfg.fim_max_extra, g, cfg.p_fim_from_inside)
        clean = torch.where(is_fim[:, None], fim_ids, clean)
        canvas = fim_canvas & is_fim[:, None]
    if cfg.p_prefix > 0:
        length = (_rand(B, g, dev) * cfg.max_prefix_frac * L).long()
        maskable = maskable & ~(has_prefix[:, None] & (pos < length[:, None]))

    masked = maskable & (_rand((B, L), g, dev) < sigma[:, None])
    if cfg.p_block > 0:
        sizes = torch.tensor(cfg.block_sizes, device=dev)
        size = sizes[torch.randint(len(cfg.block_sizes), (B,), generator=g, device=dev)]
        phase = (_rand(B, g, dev) * size).long()
        n_blocks = L // int(min(cfg.block_sizes)) + 2
        draw = _rand((B, n_blocks), g, dev) < sigma[:, None]
        block = maskable & draw.gather(1, (pos + phase[:, None]) // size[:, None])
        masked = torch.where(is_block[:, None], block, masked)
    if cfg.p_span > 0 and spans is not None and spans.shape[1] > 0:
        spanned = span_mask(maskable, spans, sigma, g, cfg.p_span_from_inside)
        masked = torch.where(is_span[:, None], spanned, masked)
    if cfg.p_fim > 0:
        region = canvas & maskable
        fim_masked = region & (_rand((B, L), g, dev) < sigma[:, None])
        fim_masked = torch.where(fim_masked.any(1, keepdim=True), fim_masked, region)
        masked = torch.where(is_fim[:, None], fim_masked, masked)

    noisy = torch.where(masked, mask_id, clean)
    weights = masked.float() / sigma[:, None]
    if cfg.p_edit > 0:
        sites = maskable & ~masked & has_edit[:, None] & (_rand((B, L), g, dev) < cfg.edit_rate)
        swap = random_tokens((B, L), vocab_size, (mask_id, pad_id), g, dev)
        noisy = torch.where(sites, swap, noisy)
        edited = sites & (swap != clean)
        weights = torch.where(edited, cfg.edit_weight, weights)
    targets = torch.where(weights > 0, clean, IGNORE)
    return Corrupted(input_ids=noisy, targets=targets, weights=weights, sigma=sigma,
                     masked=masked)
