"""Growing a trained model deeper without changing what it computes.

Later GPU sessions keep adding compute to the same model, and more compute wants more
parameters.  :func:`grow_depth` spreads the old layers over the new depth, each followed by
copies of itself whose output projections (``o_proj``, ``down_proj``) start at zero: a copy then
adds nothing to the residual stream, so the grown model's outputs equal the old one's, and
training moves the copies away from zero (their projections get gradients at once; the rest of
each copy follows).  Width growth is left for later: it needs function-preserving splits of
every matrix (Net2Net), not just zeros.
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
