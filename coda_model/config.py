"""The architecture config of a CoDA model, read from and written to a release's config.json.

Only architecture lives here: training knobs that the release's config.json also carries
(masking probabilities, sampling eps...) are kept aside in `extra` so a round trip preserves them
but nothing in the model depends on them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MODEL_TYPE = "CoDA"


@dataclass(frozen=True)
class CodaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 40960
    tie_word_embeddings: bool = False
    mask_token_id: int | None = None
    pad_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"config: {name} must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"config: num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"config: head_dim must be even for RoPE, got {self.head_dim}")
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            raise ValueError("config: rms_norm_eps and rope_theta must be positive")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodaConfig:
        """Build from a config.json dict; head_dim defaults to hidden/heads as in Qwen."""
        model_type = data.get("model_type")
        if model_type not in (MODEL_TYPE, "qwen3"):
            raise ValueError(f"config: model_type is {model_type!r}, expected {MODEL_TYPE!r}")
        if data.get("rope_scaling"):
            raise ValueError(f"config: rope_scaling {data['rope_scaling']!r} is not supported")
        if data.get("use_sliding_window"):
            raise ValueError("config: sliding-window attention is not supported")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size",
                               "num_hidden_layers", "num_attention_heads") if k not in data]
        if missing:
            raise ValueError(f"config: missing keys {missing}")
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs.setdefault("num_key_value_heads", data["num_attention_heads"])
        if kwargs.get("head_dim") is None:
            kwargs["head_dim"] = data["hidden_size"] // data["num_attention_heads"]
        kwargs["rope_theta"] = float(kwargs.get("rope_theta", 1_000_000.0))
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The config.json of a CoDA release: our fields plus whatever extra keys came in."""
        out = {k: v for k, v in self.extra.items() if k != "auto_map"}
        out.update({f.name: getattr(self, f.name)
                    for f in dataclasses.fields(self) if f.name != "extra"})
        out["model_type"] = MODEL_TYPE
        out.setdefault("architectures", ["CoDALanguageModel"])
        out.setdefault("hidden_act", "silu")
        out.setdefault("attention_bias", False)
        return out

    @property
    def num_parameters(self) -> int:
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h + 2 * self.head_dim
        head = 0 if self.tie_word_embeddings else v * h
        return v * h + self.num_hidden_layers * per_layer + h + head
