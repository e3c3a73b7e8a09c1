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
    """Infill logits with the prefix/suffix keys and values computed once per request.

    With bidirectional attention the context tokens' own inputs never change, but their deeper
    keys/values do depend on the hole's content, so caching them is an approximation (Fast-dLLM
    DualCache, dKV-Cache): `refresh_every` recomputes everything every k steps (1 = exact) and
    `cache_window` recomputes that many context tokens on each side of the hole every step. The
    token just before the hole is always recomputed: its output predicts the first hole token.
    Rows share one prefix (right-padded batch), so one column range [start, stop) is recomputed
    for every row: it spans the longest candidate's hole.
    """

    def __init__(self, model, ids: torch.Tensor, key_mask: torch.Tensor | None,
                 prefix_len: int, lengths, config) -> None:
        self.model = model
        self.key_mask = key_mask
        self.refresh_every = config.refresh_every
        self.start = max(0, prefix_len - 1 - config.cache_window)
        self.stop = min(ids.shape[1], prefix_len + max(lengths) + config.cache_window)
        self.context_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.calls = 0
        self.passes = 0  # full passes
        self.window_passes = 0

    def _split_mask(self) -> torch.Tensor | None:
        if self.key_mask is None:
            return None
        m = self.key_mask
        return torch.cat((m[:, : self.start], m[:, self.stop :], m[:, self.start : self.stop]), 1)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rows, cols = shifted_sources(mask)
        refresh = self.context_kv is None or (
            self.refresh_every > 0 and self.calls % self.refresh_every == 0)
        self.calls += 1
        if refresh:
            self.passes += 1
            layers_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
            hidden = self.model.hidden_states(x, key_mask=self.key_mask, out_kv=layers_kv)
            a, b = self.start, self.stop
            self.context_kv = [
                (torch.cat((k[:, :, :a], k[:, :, b:]), 2), torch.cat((v[:, :, :a], v[:, :, b:]), 2))
                for k, v in layers_kv
            ]
            return self.model.lm_head(hidden[rows, cols])
        if cols.numel() and (cols.min() < self.start or cols.max() >= self.stop):
            raise ValueError("ContextCache: a mask lies outside the recomputed window")
        self.window_passes += 1
        positions = torch.arange(self.start, self.stop, device=x.device)
        hidden = self.model.hidden_states(
            x[:, self.start : self.stop], positions=positions, key_mask=self._split_mask(),
            kv_context=self.context_kv)  # [B, stop - start, H]
        return self.model.lm_head(hidden[rows, cols - self.start])
