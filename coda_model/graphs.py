"""Bucketed, static-shape window steps for the context cache, replayed as CUDA graphs on a GPU.

On a GPU a cached window step (a few dozen tokens attending to ~1k context keys) is bound by
kernel launches, not arithmetic: captured once in a CUDA graph and replayed, it costs a
fraction of the eager step. A graph replays fixed shapes in fixed memory, so here the window's
width and the context's length are rounded up to buckets (the padding hidden by the key mask),
the context keys/values live in preallocated per-layer buffers that each step writes its
window's keys/values into (`KVSlots`: no per-step torch.cat), and the ids, rotary rows and mask
are copied into fixed tensors. One `WindowStep` per (batch, window, context) bucket is kept per
model, captured on its first use. On a CPU the same static path runs eagerly (tests check that
it gives the dynamic path's tokens); the CPU default stays the dynamic path.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import torch

from .modeling import KVSlots, run_layer

WINDOW_BUCKET = 16  # window widths round up to a multiple of this
CONTEXT_BUCKET = 256  # context lengths round up to a multiple of this
MAX_SHAPES = 8  # captured shapes kept per model (each holds its context buffers)
MAX_BUFFER_BYTES = 2 << 30  # and their context buffers at most this much (the newest always)
STATIC_ON_CPU = False  # tests set it to run the static path eagerly on the CPU
STATIC_ON_CUDA = True  # benchmarks clear it to compare with the dynamic path
CUDA_GRAPHS = True  # on CUDA, replay each shape as a graph (False: the same path, eager)

_steps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> OrderedDict


def bucket(n: int, size: int) -> int:
    return max(size, -(-n // size) * size)


def static_windows(device) -> bool:
    """Whether the context cache's window steps use fixed shapes: on CUDA (and in tests)."""
    kind = torch.device(device).type
    return STATIC_ON_CPU if kind == "cpu" else STATIC_ON_CUDA and kind == "cuda"


def window_step(model, batch: int, width: int, context: int, dtype, device) -> WindowStep:
    """The model's step for this bucketed shape (built, and captured, once; LRU of MAX_SHAPES)."""
    shapes = _steps.setdefault(model, OrderedDict())
    key = (batch, bucket(width, WINDOW_BUCKET), bucket(context, CONTEXT_BUCKET), dtype,
           torch.device(device))
    step = shapes.pop(key, None)
    if step is None:
        step = WindowStep(model, *key)
    shapes[key] = step
    while len(shapes) > 1 and (len(shapes) > MAX_SHAPES or
                               sum(s.nbytes for s in shapes.values()) > MAX_BUFFER_BYTES):
        shapes.popitem(last=False)
    return step


class WindowStep:
    """Logits [B, width, V] of a window against context keys/values loaded per request."""

    @torch.inference_mode()  # buffers and graph belong to inference mode, as its callers do
    def __init__(self, model, batch: int, width: int, context: int, dtype, device) -> None:
        cfg = model.config
        self.model, self.width, self.context = model, width, context
        shape = (batch, cfg.num_key_value_heads, context + width, cfg.head_dim)
        layers = len(model.model.layers)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.ids = torch.zeros((batch, width), dtype=torch.long, device=device)
        self.cos = torch.zeros((width, cfg.head_dim), dtype=dtype, device=device)
        self.sin = torch.zeros_like(self.cos)
        self.key_mask = torch.zeros((batch, context + width), dtype=torch.bool, device=device)
        self.nbytes = 2 * layers * self.keys[0].numel() * self.keys[0].element_size()
        self.graph = None
        self.logits: torch.Tensor | None = None
        self.use_graph = CUDA_GRAPHS and torch.device(device).type == "cuda"
        self.replays = 0

    @torch.inference_mode()
    def load(self, context_kv, context_mask: torch.Tensor | None,
             window_mask: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor) -> None:
        """A request's context keys/values [B, KV, Lc, D] per layer, and which of its context
        and window columns are real tokens (None: all). Padding is masked, never attended."""
        lc, w = context_kv[0][0].shape[2], cos.shape[0]
        for (k, v), kb, vb in zip(context_kv, self.keys, self.values, strict=True):
            kb[:, :, :lc].copy_(k)
            vb[:, :, :lc].copy_(v)
        self.key_mask.zero_()
        self.key_mask[:, :lc] = True if context_mask is None else context_mask
        at = self.context
        self.key_mask[:, at : at + w] = True if window_mask is None else window_mask
        self.cos[:w].copy_(cos)
        self.sin[:w].copy_(sin)
        self.ids.zero_()

    @torch.inference_mode()
    def __call__(self, window_ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, width, V] for window_ids [B, w <= width] (columns past w: padding)."""
        self.ids[:, : window_ids.shape[1]].copy_(window_ids)
        if not self.use_graph:
            return self._forward()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        self.replays += 1
        return self.logits

    def _forward(self) -> torch.Tensor:
        backbone = self.model.model
        call = self.model.layer_call or run_layer
        h = backbone.embed_tokens(self.ids)
        for layer, kb, vb in zip(backbone.layers, self.keys, self.values, strict=True):
            h, _ = call(layer, h, self.cos, self.sin, self.key_mask,
                        KVSlots(kb, vb, self.context))
        return self.model.lm_head(backbone.norm(h))

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # one warm-up outside the graph (lazy kernel setup)
            self._forward()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the server's other threads may touch CUDA while its worker captures
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.logits = self._forward()
