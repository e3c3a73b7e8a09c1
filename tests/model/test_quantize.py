"""Int8 CPU serving: the layers stay close to fp32, loading says what it refuses, fills work."""

import pytest
import torch
import torch.nn.functional as F

from coda_model import CheckpointError, infill, load_model, load_tokenizer, quantize
from coda_model.quantize import Int8Linear, int8_available, quantize_linears

needs_int8 = pytest.mark.skipif(not int8_available(), reason="no int8 kernels in this torch")
# what quantize_linears picks on this CPU: 7-bit inputs where it lacks VNNI (8-bit products
# would saturate the int16 sums of AVX2's kernels)
REDUCE_RANGE_HERE = not quantize.int8_fast()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@needs_int8
@pytest.mark.parametrize("reduce_range", [False, True])
def test_int8_linear_is_close_to_fp32(reduce_range):
    if not reduce_range and REDUCE_RANGE_HERE:
        pytest.skip("full-range int8 is for VNNI CPUs; quantize_linears never uses it here")
    torch.manual_seed(0)
    weight = torch.randn(96, 64) * 0.05
    x = torch.randn(2, 7, 64)
    out = Int8Linear(weight, reduce_range)(x)
    assert out.shape == (2, 7, 96) and out.dtype == torch.float32
    err = relative_error(out, F.linear(x, weight))
    assert 0 < err < (0.05 if reduce_range else 0.03)  # quantized, but close


@needs_int8
def test_per_channel_scales_keep_small_rows_accurate():
    """A row of tiny weights beside large ones keeps its own scale (per-tensor would zero it)."""
    weight = torch.randn(8, 32)
    weight[3] *= 1e-3
    x = torch.randn(4, 32)
    out = Int8Linear(weight, REDUCE_RANGE_HERE)(x)
    assert relative_error(out[:, 3], F.linear(x, weight)[:, 3]) < 0.05


@needs_int8
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_quantize_as_torch_quantize_per_channel_does(dtype):
    """The written-out arithmetic gives PyTorch's own int8 values and scales, halves included,
    and leaves the caller's weight as it was (an fp32 one is kept for full precision)."""
    torch.manual_seed(0)
    weight = (torch.randn(300, 64) * 0.05).to(dtype)
    weight[7, :4] = torch.tensor([1.0, -1.0, 0.5 / 127 * 3, 2.5 / 127])  # k + 0.5 steps: ties
    weight[9] = 0  # an all-zero row
    before = weight.clone()
    ours = quantize.quantize_rows(weight)
    w = weight.float()
    scale = (w.abs().amax(dim=1).clamp_min(1e-12) / 127).double()
    theirs = torch.quantize_per_channel(w, scale, torch.zeros(300, dtype=torch.int64), 0,
                                        torch.qint8)
    assert torch.equal(ours.int_repr(), theirs.int_repr())
    assert torch.equal(ours.q_per_channel_scales(), theirs.q_per_channel_scales())
    assert torch.equal(weight, before)


@needs_int8
def test_quantized_model_logits_follow_fp32(tiny_model_dir):
    model = load_model(tiny_model_dir)
    q = load_model(tiny_model_dir, dtype="int8")
    layers = model.config.num_hidden_layers
    assert sum(isinstance(m, Int8Linear) for m in q.modules()) == 7 * layers + 1  # + lm_head
    assert not any(isinstance(m, torch.nn.Linear) for m in q.modules())
    assert q.model.embed_tokens.weight.dtype == torch.float32   # a lookup: stays fp32
    ids = torch.randint(3, model.config.vocab_size, (2, 24))
    with torch.inference_mode():
        ref, out = model(ids), q(ids)
    assert out.shape == ref.shape
    assert relative_error(out, ref) < 0.1
    agree = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert agree > 0.8


@needs_int8
def test_int8_model_fills_through_the_cached_sampler(tiny_model_dir):
    from coda_model import ContextCarry, SamplerConfig

    model = load_model(tiny_model_dir, dtype="int8")
    tok = load_tokenizer(tiny_model_dir)
    prefix, suffix = tok.encode("def add(a, b):\n    return "), tok.encode("\n")
    config = SamplerConfig(steps=4, context_cache=True)
    cands = infill(model, tok, prefix, suffix, [4, 8], config, carry=ContextCarry())
    assert [c.length for c in cands] == [4, 8]
    assert all(len(c.ids) <= c.length and isinstance(c.text, str) for c in cands)


def test_int8_refuses_an_accelerator(tiny_model_dir):
    with pytest.raises(CheckpointError, match="CPU only"):
        load_model(tiny_model_dir, device="cuda", dtype="int8")


def test_unknown_dtype_names_int8(tiny_model_dir):
    with pytest.raises(CheckpointError, match="int8"):
        load_model(tiny_model_dir, dtype="int4")


@needs_int8
def test_quantize_refuses_a_bf16_model(tiny_model_dir):
    model = load_model(tiny_model_dir, dtype="bfloat16")
    with pytest.raises(ValueError, match="float32 model"):
        quantize_linears(model)


def test_missing_kernels_are_a_checkpoint_error(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(quantize, "int8_available", lambda: False)
    with pytest.raises(CheckpointError, match="no int8 linear kernels"):
        load_model(tiny_model_dir, dtype="int8")


def test_int8_fast_needs_vnni(monkeypatch):
    monkeypatch.setattr(quantize, "int8_available", lambda: True)
    monkeypatch.setattr(quantize, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert not quantize.int8_fast()
    monkeypatch.setattr(quantize, "cpu_flags", lambda: {"avx2", "avx512_vnni"})
    assert quantize.int8_fast()


@needs_int8
def test_full_precision_uses_the_kept_fp32_weight():
    from coda_model.quantize import full_precision

    torch.manual_seed(1)
    weight, x = torch.randn(24, 16), torch.randn(3, 16)
    layer = Int8Linear(weight, REDUCE_RANGE_HERE)
    with full_precision():
        assert torch.equal(layer(x), F.linear(x, weight))
    assert not torch.equal(layer(x), F.linear(x, weight))   # int8 again outside


@needs_int8
def test_hole_fills_are_the_fp32_models_and_typing_is_int8(tiny_model_dir):
    """The engine runs hole fills (a second to spare) at full precision, typing in int8."""
    from coda_lsp.core.engine import Engine, FillJob
    from coda_lsp.core.settings import Settings

    fp32 = Engine.load(tiny_model_dir, device="cpu", dtype="float32")
    int8 = Engine.load(tiny_model_dir, device="cpu", dtype="int8")
    for prefix in ("def add(a, b):\n    return ", "xs = [1, 2, 3]\nfor x in ", "class A:\n    "):
        job = FillJob(prefix=prefix, suffix="\n", span_lengths=(4, 8), steps=4,
                      settings=Settings())
        assert int8.fill(job).fills == fp32.fill(job).fills
    calls = []
    layer = int8.model.model.layers[0].mlp.up_proj
    real = torch.ops.quantized.linear_dynamic
    layer.forward = lambda x: calls.append(1) or real(x, layer._packed, layer.reduce_range)
    int8.fill(FillJob(prefix="x = ", suffix="\n", span_lengths=(4,), steps=2,
                      settings=Settings(), fast=True, carry_key="a"))
    assert calls   # the typing path ran the int8 kernel


@needs_int8
def test_a_large_model_keeps_no_fp32_copy(monkeypatch, tiny_model_dir):
    """Past KEEP_FP32_BYTES the int8 weights are all there is (memory is the point there):
    full_precision then changes nothing."""
    from coda_model.quantize import full_precision

    monkeypatch.setattr(quantize, "KEEP_FP32_BYTES", 0)
    model = load_model(tiny_model_dir, dtype="int8")
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert layers and all(m.weight is None for m in layers)
    ids = torch.randint(3, model.config.vocab_size, (1, 12))
    with torch.inference_mode():
        plain = model(ids)
        with full_precision():
            assert torch.equal(model(ids), plain)
