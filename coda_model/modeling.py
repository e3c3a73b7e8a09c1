"""The CoDA transformer in plain PyTorch.

How it differs from Qwen3 (Hugging Face `Qwen3ForCausalLM`), and nothing else:
  * attention is bidirectional: no causal mask. The release applies no padding mask either;
    we accept an optional key-padding mask so differently sized candidates can share a batch
    (all-True reproduces the release exactly);
  * the logits keep the autoregressive parent's shift: the raw output at position i predicts
    token i+1. `forward` returns them unshifted, like the reference; samplers and losses shift.
Shared with Qwen3: RMSNorm computed in fp32, per-head q_norm/k_norm before rotate-half RoPE,
grouped-query attention, SwiGLU MLP, no biases, parameter names as in Hugging Face.

`forward` also takes an optional `kv_context` (keys/values of fixed context positions computed
earlier) for the fast infill path (coda_model/forward.py), and `causal=True` so the
autoregressive baseline we compare against shares this exact architecture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import CodaConfig

# SDPA shares each key/value head among its query heads itself from torch 2.5 (`enable_gqa`).
SDPA_GQA = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 5)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:  # the same arithmetic, fused (a CPU
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # here: 157 -> 118 us)
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos/sin tables [L, head_dim] for rotate-half RoPE, computed in fp32 then cast."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64,
                                             device=positions.device).float() / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]  # [L, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [L, D]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, D]; rotate-half convention (first half pairs with second half). cos/sin
    [L, D] for every row, or [B, L, D] where each row has its own positions."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class KVSlots:
    """Preallocated keys/values [B, KV, Lc + L, D] per layer: the first `at` columns hold fixed
    context, and each call writes its own L keys/values after them in place (no per-step
    torch.cat, the same memory every step: what a CUDA graph replays)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, at: int) -> None:
        self.k, self.v, self.at = k, v, at

    def put(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k[:, :, self.at : self.at + k.shape[2]].copy_(k)
        self.v[:, :, self.at : self.at + v.shape[2]].copy_(v)
        return self.k, self.v

    def rows(self, sel: slice | torch.Tensor) -> KVSlots:
        """These batch rows only: views for a slice, copies for indices (a step writes its
        window into them before reading, so a copy serves that step as well)."""
        return KVSlots(self.k[sel], self.v[sel], self.at)


def attend(q, k, v, attn_mask=None, per_key: bool = True) -> torch.Tensor:
    """SDPA with grouped-query attention (q [B, H, L, D], k/v [B, KV, Lk, D]) and no copies of
    the keys/values. With a key-only mask each key/value head's query heads are stacked along
    the sequence: on CUDA the masked memory-efficient kernel then applies, and on a CPU it
    beats SDPA's own GQA by ~20 % (fewer, longer blocks). Otherwise SDPA's own GQA where the
    kernel takes it (a CPU; CUDA without a mask: the flash kernel)."""
    b, heads, n, d = q.shape
    groups = heads // k.shape[1]
    if groups == 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    if per_key and attn_mask is not None and attn_mask.shape[-2] == 1:
        kv = k.shape[1]
        folded = F.scaled_dot_product_attention(q.reshape(b, kv, groups * n, d), k, v,
                                                attn_mask=attn_mask)
        return folded.reshape(b, heads, n, d)
    if SDPA_GQA and (attn_mask is None or q.device.type == "cpu"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=True)
    return F.scaled_dot_product_attention(q, k.repeat_interleave(groups, dim=1),
                                          v.repeat_interleave(groups, dim=1), attn_mask=attn_mask)


class Attention(nn.Module):
    def __init__(self, config: CodaConfig) -> None:
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = config.head_dim
        h, q, kv = config.hidden_size, self.n_heads * self.head_dim, self.n_kv * self.head_dim
        self.q_proj = nn.Linear(h, q, bias=False)
        self.k_proj = nn.Linear(h, kv, bias=False)
        self.v_proj = nn.Linear(h, kv, bias=False)
        self.o_proj = nn.Linear(q, h, bias=False)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def keys_values(self, x: torch.Tensor, cos, sin) -> tuple[torch.Tensor, torch.Tensor]:
        """Post-k_norm, post-RoPE keys and values [B, n_kv, L, D]: what a context cache stores."""
        b, n, _ = x.shape
        k = self.k_norm(self.k_proj(x).view(b, n, self.n_kv, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.n_kv, self.head_dim).transpose(1, 2)
        return apply_rotary(k, cos, sin), v

    def forward(self, x, cos, sin, key_mask=None, kv_context=None, out_kv=None, causal=False):
        b, n, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, n, self.n_heads, self.head_dim)).transpose(1, 2)
        q = apply_rotary(q, cos, sin)  # [B, H, L, D]
        k, v = self.keys_values(x, cos, sin)  # [B, KV, L, D]
        if out_kv is not None:
            out_kv.append((k, v))
        if isinstance(kv_context, KVSlots):  # preallocated: write this call's keys in place
            k, v = kv_context.put(k, v)
        elif kv_context is not None:  # fixed context positions computed earlier
            k = torch.cat((kv_context[0].expand(b, -1, -1, -1), k), dim=2)
            v = torch.cat((kv_context[1].expand(b, -1, -1, -1), v), dim=2)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        if causal:  # context keys precede this call's positions; within the call, lower-triangular
            n_ctx = k.shape[2] - n
            allowed = torch.ones(n, n_ctx + n, dtype=torch.bool, device=x.device).tril(n_ctx)
            attn_mask = allowed if attn_mask is None else attn_mask & allowed
        out = attend(q, k, v, attn_mask, per_key=not causal)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, config: CodaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: CodaConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, key_mask=None, kv_context=None, out_kv=None, causal=False):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, key_mask, kv_context, out_kv,
                               causal)
        return x + self.mlp(self.post_attention_layernorm(x))


def run_layer(layer, x, cos, sin, key_mask=None, kv_context=None, want_kv=False, causal=False):
    """One decoder layer -> (hidden states, its (k, v) if want_kv else None): the function
    `coda_model.compiled` hands to torch.compile (the caller's growing list of keys/values
    stays outside it: its length would be a guard, one compilation per layer)."""
    out_kv: list | None = [] if want_kv else None
    x = layer(x, cos, sin, key_mask, kv_context, out_kv, causal)
    return x, (out_kv[0] if out_kv else None)


class Backbone(nn.Module):
    """Named `model` inside CodaModel so parameter names match Hugging Face Qwen3."""

    def __init__(self, config: CodaConfig) -> None:
        super().__init__()
        # nn.Embedding's own init on the meta device (checkpoint loading) imports torch._dynamo,
        # two seconds of a cold start; elsewhere this is exactly that init
        weight = torch.empty(config.vocab_size, config.hidden_size)
        if weight.device.type != "meta":
            nn.init.normal_(weight)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, _weight=weight)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class CodaModel(nn.Module):
    def __init__(self, config: CodaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self._rope: dict = {}  # (device, dtype) -> cos/sin tables for positions 0..n-1
        self.layer_call = None  # coda_model.compiled: the layers through torch.compile

    def rotary(self, positions: torch.Tensor, dtype: torch.dtype, end: int | None = None):
        """cos/sin rows for `positions` from a table grown on demand: computing cos and sin
        costs about a millisecond per call on a CPU, as much as a small model's layer.
        end: a bound on the positions when the caller knows it (no read from the device)."""
        if end is not None:
            need = end
        else:
            need = int(positions.max()) + 1 if positions.numel() else 1
        key = (positions.device, dtype)
        table = self._rope.get(key)
        if table is None or table[0].shape[0] < need:
            size = max(need, 2 * table[0].shape[0] if table is not None else 1024)
            table = rotary_tables(torch.arange(size, device=positions.device),
                                  self.config.head_dim, self.config.rope_theta, dtype)
            self._rope[key] = table
        return table[0][positions], table[1][positions]

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        kv_context: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        out_kv: list | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Final-norm hidden states [B, L, H].

        positions: [L] position ids (default 0..L-1), or [B, L] one row each;
        key_mask: [B, L_keys] bool, True = attend;
        kv_context: per-layer (k, v) [1 or B, KV, Lc, D] prepended to this call's keys;
        out_kv: if given, receives each layer's (k, v) for this call's positions;
        causal: autoregressive attention (the AR baseline only; CoDA is bidirectional).
        """
        n = input_ids.shape[1]
        end = None
        if positions is None:
            positions, end = torch.arange(n, device=input_ids.device), n
        x = self.model.embed_tokens(input_ids)  # [B, L, H]
        cos, sin = self.rotary(positions, x.dtype, end)
        call = self.layer_call or run_layer
        for i, layer in enumerate(self.model.layers):
            ctx = None if kv_context is None else kv_context[i]
            x, kv = call(layer, x, cos, sin, key_mask, ctx, out_kv is not None, causal)
            if out_kv is not None:
                out_kv.append(kv)
        return self.model.norm(x)

    def forward(self, input_ids: torch.Tensor, key_mask: torch.Tensor | None = None):
        """Raw logits [B, L, V]: row i predicts token i+1 (unshifted, like the reference)."""
        return self.lm_head(self.hidden_states(input_ids, key_mask=key_mask))
