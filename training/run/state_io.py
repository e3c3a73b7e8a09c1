"""Trainer state (optimizer, scheduler, data position, RNG) on disk without pickle.

Tensors go to a safetensors file; everything else (nested dicts with int or str keys, lists,
tuples, numbers, strings, None) goes to JSON, with each tensor replaced by a reference to its
safetensors key. Loading rebuilds the exact structure, so `optimizer.load_state_dict` and
`torch.set_rng_state` receive what they were given.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from training.errors import UsageError


class StateError(UsageError):
    """A trainer state file that cannot be read; the message names the file."""


def _encode(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous()
        return {"tensor": key}
    if isinstance(value, dict):
        return {"dict": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return {"list": [_encode(v, tensors) for v in value]}
    if value is None or isinstance(value, bool | int | float | str):
        return {"value": value}
    raise TypeError(f"trainer state holds a {type(value).__name__}, which has no safe encoding")


def _decode(node, tensors: dict[str, torch.Tensor]):
    (kind, payload), = node.items()
    if kind == "tensor":
        return tensors[payload]
    if kind == "dict":
        return {_decode(k, tensors): _decode(v, tensors) for k, v in payload}
    if kind == "tuple":
        return tuple(_decode(v, tensors) for v in payload)
    if kind == "list":
        return [_decode(v, tensors) for v in payload]
    return payload


def save_state(state: dict, folder: Path, stem: str = "trainer_state") -> None:
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors)
    save_file(tensors, str(folder / f"{stem}.safetensors"))
    (folder / f"{stem}.json").write_text(json.dumps(tree))


def load_state(folder: Path, stem: str = "trainer_state") -> dict:
    tensors_file, tree_file = folder / f"{stem}.safetensors", folder / f"{stem}.json"
    try:
        tensors = load_file(str(tensors_file))
    except (OSError, SafetensorError) as exc:
        raise StateError(f"{tensors_file}: unreadable trainer state ({exc})") from exc
    try:
        return _decode(json.loads(tree_file.read_text()), tensors)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateError(f"{tree_file}: unreadable trainer state ({exc!r})") from exc
