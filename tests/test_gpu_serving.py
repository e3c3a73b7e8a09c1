"""GPU serving paths, checked on the CPU: grouped-query attention without key/value copies,
the sampler's device-side step, and the bucketed static-shape window (what a CUDA graph replays)."""

import pytest
import torch
import torch.nn.functional as F

from coda_model import modeling


def reference_attention(q, k, v, mask):
    groups = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, k.repeat_interleave(groups, 1),
                                          v.repeat_interleave(groups, 1), attn_mask=mask)


@pytest.mark.parametrize("sdpa_gqa", [True, False])
@pytest.mark.parametrize("masked", [True, False])
def test_grouped_query_attention_equals_repeated_keys(monkeypatch, sdpa_gqa, masked):
    """SDPA's own GQA, and (sdpa_gqa=False, masked) the query heads stacked per key head that
    CUDA uses with a padding mask, both equal attention over repeat_interleave'd keys."""
    monkeypatch.setattr(modeling, "SDPA_GQA", sdpa_gqa)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, n, 16, generator=g) for h, n in ((8, 5), (2, 11), (2, 11)))
    mask = None
    if masked:
        mask = torch.rand(2, 1, 1, 11, generator=g) > 0.3
        mask[..., 0] = True
    torch.testing.assert_close(modeling.attend(q, k, v, mask), reference_attention(q, k, v, mask),
                               atol=1e-6, rtol=1e-5)
