"""Int8 linear layers for CPU inference: weights stored int8, activations quantized per call.

Why: on a CPU the typing path's matrix products have a few dozen rows, so their cost is reading
the weights and the kernel's overhead, not arithmetic. Measured on a 2-core AVX-512 VNNI CPU
(one thread, 34 rows, fp32 against int8): 256x768 159 -> 107 us, 512x1536 1053 -> 399 us,
1024x2816 5517 -> 726 us. Small models gain ~20 % per keystroke, a 30-50 M one ~2x, and a
1.7B one holds its weights in a quarter of the memory.

Weights are quantized symmetrically per output channel (scale = max |w| / 127); each call
quantizes its input per tensor (PyTorch's dynamic int8 kernels: fbgemm/oneDNN on x86, qnnpack on
ARM), computes in int8 with int32 sums and returns fp32. The error against fp32 is ~2 % of an
output's norm: fills may differ from the fp32 model's where two tokens were nearly tied, so
the golden, exact paths never use it; it is a serving choice (`--dtype int8`). Inputs share one
scale per call, so rows computed together round differently from rows computed apart: the
cached hole-fill path matched the exact one on 55 of 100 held-out holes in int8 against 96 in
fp32 (ES 0.251 vs 0.266, -0.015 +- 0.017 paired), hence `full_precision` for hole fills
(where the fp32 weights are kept: models up to ~250 M parameters).
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}  # x86: int8 dot products into int32
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (x86 "flags", aarch64 "Features"); empty when unknown."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def int8_available() -> bool:
    """Whether this PyTorch build has the dynamic int8 linear kernels (they are deprecated
    upstream; a build without them serves fp32)."""
    ops = getattr(torch.ops, "quantized", None)
    try:
        return (ops is not None and hasattr(ops, "linear_dynamic")
                and hasattr(ops, "linear_prepack")
                and bool(set(torch.backends.quantized.supported_engines) - {"none"}))
    except RuntimeError:
        return False


def int8_fast() -> bool:
    """Whether int8 pays here: the kernels exist and the CPU multiplies int8 into int32 in one
    instruction (VNNI). Without it the kernels keep 7-bit inputs to avoid overflow (twice the
    error) and gain less."""
    return int8_available() and bool(cpu_flags() & VNNI_FLAGS)


_full_precision: contextvars.ContextVar[bool] = contextvars.ContextVar("int8_off", default=False)


@contextlib.contextmanager
def full_precision():
    """Within it, Int8Linear layers compute with their fp32 weights: for work with time to
    spare (hole fills), where int8's rounding costs more than it saves."""
    token = _full_precision.set(True)
    try:
        yield
    finally:
        _full_precision.reset(token)


KEEP_FP32_BYTES = 1 << 30  # linear weights up to this size in fp32 are kept for full_precision


CHUNK_BYTES = 64 << 20  # fp32 rows quantized at a time: a 1.7B model's tied lm_head is 1.2 GB


def quantize_rows(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 (scale = max |w| / 127) of a weight in any float dtype,
    a few rows at a time so a bf16 table never exists in fp32 all at once. Rows are quantized
    independently, so the result is the same as quantizing the whole fp32 weight.

    The arithmetic is torch.quantize_per_channel's (x times the fp32 inverse of the scale,
    rounded half to even), written out: the same int8 values (tests/model/test_quantize.py),
    and a 1.7B model's 196 linears quantize in 3 s instead of 8.7 s on 2 cores (an int8 load's
    largest stage)."""
    rows, cols = weight.shape
    step = max(1, CHUNK_BYTES // (4 * cols))
    values = torch.empty(rows, cols, dtype=torch.int8)
    scales = torch.empty(rows, dtype=torch.float64)
    for lo in range(0, rows, step):
        w = weight[lo : lo + step].detach().float().cpu()
        low, high = torch.aminmax(w, dim=1)
        scale = (torch.maximum(high, -low).clamp_min(1e-12) / 127).double()
        inverse = (1.0 / scale).float()
        q = (w * inverse[:, None]).round_().clamp_(-128, 127)  # w may be the caller's own fp32
        values[lo : lo + step] = q.to(torch.int8)
        scales[lo : lo + step] = scale
    return torch._make_per_channel_quantized_tensor(
        values, scales, torch.zeros(rows, dtype=torch.int64), 0)


class Int8Linear(nn.Module):
    """A bias-free linear layer with int8 weights (per output channel) and dynamic int8 inputs.
    With keep_fp32 it keeps the fp32 weight too, for `full_precision` (a few MB for the shipped
    model; a tied lm_head's is the embedding table itself); without, int8 throughout."""

    def __init__(self, weight: torch.Tensor, reduce_range: bool, keep_fp32: bool = True) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach() if keep_fp32 else None, persistent=False)
        with warnings.catch_warnings():  # "quantized tensors are deprecated": int8_available
            warnings.simplefilter("ignore")  # says whether this build still has them
            self._packed = torch.ops.quantized.linear_prepack(quantize_rows(weight), None)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.reduce_range = reduce_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None and _full_precision.get():
            return F.linear(x, self.weight)
        return torch.ops.quantized.linear_dynamic(x.float(), self._packed, self.reduce_range)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_linears(model: nn.Module, reduce_range: bool | None = None,
                     keep_fp32: bool | None = None) -> int:
    """Replace every nn.Linear of a fp32 CPU model by an Int8Linear, in place; returns how many.

    A tied lm_head gets its own int8 copy and the embedding table stays fp32 (a lookup reads
    one row, so int8 would save memory but no time). The norms, RoPE and attention stay fp32.
    keep_fp32 (default: when the linear weights are at most KEEP_FP32_BYTES in fp32, as for
    the shipped model; a 1.7B model's are ~7 GB, where int8 is for the memory too).
    """
    if not int8_available():
        raise RuntimeError("this PyTorch build has no int8 linear kernels: use --dtype float32")
    first = next(model.parameters())
    if first.device.type != "cpu" or first.dtype != torch.float32:
        raise ValueError(f"int8 needs a float32 model on the CPU, not {first.dtype} on "
                         f"{first.device.type}")
    if reduce_range is None:
        reduce_range = not bool(cpu_flags() & VNNI_FLAGS)
    swaps = [(parent, name, child) for parent in model.modules()
             for name, child in parent.named_children() if isinstance(child, nn.Linear)]
    if keep_fp32 is None:
        keep_fp32 = 4 * sum(child.weight.numel() for _, _, child in swaps) <= KEEP_FP32_BYTES
    for parent, name, child in swaps:
        if child.bias is not None:
            raise ValueError(f"{name}: int8 layers here have no bias")
        setattr(parent, name, Int8Linear(child.weight, reduce_range, keep_fp32))
    return len(swaps)


class NarrowEmbedding(nn.Embedding):
    """An embedding table kept in bf16 (or fp16) that hands out fp32 rows: for an int8 model
    too big to keep fp32 weights (a 1.7B model's table is 1.2 GB in fp32, 0.6 GB in bf16; the
    release stores it in bf16, so nothing is lost). The rows continue in fp32, as the int8
    layers and the norms expect."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids).float()


class NarrowHead(nn.Module):
    """A tied lm_head that multiplies by the embedding table in its own narrow dtype and
    returns fp32 logits: no second copy of the table (int8 would add 0.3 GB for a 1.7B)."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        self.embedding = [embedding]  # a list: the table stays one parameter, owned once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.embedding[0].weight
        return F.linear(x.to(weight.dtype), weight).float()

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding[0].weight


# A big int8 model's tied lm_head: "int8" (its own int8 copy of the table) or "narrow"
# (NarrowHead, no copy). CoDA-1.7B, 16 rows, 2 cores: int8 19 ms vs bf16 52 ms, and 17 vs 277 ms
# where the CPU has no native bf16 (oneDNN capped at AVX-512 VNNI); the head runs every
# denoising step, so int8 is worth its 0.3 GB; its error is the bf16 head's (bench_1p7b_cpu.py).
TIED_HEAD = "int8"
