"""A servable model folder from a model in training: bf16 weights in the Hugging Face layout.

One ``model.safetensors``, or numbered shards of at most ``shard_limit`` bytes plus an index
(a lent GPU machine sends back only files under a size limit), and ``config.json``; the folder
is swapped in whole, so a kill mid-export leaves the previous export intact.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

MIB = 1024 * 1024


def shard_plan(tensors: dict[str, torch.Tensor], limit: int) -> list[list[str]]:
    """Names grouped into shards of at most ``limit`` bytes each, safetensors header included
    (in name order)."""
    limit -= 64 * 1024   # the JSON header: ~100 bytes per tensor
    shards: list[list[str]] = [[]]
    size = 0
    for name in sorted(tensors):
        n = tensors[name].numel() * tensors[name].element_size()
        if n > limit:
            raise ValueError(f"{name} alone is {n / MIB:.1f} MiB, over the {limit / MIB:.1f} "
                             f"MiB shard limit")
        if size + n > limit and shards[-1]:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def bf16_state(model) -> dict[str, torch.Tensor]:
    return {name: t.detach().to("cpu", torch.bfloat16).contiguous()
            for name, t in model.state_dict().items()
            if not (name == "lm_head.weight" and model.config.tie_word_embeddings)}


def export_model(model, out_dir: Path, shard_limit: int) -> list[Path]:
    """bf16 weights in the Hugging Face layout (one ``model.safetensors`` or numbered shards
    plus an index) and config.json, swapped in as a whole folder: a kill mid-export leaves the
    previous export whole."""
    tensors = bf16_state(model)
    shards = shard_plan(tensors, shard_limit)
    nxt = out_dir.with_name(out_dir.name + ".next")
    shutil.rmtree(nxt, ignore_errors=True)
    nxt.mkdir(parents=True)
    names = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for fname, group in zip(names, shards, strict=True):
        save_file({k: tensors[k] for k in group}, str(nxt / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in group})
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        (nxt / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1) + "\n")
    config = model.config.to_dict()
    config["torch_dtype"] = "bfloat16"
    (nxt / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    old = out_dir.with_name(out_dir.name + ".old")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(nxt, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return sorted(out_dir.iterdir())


def files_back(n_params_bytes: int, shard_limit: int) -> int:
    shards = max(1, math.ceil(n_params_bytes / (shard_limit * 0.9)))
    return 1 + shards + (shards > 1) + 3     # config, shards, index, manifest, report, log
