"""LoRA adapters on a CoDA model (peft), and the merged servable model they make.

Why: a 1.7B base does not fit full fine-tuning's optimizer state on one 24 GB GPU, and a user's
repository is too small to move 1.7B weights well; low-rank adapters on the attention and MLP
linears train ~1 % of the parameters.  Our model is plain PyTorch, so peft wraps it as a custom
module (``target_modules`` by name); what is saved and served is always the merged model in the
Hugging Face layout ``coda_model`` loads (safetensors, never the adapter-only peft format), so
the before/after verdict and the server read it like any other checkpoint.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from safetensors.torch import load_file, save_file

ADAPTER_FILE = "adapter.safetensors"   # in a training checkpoint, beside the merged weights
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BIG_BASE_PARAMS = 1_000_000_000        # "auto": LoRA for bases this large (CoDA-1.7B) on a GPU


@dataclass(frozen=True)
class LoraSettings:
    enabled: str = "auto"                # auto | on | off
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    targets: tuple[str, ...] = TARGETS
    # > 0: the learning rate when adapters train (they start at zero and want ~10x the rate of
    # a full fine-tune); 0 keeps optim.lr
    lr: float = 0.0

    def __post_init__(self) -> None:
        if self.enabled not in ("auto", "on", "off"):
            raise ValueError(f"lora.enabled {self.enabled!r}: use auto, on or off")
        if self.rank < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1 or self.lr < 0:
            raise ValueError("lora.rank >= 1, lora.alpha > 0, lora.lr >= 0 and lora.dropout in "
                             "[0, 1) required")


def wanted(settings: LoraSettings, n_params: int, device: str) -> bool:
    """on/off as asked; auto: adapters for a CoDA-1.7B-sized base on a GPU, full weights else."""
    if settings.enabled != "auto":
        return settings.enabled == "on"
    return n_params >= BIG_BASE_PARAMS and device == "cuda"


def wrap(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """The model with trainable adapters on the target linears and every base weight frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha,
                        lora_dropout=settings.dropout, target_modules=list(settings.targets),
                        bias="none")
    return get_peft_model(model, config)


def is_lora(model: torch.nn.Module) -> bool:
    from peft import PeftModel
    return isinstance(model, PeftModel)


def merged(model: torch.nn.Module, *, inplace: bool = False) -> torch.nn.Module:
    """The plain CodaModel with the adapters folded into its weights (peft's merge_and_unload).
    Not in place: on a copy, so training can go on (a periodic checkpoint)."""
    if not is_lora(model):
        return model
    target = model if inplace else copy.deepcopy(model)
    plain = target.merge_and_unload()
    plain.train(model.training)
    return plain


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict
    return {k: v.detach().to("cpu").contiguous()
            for k, v in get_peft_model_state_dict(model).items()}


def save_adapters(model: torch.nn.Module, folder) -> None:
    save_file(adapter_state(model), str(folder / ADAPTER_FILE), metadata={"format": "pt"})


def load_adapters(model: torch.nn.Module, folder) -> None:
    """Restore a checkpoint's adapters (resume); the frozen base comes from ``init_from``."""
    from peft import set_peft_model_state_dict

    path = folder / ADAPTER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {ADAPTER_FILE} (written without LoRA?)")
    result = set_peft_model_state_dict(model, load_file(str(path)))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{path}: adapters for other modules ({', '.join(unexpected[:3])})")
