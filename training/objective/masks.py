"""The CoDA forward process and loss, shared by every runner.

Each corruption mode is a small pure function on token tensors ``[B, L]`` that takes an explicit
``torch.Generator``; :func:`corrupt` mixes them per sequence with the probabilities of an
:class:`ObjectiveConfig`, and :func:`diffusion_loss` scores the model's raw logits.

Shift convention (the model inherits it from its autoregressive parent): the raw output at
position ``i`` predicts token ``i + 1``.  So the loss pairs ``logits[:, i]`` with
``targets[:, i + 1]`` and ``weights[:, i + 1]``; position 0 is never corrupted because no output
predicts it.

This module knows nothing about files, tokenizers or optimizers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

IGNORE = -100  # an unused target in ``Corrupted.targets``


@dataclass(frozen=True)
class ObjectiveConfig:
    """Probabilities and shapes of the forward process (all per sequence)."""

    eps: float = 1e-3                       # σ ~ U[eps, 1]
    p_block: float = 0.0                    # block masking instead of token masking
    block_sizes: tuple[int, ...] = (2, 4, 8, 16)
    p_prefix: float = 0.0                   # an unmaskable prefix of random length
    max_prefix_frac: float = 0.5
    p_truncate: float = 0.0                 # the tail replaced by pad (pad targets)
    p_span: float = 0.0                     # tree-sitter node spans
    p_span_from_inside: float = 0.5         # a span starts inside its node (inline completion)
    p_fim: float = 0.0                      # prefix | middle + extra pad canvas | suffix
    p_fim_from_inside: float = 0.0          # a FIM middle starts inside its node (the cursor)
    fim_max_middle: int = 64
    fim_max_extra: int = 32
    p_edit: float = 0.0                     # second stage: revise some unmasked tokens
    edit_rate: float = 0.05
    edit_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {self.eps}")
        probs = {k: getattr(self, k) for k in
                 ("p_block", "p_prefix", "p_truncate", "p_span", "p_fim", "p_edit",
                  "p_span_from_inside", "p_fim_from_inside", "max_prefix_frac",
                  "edit_rate")}
        for name, p in probs.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if self.p_block + self.p_span + self.p_fim > 1.0 + 1e-9:
            raise ValueError("p_block + p_span + p_fim must not exceed 1 (they are exclusive)")
        if not self.block_sizes or min(self.block_sizes) < 1:
            raise ValueError("block_sizes must be a non-empty list of positive sizes")
        if self.fim_max_middle < 1 or self.fim_max_extra < 0:
            raise ValueError("fim_max_middle >= 1 and fim_max_extra >= 0 required")


@dataclass
class Corrupted:
    """One corrupted batch: what the model sees, what it must predict, and how much it counts."""

    input_ids: torch.Tensor   # [B, L] long, masks (and edits) applied
    targets: torch.Tensor     # [B, L] long, the clean token at each position (IGNORE if none)
    weights: torch.Tensor     # [B, L] float, 1/σ on masked positions, edit_weight on edits
    sigma: torch.Tensor       # [B] float
    masked: torch.Tensor = field(default=None)  # [B, L] bool, positions replaced by the mask id


# --------------------------------------------------------------------------------------------
# Pure corruption functions.  Masks are boolean [B, L]; none ever touches position 0.
# --------------------------------------------------------------------------------------------

def sample_sigma(batch: int, eps: float, generator: torch.Generator) -> torch.Tensor:
    """σ ~ U[eps, 1] per sequence, shape [B], stratified across the batch.

    Each sequence is still marginally uniform, but the batch covers [eps, 1] evenly (one draw
    per 1/B stratum, the low-discrepancy sampler of MDLM): with the 1/σ loss weight and small
    CPU batches, plain i.i.d. draws make the loss (and gradient) swing with the batch's σ mix.
    """
    u = (torch.rand(1, generator=generator) + torch.arange(batch) / batch) % 1.0
    u = u[torch.randperm(batch, generator=generator)]
    return eps + (1.0 - eps) * u


def token_mask(maskable: torch.Tensor, sigma: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
    """Each maskable token independently with probability σ of its sequence."""
    draw = torch.rand(maskable.shape, generator=generator)
    return maskable & (draw < sigma[:, None])


def block_mask(maskable: torch.Tensor, sigma: torch.Tensor, block_sizes: tuple[int, ...],
               generator: torch.Generator) -> torch.Tensor:
    """Contiguous blocks, one size per sequence drawn from ``block_sizes``.

    The sequence is cut into consecutive blocks of that size at a random phase and each block is
    masked whole with probability σ, so every position is masked with probability exactly σ.
    """
    B, L = maskable.shape
    sizes = torch.tensor(block_sizes)[torch.randint(len(block_sizes), (B,), generator=generator)]
    phase = (torch.rand(B, generator=generator) * sizes).long()
    pos = torch.arange(L)[None, :]
    block_index = (pos + phase[:, None]) // sizes[:, None]             # [B, L]
    n_blocks = L // int(min(block_sizes)) + 2
    draw = torch.rand(B, n_blocks, generator=generator) < sigma[:, None]
    return maskable & torch.gather(draw, 1, block_index)


def unmaskable_prefix(maskable: torch.Tensor, max_frac: float,
                      generator: torch.Generator) -> torch.Tensor:
    """Keep a random-length prefix clean: returns the new ``maskable``."""
    B, L = maskable.shape
    length = (torch.rand(B, generator=generator) * max_frac * L).long()
    return maskable & (torch.arange(L)[None, :] >= length[:, None])


def truncate_suffix(ids: torch.Tensor, pad_id: int, generator: torch.Generator,
                    min_keep: int = 2) -> torch.Tensor:
    """Replace a random-length tail with pad (the model learns to write pad after the end)."""
    B, L = ids.shape
    keep = min_keep + (torch.rand(B, generator=generator) * (L - min_keep)).long()
    return torch.where(torch.arange(L)[None, :] >= keep[:, None], torch.full_like(ids, pad_id),
                       ids)


def span_mask(maskable: torch.Tensor, spans: torch.Tensor, sigma: torch.Tensor,
              generator: torch.Generator, p_from_inside: float = 0.0) -> torch.Tensor:
    """Mask whole syntax spans until about σ of the maskable tokens are masked.

    ``spans`` is [B, S, 2] (token start, end exclusive), rows with end <= start are padding.
    Spans are visited in random order and added while they fit in the budget σ·n; nested spans
    only count their new tokens.  With probability ``p_from_inside`` a span starts at a random
    token inside its node, as the server's inline spans start at the cursor.  A sequence with no
    usable span falls back to token masking.
    """
    B, L = maskable.shape
    out = torch.zeros_like(maskable)
    fallback = token_mask(maskable, sigma, generator)
    order = torch.rand(spans.shape[:2], generator=generator).argsort(dim=1)
    inside = torch.rand(spans.shape[:2], generator=generator) < p_from_inside
    cut = torch.rand(spans.shape[:2], generator=generator)
    for b in range(B):
        budget = float(sigma[b]) * int(maskable[b].sum())
        used = 0
        for s in order[b].tolist():
            start, end = int(spans[b, s, 0]), int(spans[b, s, 1])
            start, end = max(start, 1), min(end, L)
            if end <= start:
                continue
            if inside[b, s]:
                start = start + int(cut[b, s] * (end - start))
            new = maskable[b, start:end] & ~out[b, start:end]
            gain = int(new.sum())
            if gain == 0 or used + gain > budget:
                continue
            out[b, start:end] |= maskable[b, start:end]
            used += gain
        if used == 0:
            out[b] = fallback[b]
    return out


def edit_corrupt(ids: torch.Tensor, editable: torch.Tensor, rate: float, vocab_size: int,
                 generator: torch.Generator, window: int = 8,
                 forbidden: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed-Diffusion-style edits on visible tokens; returns (edited ids, edited positions).

    About ``rate`` of the editable positions become edit sites.  A site is a substitution (a
    random token) or, half the time, a deletion+insertion pair inside a short window: the token
    at the site is deleted, the window shifts left by one and a random token is inserted at its
    end, so the length stays fixed.  Only positions in ``editable`` (unmasked, maskable) change.
    """
    B, L = ids.shape
    out = ids.clone()
    changed = torch.zeros_like(editable)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[list(forbidden)] = False
    pool = allowed.nonzero().flatten()
    sites = editable & (torch.rand(B, L, generator=generator) < rate)
    kind = torch.rand(B, L, generator=generator) < 0.5
    spans = 2 + (torch.rand(B, L, generator=generator) * (window - 1)).long()
    rand_tok = pool[torch.randint(len(pool), (B, L), generator=generator)]
    for b, i in sites.nonzero().tolist():
        if changed[b, i]:
            continue
        if kind[b, i]:
            end = min(L, i + int(spans[b, i]))
            run = editable[b, i:end] & ~changed[b, i:end]
            end = i + int(run.long().cumprod(0).sum())   # stop at the first non-editable slot
            if end - i >= 2:
                out[b, i:end - 1] = ids[b, i + 1:end]
                out[b, end - 1] = rand_tok[b, i]
                changed[b, i:end] = True
                continue
        out[b, i] = rand_tok[b, i]
        changed[b, i] = True
    return out, changed & (out != ids)


def response_maskable(prompt_lengths: torch.Tensor, length: int) -> torch.Tensor:
    """SFT: only the response and its trailing padding may be masked, [B, L] bool."""
    return torch.arange(length)[None, :] >= prompt_lengths.clamp(min=1)[:, None]


def fim_variable(ids: torch.Tensor, spans: torch.Tensor | None, pad_id: int,
                 max_middle: int, max_extra: int, generator: torch.Generator,
                 p_from_inside: float = 0.0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rearrange each row into prefix | middle + k pad | suffix; returns (ids, canvas, pad_tail).

    The middle is a syntax span when the row has one that fits (else a random span of up to
    ``max_middle`` tokens); ``k`` is uniform in [0, max_extra].  The whole canvas (middle plus
    its ``k`` pad targets) is returned as ``canvas`` so the caller masks it; ``pad_tail`` marks
    the pad targets, which sit only at the canvas's end.  The row is cut back to length L.
    With probability ``p_from_inside`` a syntax middle starts at a random token inside its node
    and runs to the node's end: the server's inline fill, a cursor mid-node and a padded canvas.
    """
    B, L = ids.shape
    out = ids.clone()
    canvas = torch.zeros(B, L, dtype=torch.bool)
    pad_tail = torch.zeros(B, L, dtype=torch.bool)
    for b in range(B):
        start = end = 0
        if spans is not None and spans.shape[1] > 0:
            s = spans[b]
            ok = (s[:, 0] >= 1) & (s[:, 1] > s[:, 0]) & (s[:, 1] - s[:, 0] <= max_middle) \
                & (s[:, 1] <= L)
            idx = ok.nonzero().flatten()
            if len(idx):
                pick = idx[torch.randint(len(idx), (1,), generator=generator)].item()
                start, end = int(s[pick, 0]), int(s[pick, 1])
                if p_from_inside > 0:   # no extra draws otherwise: old runs replay exactly
                    inside, cut = torch.rand(2, generator=generator).tolist()
                    if inside < p_from_inside:
                        start += int(cut * (end - start))
        if end <= start:
            n = 1 + int(torch.randint(min(max_middle, L - 2), (1,), generator=generator))
            start = 1 + int(torch.randint(L - 1 - n, (1,), generator=generator)) if L - 1 > n \
                else 1
            end = min(L, start + n)
        extra = int(torch.randint(max_extra + 1, (1,), generator=generator))
        row = torch.cat([ids[b, :end], torch.full((extra,), pad_id, dtype=ids.dtype),
                         ids[b, end:]])[:L]
        out[b] = row
        canvas[b, start:min(L, end + extra)] = True
        pad_tail[b, end:min(L, end + extra)] = True
    return out, canvas, pad_tail


# --------------------------------------------------------------------------------------------
# The mixture and the loss.
# --------------------------------------------------------------------------------------------

def corrupt(ids: torch.Tensor, cfg: ObjectiveConfig, *, mask_id: int, pad_id: int,
            vocab_size: int, generator: torch.Generator, spans: torch.Tensor | None = None,
            maskable: torch.Tensor | None = None) -> Corrupted:
    """Apply the forward process to clean ``ids`` [B, L] with one mode mixture per sequence.

    ``maskable`` restricts masking (SFT passes :func:`response_maskable`); position 0 is never
    maskable.  Modes: block | span | fim | token (exclusive), then prefix, truncation and edits
    layered on top with their own probabilities.
    """
    ids = ids.long()
    B, L = ids.shape
    maskable = torch.ones(B, L, dtype=torch.bool) if maskable is None else maskable.clone()
    maskable[:, 0] = False
    sigma = sample_sigma(B, cfg.eps, generator)

    # One categorical draw per sequence for the exclusive modes, plus independent flags.
    u = torch.rand(B, generator=generator)
    is_block = u < cfg.p_block
    is_span = (u >= cfg.p_block) & (u < cfg.p_block + cfg.p_span)
    is_fim = (u >= cfg.p_block + cfg.p_span) & (u < cfg.p_block + cfg.p_span + cfg.p_fim)
    has_prefix = (torch.rand(B, generator=generator) < cfg.p_prefix) & ~is_fim
    has_trunc = (torch.rand(B, generator=generator) < cfg.p_truncate) & ~is_fim
    has_edit = torch.rand(B, generator=generator) < cfg.p_edit

    clean = ids.clone()
    if has_trunc.any():
        clean[has_trunc] = truncate_suffix(ids[has_trunc], pad_id, generator)
    canvas = torch.zeros(B, L, dtype=torch.bool)
    if is_fim.any():
        sub_spans = spans[is_fim] if spans is not None else None
        fim_ids, fim_canvas, _ = fim_variable(clean[is_fim], sub_spans, pad_id,
                                              cfg.fim_max_middle, cfg.fim_max_extra, generator,
                                              cfg.p_fim_from_inside)
        clean[is_fim] = fim_ids
        canvas[is_fim] = fim_canvas
    if has_prefix.any():
        maskable[has_prefix] = unmaskable_prefix(maskable[has_prefix], cfg.max_prefix_frac,
                                                 generator)

    masked = token_mask(maskable, sigma, generator)
    if is_block.any():
        masked[is_block] = block_mask(maskable[is_block], sigma[is_block], cfg.block_sizes,
                                      generator)
    if is_span.any() and spans is not None:
        masked[is_span] = span_mask(maskable[is_span], spans[is_span], sigma[is_span], generator,
                                    cfg.p_span_from_inside)
    if is_fim.any():
        # Inside the canvas every position is masked with probability σ, outside none.
        # A row whose draw masked nothing masks its whole canvas.
        region = canvas[is_fim] & maskable[is_fim]
        fim_masked = token_mask(region, sigma[is_fim], generator)
        empty = ~fim_masked.any(dim=1)
        fim_masked[empty] = region[empty]
        masked[is_fim] = fim_masked

    noisy = torch.where(masked, torch.full_like(clean, mask_id), clean)
    weights = masked.float() / sigma[:, None]
    if has_edit.any():
        editable = maskable & ~masked & has_edit[:, None]
        noisy, edited = edit_corrupt(noisy, editable, cfg.edit_rate, vocab_size, generator,
                                     forbidden=(mask_id, pad_id))
        weights = torch.where(edited, torch.full_like(weights, cfg.edit_weight), weights)
    targets = torch.where(weights > 0, clean, torch.full_like(clean, IGNORE))
    return Corrupted(input_ids=noisy, targets=targets, weights=weights, sigma=sigma,
                     masked=masked)


def diffusion_loss(logits: torch.Tensor, targets: torch.Tensor,
                   weights: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Σ weight[i+1] · CE(logits[i], targets[i+1]) / (B · L), computed in fp32.

    Returns the loss and detached metrics: ``masked_ce`` (mean CE over weighted positions,
    unweighted, the number to compare across runs) and ``n_targets``.
    """
    B, L, V = logits.shape
    shifted = logits[:, :-1].float().reshape(-1, V)
    tgt = targets[:, 1:].reshape(-1)
    w = weights[:, 1:].reshape(-1).float()
    ce = F.cross_entropy(shifted, tgt.clamp(min=0), reduction="none")
    ce = torch.where(w > 0, ce, torch.zeros_like(ce))
    loss = (ce * w).sum() / (B * L)
    n = (w > 0).sum()
    metrics = {"masked_ce": (ce.sum() / n.clamp(min=1)).detach(), "n_targets": n.detach()}
    return loss, metrics


def diffusion_loss_sparse(hidden: torch.Tensor, head, targets: torch.Tensor,
                          weights: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`diffusion_loss` with the output head applied only where a target is scored.

    ``hidden`` [B, L, H] are the final-norm hidden states, ``head`` the lm_head.  Equal to the
    dense loss, but skips the vocabulary projection of unscored positions (about half of the
    training FLOPs of a small-vocabulary model).  Its shapes depend on the mask: eager torch only,
    not XLA.
    """
    B, L, _ = hidden.shape
    w = weights[:, 1:]
    chosen = w > 0
    logits = head(hidden[:, :-1][chosen]).float()
    ce = F.cross_entropy(logits, targets[:, 1:][chosen], reduction="none")
    loss = (ce * w[chosen].float()).sum() / (B * L)
    n = chosen.sum()
    metrics = {"masked_ce": (ce.sum() / n.clamp(min=1)).detach(), "n_targets": n.detach()}
    return loss, metrics
