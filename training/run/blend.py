"""Average the fine-tuned weights with the base's (WiSE-FT style) before final/ is written.

Why: on repositories the model never saw, a full fine-tune of the small model moves its weights
far enough to lose fills that parse, while the weights halfway between the base and the
fine-tuned model keep most of the gain in edit similarity and most of the base's parse rate
(training/README.md).  ``train.blend`` is the fine-tuned model's share: 1.0 keeps the trained
weights as they are, 0.5 is the plain average, 0.0 would be the base again.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def with_base(model: torch.nn.Module, base: torch.nn.Module, share: float) -> None:
    """In place: every weight of ``model`` becomes ``share``·model + (1 − share)·base.

    Tensors are walked once each: a tied embedding and lm_head are one tensor, and blending
    it twice would give it the base's weight twice."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"train.blend must be in [0, 1], not {share}")
    if share == 1.0:
        return
    base_state = base.state_dict()
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        other = base_state.get(name)
        if other is None or other.shape != tensor.shape:
            raise ValueError(f"train.blend: the base has no weight {name} of shape "
                             f"{tuple(tensor.shape)} (a different architecture?)")
        mixed = share * tensor.float() + (1.0 - share) * other.to(tensor.device).float()
        tensor.copy_(mixed.to(tensor.dtype))
