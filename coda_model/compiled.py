"""The decoder layers through ``torch.compile``, for GPUs (issue 14).

Why: on a GPU a cached window step of CoDA-1.7B is ~1,500 kernels, most of them elementwise
(RMSNorm in fp32, RoPE, SwiGLU, residuals) on a few dozen tokens; replayed as a CUDA graph it
still took 6.5 ms against a 1.35 ms weight-read floor, and an eager 1 k-token full pass 26 ms,
bound by launches. Inductor fuses each layer's elementwise work into a few kernels.

All layers share one compiled function (the layer is an argument; its parameters are inputs,
not constants), compiled for dynamic shapes, so one compilation (tens of seconds, once per
process) serves every layer, prompt length and window bucket. The CUDA graphs of
`coda_model.graphs` capture the compiled kernels as they did the eager ones. Results agree with
the eager layers to rounding (fused arithmetic), not bit for bit: the golden paths stay eager.
"""

from __future__ import annotations

import torch

from .modeling import CodaModel, run_layer

VARIANTS = 32  # compilations kept: batch 1 or more x mask or none x context kind x keys wanted


def compile_layers(model: CodaModel, dynamic: bool = True) -> None:
    """From now on the model runs its layers compiled (compiling on first use of each variant:
    one batch of 1 or more, with or without a key mask, context keys or none, keys returned or
    not; never per layer or per length). Past torch's default of 8 variants it would silently
    run eagerly, hence the higher limit."""
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):  # the newer name, the older one
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), VARIANTS))
            break
    model.layer_call = torch.compile(run_layer, dynamic=dynamic)


def uncompile_layers(model: CodaModel) -> None:
    model.layer_call = None
