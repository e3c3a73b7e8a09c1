"""Logits providers for the sampler: which positions are recomputed at each step.

`FullForward` recomputes the whole window every step (the reference) but applies `lm_head`
only where the sampler needs logits. `ContextCache` (infill) computes the keys/values of the
fixed prefix and suffix once and then recomputes only the hole, the token just before it
(whose output predicts the hole's first token) and an optional window of context on each side.
"""

from __future__ import annotations

import torch


def shifted_sources(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of the raw outputs that predict the masked positions: column p-1 (p=0: 0)."""
    rows, cols = mask.nonzero(as_tuple=True)
    return rows, (cols - 1).clamp(min=0)


class FullForward:
    def __init__(self, model, key_mask: torch.Tensor | None = None) -> None:
        self.model = model
        self.key_mask = key_mask
        self.passes = 0

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        hidden = self.model.hidden_states(x, key_mask=self.key_mask)  # [B, L, H]
        rows, cols = shifted_sources(mask)
        return self.model.lm_head(hidden[rows, cols])  # [N, V]


class ContextCache:
    """Placeholder replaced by the cached provider; see below."""
