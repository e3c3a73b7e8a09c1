"""Row buckets for half-precision linear layers on a CPU: a few shapes instead of thousands.

Why: on x86, PyTorch runs bf16 matrix products through oneDNN, which builds a kernel (a
"primitive") for each input shape and keeps up to 1,024 of them. A server hands its linear
layers every row count from 1 to a few thousand (each keystroke's window, each hole's
prompt), so it built and kept ever more kernels: in an hour's soak the HTTP server's memory
grew +125 % and the language server's +37 % (benchmarks/README.md, "Soak"). Rounding the
rows up to a coarse ladder (eight sizes per octave, at least 16) leaves a few dozen shapes
per layer; the padded rows are zeros whose outputs are dropped, so each real row's result
is its own, and the extra work is at most 1/8 of the rows (none below 16, where the product
reads the weights anyway).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMALLEST = 16  # below this a product costs reading the weights, whatever the rows
PER_OCTAVE = 8  # sizes per doubling: the padding is at most 1/8 of the rows
HALF_PRECISION = (torch.bfloat16, torch.float16)


def bucket(rows: int) -> int:
    """The ladder size that holds ``rows``: 16, 18, 20, ... 32, 36, 40, ... 64, 72, ..."""
    if rows <= SMALLEST:
        return SMALLEST
    step = max(1, (1 << (rows - 1).bit_length()) // (2 * PER_OCTAVE))
    return -(-rows // step) * step


def bucketed_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` computed on its rows padded to their bucket."""
    rows = x.numel() // x.shape[-1]
    padded = bucket(rows)
    if padded == rows:
        return F.linear(x, layer.weight, layer.bias)
    flat = F.pad(x.reshape(rows, x.shape[-1]), (0, 0, 0, padded - rows))
    out = F.linear(flat, layer.weight, layer.bias)[:rows]
    return out.reshape(*x.shape[:-1], out.shape[-1])


def bucket_linears(model: nn.Module) -> int:
    """Route the model's half-precision CPU ``nn.Linear`` layers through row buckets (int8
    and fp32 layers use kernels without a per-shape cache and are left alone); returns how
    many layers were routed."""
    routed = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (type(module) is nn.Linear and weight.device.type == "cpu"
                and weight.dtype in HALF_PRECISION):
            module.forward = bucketed_linear.__get__(module)
            routed += 1
    return routed
