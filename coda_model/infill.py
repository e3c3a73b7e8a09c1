"""Fill-in-the-middle: prefix + n masks + suffix for several candidate n, decoded as one batch
(``infill``); several requests' candidates as one batch too (``infill_many``).

Rows are right-padded to a common length and the padding is hidden from attention, so each
candidate decodes as it would alone. A candidate's text stops at the first pad/eos token the
model wrote into the hole: an over-allocated canvas is meant to end in padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .forward import (
    BatchedWindows,
    ContextCache,
    ContextCarry,
    FullForward,
    dense_logits,
)
from .graphs import static_windows
from .sampler import SamplerConfig, denoise


@dataclass(frozen=True)
class InfillCandidate:
    length: int  # mask tokens given to the model
    ids: list[int]  # the middle's ids up to (not including) the first pad/eos
    text: str
    confidences: list[float]  # probability of each canvas token when it was committed
    mean_confidence: float  # over the whole canvas, padding included

    @property
    def canvas_used(self) -> float:
        return len(self.ids) / self.length if self.length else 0.0

    @property
    def fill_confidence(self) -> float:
        """Mean probability of the fill's own tokens (before the first pad/eos); 0.0 if empty.

        Rank on this, not mean_confidence: padding is easy to predict, so over the whole
        canvas the longest, mostly padded candidate would win whatever it wrote.
        """
        n = len(self.ids)
        return sum(self.confidences[:n]) / n if n else 0.0


def fill_ends(tokenizer) -> frozenset[int]:
    """Tokens a fill ends at: padding, eos and any other control token the tokenizer flags
    (fim or chat markers are never code), but not the mask a fill is still denoising."""
    ends = {tokenizer.pad_id, tokenizer.eos_id, *getattr(tokenizer, "control_ids", ())}
    return frozenset(ends - {tokenizer.mask_id})


def build_batch(prefix_ids: Sequence[int], suffix_ids: Sequence[int], lengths: Sequence[int],
                mask_id: int, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [list(prefix_ids) + [mask_id] * n + list(suffix_ids) for n in lengths]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    key_mask = torch.zeros((len(rows), width), dtype=torch.bool, device=device)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        key_mask[i, : len(row)] = True
    return ids, key_mask


def infill(
    model,
    tokenizer,
    prefix_ids: Sequence[int],
    suffix_ids: Sequence[int],
    lengths: Sequence[int],
    config: SamplerConfig,
    *,
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    carry: ContextCarry | None = None,
    on_middles: Callable[[int, int, list[list[int]]], None] | None = None,
    first_banned: torch.Tensor | None = None,
) -> list[InfillCandidate]:
    """One candidate per length, in the order given. Raises Cancelled if should_stop() fires.

    on_middles(step, steps, middles) gets each candidate's middle ids after every step, masks
    still in place (for clients that draw the fill sharpening).

    carry (with config.context_cache): context keys/values from the previous call on the same
    text, updated for the next one (see ContextCarry).

    first_banned ([V] bool): tokens the first middle token may not be (token healing)."""
    if not prefix_ids:
        raise ValueError("infill needs at least one prefix token: the first mask is predicted "
                         "by the output of the token before it")
    lengths = [int(n) for n in lengths]
    if not lengths or min(lengths) < 1:
        raise ValueError(f"candidate lengths must be positive, got {lengths}")
    device = next(model.parameters()).device
    ids, key_mask = build_batch(prefix_ids, suffix_ids, lengths, tokenizer.mask_id,
                                tokenizer.pad_id, device)
    if key_mask.all():
        key_mask = None  # equal lengths: exactly the reference's unmasked attention
    if config.context_cache:
        forward = ContextCache(model, ids, key_mask, len(prefix_ids), lengths, config, carry)
    else:
        hole = (len(prefix_ids), len(prefix_ids) + max(lengths))
        forward = FullForward(model, key_mask, region=hole)
    probs = torch.zeros(ids.shape, dtype=torch.float32, device=device)
    start = len(prefix_ids)
    on_state = None
    if on_middles is not None:
        def on_state(step: int, steps: int, x: torch.Tensor) -> None:
            on_middles(step, steps, [x[row, start : start + n].tolist()
                                     for row, n in enumerate(lengths)])
    out = denoise(model, ids, config, mask_id=tokenizer.mask_id, should_stop=should_stop,
                  on_step=on_step, key_mask=key_mask, forward=forward, probs_out=probs,
                  on_state=on_state, stop_ids=(tokenizer.pad_id, tokenizer.eos_id),
                  allowed_at=None if first_banned is None else (
                      len(prefix_ids), first_banned.to(device)))
    return _candidates(tokenizer, out, probs, start, lengths)


def _candidates(tokenizer, out: torch.Tensor, probs: torch.Tensor, start: int,
                lengths: Sequence[int]) -> list[InfillCandidate]:
    """One candidate per row: its hole starts at column ``start`` and is lengths[row] long."""
    stops = fill_ends(tokenizer)   # every mask is committed by now
    end = start + max(lengths)
    middles, probs = out[:, start:end].tolist(), probs[:, start:end].tolist()  # one read each
    candidates = []
    for row, n in enumerate(lengths):
        middle = middles[row][:n]
        kept = next((i for i, tok in enumerate(middle) if tok in stops), n)
        confidences = probs[row][:n]
        candidates.append(InfillCandidate(
            length=n,
            ids=middle[:kept],
            text=tokenizer.decode(middle[:kept]),
            confidences=confidences,
            mean_confidence=sum(confidences) / n,
        ))
    return candidates


def _own_windows(model, tokenizer, requests, config, carries, ids, key_mask, start,
                 offsets) -> BatchedWindows:
    """``BatchedWindows`` over one ``ContextCache`` per request, built as ``infill`` builds
    it for that request alone."""
    device = ids.device
    carries = list(carries) if carries is not None else [None] * len(requests)
    caches, own_offsets, own_widths = [], [], []
    for r, carry in zip(requests, carries, strict=True):
        own, own_mask = build_batch(r.prefix_ids, r.suffix_ids, r.lengths, tokenizer.mask_id,
                                    tokenizer.pad_id, device)
        caches.append(ContextCache(model, own, None if own_mask.all() else own_mask,
                                   len(r.prefix_ids), [int(n) for n in r.lengths], config,
                                   carry))
        own_offsets.append(start - len(r.prefix_ids))
        own_widths.append(own.shape[1])
    return BatchedWindows(model, caches, [len(r.lengths) for r in requests], key_mask, start,
                          offsets, own_offsets, own_widths)


@dataclass(frozen=True)
class InfillRequest:
    """One request's part of ``infill_many``: what ``infill`` takes for it alone."""

    prefix_ids: Sequence[int]
    suffix_ids: Sequence[int]
    lengths: Sequence[int]
    first_banned: torch.Tensor | None = None  # [V] bool (token healing), as in ``infill``


def build_aligned(requests: Sequence[InfillRequest], mask_id: int, pad_id: int,
                  device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Several requests' rows with every hole starting in one column: each prefix is
    left-padded to the longest, each row right-padded to the widest; padding is hidden from
    attention by the key mask. One hole column lets the rows share ``ContextCache``'s window
    (the few columns recomputed each step) however long each context is. Returns the ids, the
    key mask and the hole's first column."""
    start = max(len(r.prefix_ids) for r in requests)
    rows, spans = [], []
    for r in requests:
        lead = start - len(r.prefix_ids)
        for n in r.lengths:
            rows.append([pad_id] * lead + list(r.prefix_ids) + [mask_id] * n
                        + list(r.suffix_ids))
            spans.append((lead, len(rows[-1])))
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows], dtype=torch.long)
    column = torch.arange(width)
    lead, end = torch.tensor(spans).unbind(1)
    key_mask = (column[None, :] >= lead[:, None]) & (column[None, :] < end[:, None])
    return ids.to(device), key_mask.to(device), start


def infill_many(model, tokenizer, requests: Sequence[InfillRequest], config: SamplerConfig,
                *, should_stop: Callable[[], bool] | None = None,
                carries: Sequence[ContextCarry | None] | None = None,
                ) -> list[list[InfillCandidate]]:
    """``infill`` for several requests at once (different prefixes, suffixes, lengths and
    healing bans), their rows denoised as one batch: each request's candidates, in order.

    Each row follows its own step schedule (the sampler counts commits per row), so a row
    decodes as it would alone; only rounding can differ (the batch's shapes pick other
    kernels; each row keeps its own positions despite the left padding). With the fast
    path's settings on a CPU
    (context cache, no refresh, no context window) each request's first pass is its own,
    ``carries[i]`` included, and only the steps after it are batched (``BatchedWindows``);
    otherwise the whole aligned batch runs through one ``ContextCache`` or ``FullForward``
    without carries. Raises Cancelled if should_stop() fires."""
    if not requests:
        return []
    for r in requests:
        if not r.prefix_ids:
            raise ValueError("infill needs at least one prefix token: the first mask is "
                             "predicted by the output of the token before it")
        if not r.lengths or min(int(n) for n in r.lengths) < 1:
            raise ValueError(f"candidate lengths must be positive, got {list(r.lengths)}")
    device = next(model.parameters()).device
    ids, key_mask, start = build_aligned(requests, tokenizer.mask_id, tokenizer.pad_id, device)
    lengths = [int(n) for r in requests for n in r.lengths]
    offsets = torch.tensor([start - len(r.prefix_ids) for r in requests for _ in r.lengths],
                           device=device)  # each row keeps the positions it has alone
    own_windows = (config.context_cache and not config.refresh_every
                   and not config.cache_window and not dense_logits(device)
                   and not static_windows(device))
    if own_windows:
        forward = _own_windows(model, tokenizer, requests, config, carries, ids, key_mask,
                               start, offsets)
    elif config.context_cache:
        forward = ContextCache(model, ids, key_mask, start, lengths, config, offsets=offsets)
    else:
        forward = FullForward(model, key_mask, region=(start, start + max(lengths)),
                              offsets=offsets)
    allowed_at = None
    if any(r.first_banned is not None for r in requests):
        vocab = next(r.first_banned for r in requests if r.first_banned is not None).shape[0]
        nothing = torch.zeros(vocab, dtype=torch.bool)
        banned = torch.stack([nothing if r.first_banned is None else r.first_banned.cpu()
                              for r in requests for _ in r.lengths])
        allowed_at = (start, banned.to(device))
    probs = torch.zeros(ids.shape, dtype=torch.float32, device=device)
    out = denoise(model, ids, config, mask_id=tokenizer.mask_id, should_stop=should_stop,
                  key_mask=key_mask, forward=forward, probs_out=probs,
                  stop_ids=(tokenizer.pad_id, tokenizer.eos_id), allowed_at=allowed_at)
    flat = _candidates(tokenizer, out, probs, start, lengths)
    grouped, at = [], 0
    for r in requests:
        grouped.append(flat[at : at + len(r.lengths)])
        at += len(r.lengths)
    return grouped
