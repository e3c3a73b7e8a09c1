"""Fill-in-the-middle: prefix + n masks + suffix for several candidate n, decoded as one batch.

Rows are right-padded to a common length and the padding is hidden from attention, so each
candidate decodes as it would alone. A candidate's text stops at the first pad/eos token the
model wrote into the hole: an over-allocated canvas is meant to end in padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .forward import ContextCache, ContextCarry, FullForward
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
