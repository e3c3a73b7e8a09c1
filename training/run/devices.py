"""Which device a run trains on, decided before anything is built, with one-line errors."""

from __future__ import annotations

import torch

from training.errors import UsageError


class DeviceError(UsageError):
    """The recipe asks for hardware this machine (or this torch) does not have."""


def resolve(device: str) -> str:
    """``auto`` becomes cuda or cpu; a cuda request without CUDA is an error, never a silent
    CPU run under a recipe that says cuda."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        why = ("this torch was built without CUDA" if torch.version.cuda is None
               else "torch sees no CUDA GPU")
        raise DeviceError(f"train.device=cuda but {why}: use --set train.device=cpu, or a "
                          f"*_cpu recipe")
    return device


def xla_backend():
    """The TPU backend; torch_xla is imported here only."""
    try:
        from training.run.xla_backend import XlaBackend
    except ImportError as exc:
        raise DeviceError(f"train.device=xla needs torch_xla ({exc}): on a TPU VM install it "
                          f"in its own environment with pip install -e '.[train,tpu]'") from exc
    return XlaBackend()
