"""The torch_xla side of the training loop (TPU), the only module that imports torch_xla.

SPMD with a one-axis ``fsdp`` mesh over every device: 2-D weights are sharded along their first
dimension, norms are replicated, and each batch is sharded along its rows, so XLA inserts the
all-gathers and reduce-scatters of FSDP itself.  Per the torchprime pattern, the traced step is
only forward + backward + optimizer, cut by ``mark_step``; metrics are read in step closures so
logging never forces an extra device sync.  Corruption stays on the host (static [B, L] shapes).

torch_xla pins its own torch: install it into a separate environment with
``pip install -e .[train,tpu]`` on the TPU VM.  Status: written against the torch_xla 2.9 SPMD
API and exercised only by ``tests/test_training_runners.py`` where torch_xla is installed
(``PJRT_DEVICE=CPU`` works); multi-host input sharding has not been run on a pod yet.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch_xla
import torch_xla.core.xla_model as xm
import torch_xla.distributed.spmd as xs
import torch_xla.runtime as xr


class XlaBackend:
    sparse_head = False   # dynamic shapes would recompile every step

    def __init__(self) -> None:
        xr.use_spmd()
        self.device = torch_xla.device()
        n = xr.global_runtime_device_count()
        self.mesh = xs.Mesh(np.arange(n), (n,), ("fsdp",))
        # Under SPMD each host runs one process that feeds its share of the global batch.
        self.world_size = xr.process_count()
        self.rank = xr.process_index()
        self.is_main = self.rank == 0

    def prepare(self, model, optimizer, scheduler):
        model = model.to(self.device)   # Parameters keep their identity: the optimizer follows
        for p in model.parameters():
            if p.dim() >= 2 and p.shape[0] % self.mesh.size() == 0:
                xs.mark_sharding(p, self.mesh, ("fsdp",) + (None,) * (p.dim() - 1))
        return model, optimizer, scheduler

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.device)
        if t.dim() >= 1 and t.shape[0] % self.mesh.size() == 0:
            xs.mark_sharding(t, self.mesh, ("fsdp",) + (None,) * (t.dim() - 1))
        return t

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm(self, model, max_norm):
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    def optimizer_step(self, optimizer):
        optimizer.step()

    def step_end(self):
        xm.mark_step()

    def on_host(self, fn, *args):
        xm.add_step_closure(fn, args)

    def unwrap(self, model):
        return model

    def no_sync(self, model, sync: bool):
        return contextlib.nullcontext()

    def wait(self):
        if self.world_size > 1:
            xm.rendezvous("coda-checkpoint")
