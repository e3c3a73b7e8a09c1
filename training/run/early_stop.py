"""Early stopping on a validation split: keep the best weights seen, stop when they stop improving.

Why: how long a fine-tune should run depends on the repository (a small one is over-fitted in a
few dozen steps, a large one still gains at the cap), and a fixed number of passes got that
wrong one way or the other (training/README.md).  The loop scores the validation files' middle
cross-entropy every ``train.early_stop_every`` steps, from step 0 (the base) on; the weights of
the best score are kept in memory (the trained parameters only: a LoRA run's adapters), put back
at the end, and saved as final/.  If the base itself scores best, final/ is the base again and
the verdict says the fine-tune did not help.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A host copy of the trained parameters (frozen ones cannot have changed)."""
    return {name: p.detach().to("cpu", copy=True)
            for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def restore(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, value in state.items():
        params[name].copy_(value.to(params[name].device))


class EarlyStop:
    """Feed it (step, validation loss); it keeps the best snapshot and says when to stop:
    after ``patience`` scores in a row no better than the best by ``min_delta``."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ValueError("early stopping needs patience >= 1")
        self.patience, self.min_delta = patience, min_delta
        self.best = math.inf
        self.best_step: int | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.worse = 0

    def see(self, step: int, loss: float, take: Callable[[], dict]) -> bool:
        """Record a score; ``take()`` snapshots the weights when it is the best. True: stop."""
        if loss < self.best - self.min_delta:
            self.best, self.best_step, self.state, self.worse = loss, step, take(), 0
            return False
        self.worse += 1
        return self.worse >= self.patience
