"""The training loop's device side in plain PyTorch (CPU or one CUDA device).

The reference every backend follows: ``training.run.xla_backend`` (TPU) and the accelerate one
in ``training.finetune`` implement the same methods, and ``Trainer`` calls nothing else.
"""

from __future__ import annotations

import contextlib

import torch


class TorchBackend:
    """Plain PyTorch on one device; the reference the other backends follow."""

    is_main = True
    world_size = 1
    rank = 0
    sparse_head = True   # eager torch: project only the scored positions (dynamic shapes)

    def __init__(self, device: str = "cpu") -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)

    def prepare(self, model, optimizer, scheduler):
        return model.to(self.device), optimizer, scheduler

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm(self, model, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    def optimizer_step(self, optimizer) -> None:
        optimizer.step()

    def step_end(self) -> None:
        """Where a lazy backend cuts its graph (XLA's mark_step)."""

    def on_host(self, fn, *args) -> None:
        """Run ``fn(*args)`` once the step's values are ready (XLA: a step closure)."""
        fn(*args)

    def unwrap(self, model):
        return model

    def no_sync(self, model, sync: bool):
        """Skip the gradient all-reduce on all but the last micro-batch (DDP); no-op here."""
        return contextlib.nullcontext()

    def wait(self) -> None:
        """A barrier between processes (no-op with one)."""
