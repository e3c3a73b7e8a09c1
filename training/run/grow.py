"""Growing a trained model deeper without changing what it computes.

Later GPU sessions keep adding compute to the same model, and more compute wants more
parameters.  :func:`grow_depth` spreads the old layers over the new depth, each followed by
copies of itself whose output projections (``o_proj``, ``down_proj``) start at zero: a copy then
adds nothing to the residual stream, so the grown model's outputs equal the old one's, and
training moves the copies away from zero (their projections get gradients at once; the rest of
each copy follows).

:func:`grow_width` widens the residual stream, adds attention heads and MLP neurons the same
way: whatever writes to the residual's new channels, and whatever the new heads and neurons
write, starts at zero, so those channels stay zero and the old channels compute what they did;
RMSNorm averages over more channels, so its weights are scaled by sqrt(old / new) to keep
each norm's output.  What only *reads* new channels, or belongs to a new head or neuron, starts
random (it reads zeros, so it changes nothing), which gives every zeroed projection a gradient
at once.  Per-layer cost on a CPU rises less with width than with depth (a 384-wide 6-layer
model types faster than a 256-wide 8-layer one, benchmarks/README.md "Model size").
"""

from __future__ import annotations

import torch

from coda_model import CodaConfig, CodaModel

ZEROED = ("self_attn.o_proj.weight", "mlp.down_proj.weight")


def source_layers(old: int, new: int) -> list[int]:
    """For each new layer, the old layer it copies (in order, each old layer at least once)."""
    return [j * old // new for j in range(new)]


def grow_depth(model: CodaModel, layers: int) -> CodaModel:
    """A ``layers``-deep copy of ``model`` with the same outputs (see the module doc)."""
    old = model.config.num_hidden_layers
    if layers < old:
        raise ValueError(f"cannot grow {old} layers to {layers}")
    config = CodaConfig.from_dict({**model.config.to_dict(), "num_hidden_layers": layers})
    grown = CodaModel(config)
    state = model.state_dict()
    new_state = {k: v for k, v in state.items() if not k.startswith("model.layers.")}
    sources = source_layers(old, layers)
    for j, i in enumerate(sources):
        first = j == 0 or sources[j - 1] != i
        prefix = f"model.layers.{i}."
        for key, value in state.items():
            if key.startswith(prefix):
                name = key[len(prefix):]
                copy = value.clone()
                if not first and name in ZEROED:
                    copy.zero_()
                new_state[f"model.layers.{j}.{name}"] = copy
    if config.tie_word_embeddings:
        new_state.pop("lm_head.weight", None)
    missing, unexpected = grown.load_state_dict(new_state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"growth left tensors unset: {missing} / {unexpected}")
    return grown.to(next(model.parameters()).dtype).train(model.training)


@torch.no_grad()
def same_function(a: CodaModel, b: CodaModel, ids: torch.Tensor) -> float:
    """Largest absolute logit difference on ``ids`` (a check, used by the tests and the run)."""
    return float((a.eval()(ids) - b.eval()(ids)).abs().max())


def _widened_heads(old_heads: int, new_heads: int, kv: int) -> list[int]:
    """Where each old query head goes: within its key/value group, first, so that grouped-query
    attention still pairs it with the same key/value head (new heads fill each group's end)."""
    g_old, g_new = old_heads // kv, new_heads // kv
    return [(h // g_old) * g_new + h % g_old for h in range(old_heads)]


@torch.no_grad()
def grow_width(model: CodaModel, hidden: int, intermediate: int, std: float = 0.02,
               seed: int = 0) -> CodaModel:
    """A copy of ``model`` with a ``hidden``-wide residual stream (hidden // head_dim query
    heads, the same key/value heads and head size) and ``intermediate`` MLP neurons, computing
    the same outputs (see the module doc)."""
    c = model.config
    hd, kv = c.head_dim, c.num_key_value_heads
    heads = hidden // hd
    if hidden < c.hidden_size or intermediate < c.intermediate_size or hidden % hd \
            or heads % kv or heads // kv < c.num_attention_heads // kv:
        raise ValueError(f"cannot widen {c.hidden_size}/{c.intermediate_size} "
                         f"({c.num_attention_heads} heads) to {hidden}/{intermediate}")
    # eps scaled with the width keeps each hidden-size norm exact: mean over the new width of
    # the same squares plus eps·old/new is old/new times the old mean plus eps. (q_norm and
    # k_norm see the smaller eps too: ~1e-7 relative, where their inputs are near unit scale.)
    config = CodaConfig.from_dict({**c.to_dict(), "hidden_size": hidden,
                                   "intermediate_size": intermediate,
                                   "num_attention_heads": heads,
                                   "rms_norm_eps": c.rms_norm_eps * c.hidden_size / hidden})
    g = torch.Generator().manual_seed(seed)
    old_h, old_i = c.hidden_size, c.intermediate_size
    norm_scale = (old_h / hidden) ** 0.5
    place = _widened_heads(c.num_attention_heads, heads, kv)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * std

    state = {k: v.float() for k, v in model.state_dict().items()}
    new: dict[str, torch.Tensor] = {}
    for key, w in state.items():
        name = key.rsplit(".", 2)[-2] if key.endswith(".weight") else key
        if key == "lm_head.weight" and c.tie_word_embeddings:
            continue
        if key in ("model.embed_tokens.weight", "lm_head.weight"):   # new channels: zero
            out = torch.zeros(w.shape[0], hidden)
            out[:, :old_h] = w
        elif name in ("input_layernorm", "post_attention_layernorm", "norm"):
            out = torch.full((hidden,), float(w.mean()) * norm_scale)
            out[:old_h] = w * norm_scale
        elif name in ("q_norm", "k_norm"):
            out = w.clone()
        elif name == "q_proj":
            out = rand(heads * hd, hidden)
            for h, to in enumerate(place):
                out[to * hd:(to + 1) * hd, :old_h] = w[h * hd:(h + 1) * hd]
        elif name in ("k_proj", "v_proj", "gate_proj", "up_proj"):
            out = rand(w.shape[0] if name in ("k_proj", "v_proj") else intermediate, hidden)
            out[:w.shape[0], :old_h] = w
        elif name == "o_proj":
            out = torch.zeros(hidden, heads * hd)
            for h, to in enumerate(place):
                out[:old_h, to * hd:(to + 1) * hd] = w[:, h * hd:(h + 1) * hd]
        elif name == "down_proj":
            out = torch.zeros(hidden, intermediate)
            out[:old_h, :old_i] = w
        else:
            raise RuntimeError(f"grow_width does not know how to widen {key}")
        new[key] = out
    grown = CodaModel(config)
    missing, unexpected = grown.load_state_dict(new, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"growth left tensors unset: {missing} / {unexpected}")
    return grown.to(next(model.parameters()).dtype).train(model.training)


def grow_to(model: CodaModel, width: int = 0, layers: int = 0, seed: int = 0) -> CodaModel:
    """``model`` widened to ``width`` (MLP in proportion) then deepened to ``layers``, each only
    where larger than now: the one recipe ``training.gpu_run`` and its benchmark share."""
    c = model.config
    if width > c.hidden_size:
        model = grow_width(model, width, c.intermediate_size * width // c.hidden_size, seed=seed)
    if layers > model.config.num_hidden_layers:
        model = grow_depth(model, layers)
    return model
