"""Row buckets for bf16 CPU linears: few shapes, each row's own result, fp32 and int8 untouched."""

import torch
import torch.nn.functional as F
from torch import nn

from coda_model.bucketing import SMALLEST, bucket, bucket_linears
from coda_model.config import CodaConfig
from coda_model.modeling import CodaModel


def test_buckets_hold_the_rows_with_little_padding():
    sizes = [bucket(rows) for rows in range(1, 4097)]
    assert all(size >= rows for rows, size in enumerate(sizes, start=1))
    assert sizes == sorted(sizes)  # more rows never get a smaller bucket
    assert all(size == SMALLEST for size in sizes[:SMALLEST])
    assert all(size - rows <= rows / 8 for rows, size in enumerate(sizes, start=1) if rows > 16)
    assert len(set(sizes)) <= 70  # vs 4,096 shapes unbucketed: what bounds oneDNN's cache
    assert bucket(256) == 256 and bucket(257) == 288


def tiny_model(dtype: torch.dtype) -> CodaModel:
    config = CodaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=8, max_position_embeddings=128)
    torch.manual_seed(0)
    return CodaModel(config).to(dtype)


def test_only_half_precision_layers_are_routed():
    assert bucket_linears(tiny_model(torch.float32)) == 0
    model = tiny_model(torch.bfloat16)
    linears = sum(type(m) is nn.Linear for m in model.modules())
    assert linears == 2 * 7 + 1  # q k v o gate up down per layer, and the lm_head
    assert bucket_linears(model) == linears


def test_a_bucketed_layer_gives_each_row_its_own_result():
    torch.manual_seed(1)
    layer = nn.Linear(32, 48, bias=True).to(torch.bfloat16)
    x = torch.randn(3, 7, 32, dtype=torch.bfloat16)
    expected = F.linear(x, layer.weight, layer.bias)
    bucket_linears(layer)
    out = layer(x)
    assert out.shape == (3, 7, 48) and out.dtype == torch.bfloat16
    # the same rows computed inside a 32-row product: bf16 kernels may block them differently
    torch.testing.assert_close(out, expected, atol=2e-2, rtol=2e-2)
    one_row = layer(x[1:2, 3:4])  # a row alone and among others: the same answer
    torch.testing.assert_close(one_row[0, 0], out[1, 3], atol=2e-2, rtol=2e-2)


def test_a_bucketed_model_keeps_its_outputs():
    model = tiny_model(torch.bfloat16)
    ids = torch.randint(0, 64, (1, 21))
    with torch.inference_mode():
        before = model(ids)
        bucket_linears(model)
        after = model(ids)
    assert after.shape == before.shape
    assert (after.argmax(-1) == before.argmax(-1)).float().mean() >= 0.9
