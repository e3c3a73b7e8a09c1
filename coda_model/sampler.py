"""Masked-diffusion sampling: fill every mask token in a batch of sequences.

With the reference settings (`skip_idle_steps` aside, which changes nothing for deterministic
runs) this follows the public CoDA/Dream sampler exactly: timesteps `linspace(1, eps, steps+1)`;
at step i with M masks commit `int(M * (1 - s/t))` tokens (all remaining at the last step),
ranked by the algorithm's confidence; logits are shifted right by one before use (the output at
position p-1 predicts token p). Counts are per row here, so a batch of differently sized
candidates decodes each row as it would decode alone (the reference averages over the batch;
identical for one row).

Beyond the reference, switchable in SamplerConfig: confidence-threshold parallel decoding
(`threshold`), block-wise decoding (`block_length`), padding committed last (`stop_weight`)
and, for infill, the context K/V cache (`context_cache`, see coda_model/forward.py).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .forward import FullForward

ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")
ALIASES = {"original": "origin"}


class Cancelled(Exception):
    """Raised between denoising steps when `should_stop()` says the result is no longer wanted."""


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 8
    alg: str = "maskgit_plus"
    alg_temp: float | None = None
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    eps: float = 1e-3
    block_length: int | None = None
    seed: int | None = None
    skip_idle_steps: bool = True  # exact: a step that commits nothing needs no forward pass
    threshold: float | None = None  # commit every mask whose probability exceeds it (>= 1/step)
    context_cache: bool = False  # infill: compute prefix/suffix keys and values once
    refresh_every: int = 0  # context cache: recompute everything every k steps (0 = never)
    cache_window: int = 0  # context cache: context tokens each side of the hole recomputed
    shared_context: bool = False  # context cache, CPU: one candidate's context keys/values
    #                               serve every candidate (one row's full pass, not B)
    stop_weight: float = 1.0  # pad/eos proposals' rank among commits (0: a fill's own tokens
    #                           first, its padding last; 1: the reference). Not for 'origin'.

    def __post_init__(self) -> None:
        alg = ALIASES.get(self.alg, self.alg)
        if alg not in ALGS:
            raise ValueError(f"alg must be one of {ALGS} (or 'original'), got {self.alg!r}")
        object.__setattr__(self, "alg", alg)
        checks = [
            (_is_int(self.steps) and self.steps >= 1, "steps must be an integer >= 1"),
            (self.alg_temp is None or self.alg_temp >= 0, "alg_temp must be >= 0 or None"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_p is None or 0 < self.top_p <= 1, "top_p must be in (0, 1] or None"),
            (self.top_k is None or (_is_int(self.top_k) and self.top_k >= 1),
             "top_k must be an integer >= 1 or None"),
            (0 < self.eps < 1, "eps must be in (0, 1)"),
            (self.block_length is None or (_is_int(self.block_length) and self.block_length >= 1),
             "block_length must be an integer >= 1 or None"),
            (self.threshold is None or self.threshold > 0, "threshold must be > 0 or None"),
            (_is_int(self.refresh_every) and self.refresh_every >= 0,
             "refresh_every must be an integer >= 0"),
            (_is_int(self.cache_window) and self.cache_window >= 0,
             "cache_window must be an integer >= 0"),
            (0 <= self.stop_weight <= 1, "stop_weight must be in [0, 1]"),
            (not (self.threshold is not None and self.alg == "origin"),
             "threshold decoding needs a confidence-ranked alg, not 'origin'"),
        ]
        for ok, reason in checks:
            if not ok:
                raise ValueError(f"SamplerConfig: {reason}")

    @property
    def stochastic(self) -> bool:
        return self.temperature > 0 or bool(self.alg_temp) or self.alg == "origin"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def filter_logits(logits: torch.Tensor, config: SamplerConfig) -> torch.Tensor:
    """Temperature, then top-p, then top-k, as the reference does (they change confidences)."""
    if config.temperature > 0:
        logits = logits / config.temperature
    floor = torch.finfo(logits.dtype).min
    if config.top_p is not None and config.top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        drop = cumulative > config.top_p
        drop[..., 1:] = drop[..., :-1].clone()
        drop[..., 0] = False
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), floor)
    if config.top_k is not None:
        k = min(config.top_k, logits.shape[-1])
        kth = torch.topk(logits, k)[0][..., -1, None]
        logits = logits.masked_fill(logits < kth, floor)
    return logits


def propose(logits: torch.Tensor, config: SamplerConfig, generator=None, mask_id=None):
    """For logits [N, V]: (confidence by alg, proposed token, its probability), each [N].

    The mask token itself is never proposed (the reference could commit it, leaving a mask in
    the output); that is the one deliberate difference, invisible unless a model predicts it.
    """
    logits = logits.float().clone()
    if mask_id is not None and mask_id < logits.shape[-1]:
        logits[:, mask_id] = torch.finfo(logits.dtype).min
    probs = F.softmax(filter_logits(logits, config), dim=-1)
    if config.temperature > 0:
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        prob = probs.gather(-1, tokens[:, None]).squeeze(-1)
    else:
        prob, tokens = probs.max(dim=-1)
    confidence = prob
    if config.alg == "topk_margin":
        top2 = torch.topk(probs, 2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
    elif config.alg == "entropy":
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, tokens, prob


def _blocks(eligible_order: torch.Tensor, block_length: int | None) -> list[torch.Tensor]:
    """Split the masked positions of a [B, L] mask into left-to-right blocks of masks."""
    if block_length is None:
        return [eligible_order]
    rank = torch.cumsum(eligible_order.long(), dim=1) - 1  # index of each mask within its row
    count = int(eligible_order.sum(dim=1).max())
    return [eligible_order & (rank // block_length == b)
            for b in range(math.ceil(count / block_length))]


def denoise(
    model,
    input_ids: torch.Tensor,
    config: SamplerConfig,
    *,
    mask_id: int,
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    key_mask: torch.Tensor | None = None,
    forward=None,
    probs_out: torch.Tensor | None = None,
    on_state: Callable[[int, int, torch.Tensor], None] | None = None,
    stop_ids: Sequence[int] = (),
    allowed_at: tuple[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Return `input_ids` [B, L] with every mask filled.

    should_stop() is polled before each step and raises Cancelled; on_step(step, steps) reports
    progress; key_mask [B, L] marks real tokens when rows are right-padded; forward is the
    logits provider (default: full recomputation); probs_out [B, L] receives the probability
    each committed token had when it was committed; on_state(step, steps, x) sees the canvas
    after each step (read-only: for showing a fill as it sharpens); stop_ids (pad, eos) are
    the tokens config.stop_weight applies to; allowed_at (column, banned [V] bool) keeps the
    tokens marked banned out of that one column (token healing: the first token of a fill
    must start with the text of the prefix token it replaces); banned may be [B, V], one per
    row, when the rows are different requests (``infill_many``).

    The step loop keeps its work on the model's device: mask counts are read once and then
    tracked on the host (each step commits a known number), so a step waits on the device
    only where the count depends on the model (threshold decoding: one read per step; 'origin':
    its random reveals).
    """
    x = input_ids.clone()
    forward = forward or FullForward(model, key_mask, region=mask_region(x == mask_id))
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=x.device).manual_seed(config.seed)
    stops = None
    if config.stop_weight != 1 and stop_ids:
        stops = torch.tensor(sorted(set(stop_ids)), device=x.device)
    blocks = _blocks(x == mask_id, config.block_length)
    steps_per_block = max(1, config.steps // len(blocks)) if blocks else 0
    done = 0
    for block in blocks:
        left = (x == mask_id).logical_and(block).sum(dim=1).tolist()  # masks per row, read once
        # the schedule's float32 values, computed on the CPU as the reference's fixtures were
        timesteps = torch.linspace(1, config.eps, steps_per_block + 1).tolist()
        for i in range(steps_per_block):
            if should_stop is not None and should_stop():
                raise Cancelled()
            if not any(left):
                break
            eligible = (x == mask_id).logical_and_(block)
            left = _step(forward, x, eligible, left, timesteps[i], timesteps[i + 1],
                         i == steps_per_block - 1, config, mask_id, generator, probs_out, stops,
                         allowed_at)
            done += 1
            if on_step is not None:
                on_step(done, steps_per_block * len(blocks))
            if on_state is not None:
                on_state(done, steps_per_block * len(blocks), x)
    return x


def mask_region(mask: torch.Tensor) -> tuple[int, int] | None:
    """Columns [first, last + 1) holding every mask of a [B, L] mask (None: no masks)."""
    cols = mask.any(dim=0).nonzero()
    return (int(cols[0]), int(cols[-1]) + 1) if cols.numel() else None


def _step(forward, x, eligible, left, t, s, last, config, mask_id, generator, probs_out,
          stops=None, allowed_at=None):
    """One denoising step in place on x; returns the masks left per row (host ints)."""
    batch = x.shape[0]
    if config.alg == "origin":
        p_transfer = _f32(1 - _f32(s / t)) if not last else 1
        # One draw per masked position, in row-major order, as the reference draws them.
        draws = torch.rand(sum(left), generator=generator, device=x.device)
        reveal = torch.zeros_like(eligible)
        reveal[eligible] = draws < p_transfer
        if reveal.any():
            logits = gathered(forward(x, reveal), reveal, forward)
            logits = _restrict(logits, reveal, None, allowed_at)
            _, tokens, prob = propose(logits, config, generator, mask_id)
            x[reveal] = tokens
            if probs_out is not None:
                probs_out[reveal] = prob.to(probs_out.dtype)
        return (x == mask_id).logical_and_(eligible).sum(dim=1).tolist()
    # the reference's float32 arithmetic: n masks as a float32 tensor times (1 - s/t)
    ratio = _f32(1 - _f32(s / t))
    counts = [int(_f32(n * ratio)) if not last else n for n in left]
    if config.threshold is None and not any(counts) and config.skip_idle_steps:
        return left
    region = getattr(forward, "dense_region", None)
    if (region is None and config.threshold is None and config.temperature == 0
            and any(counts) and not all(counts)):
        # logits only where this step commits: a row that commits nothing now (a shorter
        # candidate waiting for its last steps) costs the provider nothing (ROWS_ON_DEMAND).
        # Greedy only: sampling draws for every mask, and its random stream stays the same
        eligible = eligible & torch.tensor(counts, device=x.device).gt(0)[:, None]
    logits = forward(x, eligible)
    if region is not None and config.temperature > 0:  # sampled: draws for the masks only
        logits, region = gathered(logits, eligible, forward), None
    logits = _restrict(logits, eligible, region, allowed_at)
    confidence, tokens, prob = propose(logits.flatten(0, -2), config, generator, mask_id)
    if stops is not None:  # padding is easy to predict: left alone, it is committed first and
        # a weak model's fill ends before it starts. Scaled towards "least sure" instead.
        stop = torch.isin(tokens, stops)
        penalty = (1 - config.stop_weight) * confidence.abs()  # also right for entropy (< 0)
        confidence = torch.where(stop, confidence - penalty, confidence)
    full_conf = torch.full(x.shape, -torch.inf, dtype=confidence.dtype, device=x.device)
    proposal = torch.full_like(x, mask_id)
    full_prob = torch.zeros(x.shape, dtype=prob.dtype, device=x.device)
    if region is None:  # logits [N, V] for the eligible positions, row-major order
        full_conf[eligible] = confidence
        proposal[eligible] = tokens
        full_prob[eligible] = prob
    else:  # logits [B, W, V] for columns [lo, hi): no data-dependent shapes
        lo, hi = region
        inside = eligible[:, lo:hi]
        full_conf[:, lo:hi] = confidence.view(batch, -1).masked_fill(~inside, -torch.inf)
        proposal[:, lo:hi] = tokens.view(batch, -1)
        full_prob[:, lo:hi] = prob.view(batch, -1).masked_fill(~inside, 0)
    if config.threshold is not None and not last:  # the one read this step waits for
        above = ((full_prob > config.threshold) & eligible).sum(dim=1).tolist()
        counts = [min(max(1, a), n) for a, n in zip(above, left, strict=True)]
    for r in range(batch):
        k = counts[r]
        if k <= 0:
            continue
        if not config.alg_temp:
            chosen = torch.topk(full_conf[r : r + 1], k).indices[0]
        else:
            weights = F.softmax(full_conf[r : r + 1] / config.alg_temp, dim=-1)
            chosen = torch.multinomial(weights, k, generator=generator)[0]
        x[r, chosen] = proposal[r, chosen]
        if probs_out is not None:
            probs_out[r, chosen] = full_prob[r, chosen].to(probs_out.dtype)
    return [n - k for n, k in zip(left, counts, strict=True)]


def _restrict(logits, positions, region, allowed_at):
    """Logits with the banned tokens of ``allowed_at`` floored in its column. Layouts as
    ``gathered`` reads them: [B, W, V] for the columns of ``region`` (the greedy path: no host
    sync), or [N, V] in the row-major order of ``positions`` (gathered by a boolean index, a
    sync already; finding the column's rows is one more, on a GPU's sampled path only)."""
    if allowed_at is None:
        return logits
    col, banned = allowed_at  # banned: [V] for every row, or [B, V] one per batch row
    floor = torch.finfo(logits.dtype).min
    if region is None:  # the rows of logits that are column col's, one per batch row
        in_col = torch.zeros_like(positions)
        in_col[:, col] = positions[:, col]
        rows = in_col[positions].nonzero().squeeze(1)
        if banned.dim() == 2:  # the batch rows still masked there, in the same order
            banned = banned[positions[:, col].nonzero().squeeze(1)]
        return logits.index_put((rows,), logits[rows].masked_fill(banned, floor))
    lo, hi = region
    if not lo <= col < hi:
        return logits
    in_col = torch.zeros(hi - lo, dtype=torch.bool, device=logits.device)
    in_col[col - lo] = True
    per_row = banned[:, None, :] if banned.dim() == 2 else banned[None, None, :]
    return logits.masked_fill(in_col[None, :, None] & per_row, floor)


def _f32(value: float) -> float:
    """value rounded to float32. A float32 +, -, *, / computed in float64 and then rounded
    gives the float32 result exactly (53 >= 2 * 24 + 2 bits), so the host reproduces the
    reference's tensor arithmetic without creating or reading tensors."""
    return struct.unpack("f", struct.pack("f", value))[0]


def gathered(logits: torch.Tensor, mask: torch.Tensor, forward) -> torch.Tensor:
    """Logits [N, V] at the masked positions (row-major), from either provider layout."""
    region = getattr(forward, "dense_region", None)
    if region is None:
        return logits
    lo, hi = region
    return logits[mask[:, lo:hi]]
