"""``--dry-run``: check a run's recipe, data and shapes and estimate its memory, without training.

By the time a :class:`~training.run.loop.Trainer` exists, the recipe has parsed, the device is
resolved, the data is packed (and cached for the real run) and the model is built; one forward
pass on a short slice of a real row checks that the shapes and token ids fit the model.
"""

from __future__ import annotations

import torch

from training.data.packing import DataError

GIB = 2**30


def memory_estimate(config, params: int, batch: int, seq_len: int, optimizer: str
                    ) -> dict[str, float]:
    """Rough training memory in GiB at fp32: weights, gradients, optimizer moments, and
    activations kept for backward (~16·hidden + 3·intermediate + 2·heads·L values per token
    and layer, plus the output layer's logits)."""
    moments = 2 if optimizer == "adamw" else 1
    per_token = config.num_hidden_layers * (16 * config.hidden_size
                                            + 3 * config.intermediate_size
                                            + 2 * config.num_attention_heads * seq_len)
    activations = batch * seq_len * (per_token + 2 * config.vocab_size)
    return {"weights": 4 * params / GIB, "gradients": 4 * params / GIB,
            "optimizer": 4 * moments * params / GIB, "activations": 4 * activations / GIB}


def report(trainer) -> str:
    r, model = trainer.recipe, trainer.backend.unwrap(trainer.model)
    cfg, train = model.config, trainer.train_split
    seq_len, batch = train.ids.shape[1], r.train.batch_size
    world = trainer.backend.world_size
    ids = train.ids[:1, : min(seq_len, 64)].long()
    if int(train.ids.max()) >= cfg.vocab_size:
        raise DataError(f"token id {int(train.ids.max())} >= the model's {cfg.vocab_size} rows")
    with torch.no_grad():
        model.eval()(trainer.backend.to_device(ids))
    model.train()
    params = sum(p.numel() for p in model.parameters())
    per_step = batch * r.train.grad_accum * world * seq_len
    mem = memory_estimate(cfg, params, batch, seq_len, r.optim.name)
    evals = len(trainer.eval_split) if trainer.eval_split is not None else 0
    lines = [
        f"recipe {r.name} on {r.train.device} ({world} process(es), {torch.get_num_threads()} "
        f"CPU threads)",
        f"model: {params / 1e6:.2f}M parameters, "
        f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, vocab {cfg.vocab_size}, "
        f"{cfg.max_position_embeddings} positions",
        f"data: {len(train)} train rows, {evals} eval rows of {seq_len} tokens "
        f"({trainer.out / 'data'})",
        f"steps: {r.train.steps} x [{batch} x {seq_len}] x {r.train.grad_accum} accumulation x "
        f"{world} = {per_step * r.train.steps / 1e6:.2f}M tokens "
        f"({per_step * r.train.steps / max(1, train.ids.numel()):.1f} passes over the train split)",
        "memory (rough, fp32, per process): " + ", ".join(f"{k} {v:.2f}" for k, v in mem.items())
        + f" = {sum(mem.values()):.2f} GiB",
        "shapes: one forward pass on a train row OK; dry run: nothing trained",
    ]
    if seq_len > cfg.max_position_embeddings:
        lines.append(f"WARNING: seq_len {seq_len} > the model's {cfg.max_position_embeddings} "
                     f"positions")
    return "\n".join(lines)
