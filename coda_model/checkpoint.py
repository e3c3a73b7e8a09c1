"""Load and save CoDA checkpoints in the Hugging Face release layout, safetensors only.

Our parameter names are Hugging Face Qwen3's, so the name table is the identity; loading is
strict (a missing, unexpected or mis-shaped tensor is one error naming it). Compatibility shims
are few and each is logged: an absent `lm_head.weight` is tied to the embedding, a sharded
index is followed, on-disk dtypes are cast. `auto_map` is ignored: no checkpoint code runs.
A checkpoint whose config.json marks it autoregressive (``"objective": "autoregressive-fim"``,
the AR baseline) is refused unless the caller says it decodes causally or retrains it: masked
diffusion decoding of such weights runs without error and writes nonsense.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from . import quantize
from .config import CodaConfig
from .memory import return_freed_memory
from .modeling import CodaModel

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "added_tokens.json", "generation_config.json")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be served, with the reason and the file at fault."""


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """None means float32: exact on every CPU; bf16 is opt-in (faster on recent CPUs)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise CheckpointError(
            f"unknown dtype {dtype!r}; use one of {sorted(DTYPES) + ['int8']}") from None


def read_config(path: Path) -> CodaConfig:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json (not a Hugging Face model folder)")
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
        if "auto_map" in data:
            log.info("ignoring auto_map in %s: checkpoint code is never executed", config_file)
        return CodaConfig.from_dict(data)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{config_file}: {exc}") from exc


def require_diffusion(path: Path, config: CodaConfig) -> None:
    """Refuse a checkpoint that training.eval.ar_baseline marked autoregressive (diffusion ones
    carry no mark): decoded as diffusion it runs without error and writes nonsense."""
    objective = config.extra.get("objective")
    if str(objective or "").startswith("autoregressive"):
        raise CheckpointError(f"{path}: config.json marks an autoregressive model (objective "
                              f"{objective!r}); diffusion decoding needs a diffusion checkpoint")


def weight_files(path: Path) -> list[Path]:
    if (path / INDEX).is_file():
        try:
            index = json.loads((path / INDEX).read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
            raise CheckpointError(f"{path / INDEX}: unreadable shard index ({exc})") from exc
        files = [path / s for s in shards]
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{path}: shard {f.name} named in {INDEX} is missing")
        return files
    if (path / WEIGHTS).is_file():
        return [path / WEIGHTS]
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickled:
        raise CheckpointError(
            f"{path}: only pickled weights found ({', '.join(pickled)}); they are never loaded "
            "because unpickling runs code. Convert them to safetensors "
            "(e.g. safetensors.torch.save_file on a trusted machine) and retry."
        )
    raise CheckpointError(f"{path}: no {WEIGHTS} or {INDEX}")


READ_WINDOW_BYTES = 256 << 20  # bytes read through one open (memory-mapped) file handle


def tensor_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the files' headers, without reading any weights."""
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as handle:
                for name in handle.keys():
                    shapes[name] = tuple(handle.get_slice(name).get_shape())
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{f}: corrupt or unreadable safetensors file ({exc})") from exc
    return shapes


def stored_parameters(path: str | os.PathLike) -> int:
    """How many numbers a checkpoint folder stores, from its headers (no weight is read): what
    a serving dtype is chosen by before loading."""
    return sum(math.prod(shape) for shape in tensor_shapes(weight_files(Path(path))).values())


def stream_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Each tensor once, as stored, one at a time: the caller converts and places it before
    the next is read, so a model never exists twice (nor in fp32 when served narrower).
    safetensors maps the file into memory and the pages read stay in the process's RSS until
    the handle closes, so the handle is reopened every READ_WINDOW_BYTES."""
    for f in files:
        handle = None
        try:
            with safe_open(str(f), framework="pt") as first:
                names = list(first.keys())
            read = 0
            for name in names:
                if handle is None:
                    handle = safe_open(str(f), framework="pt")
                    handle.__enter__()
                tensor = handle.get_tensor(name)
                read += tensor.numel() * tensor.element_size()
                if read >= READ_WINDOW_BYTES:
                    handle.__exit__(None, None, None)
                    handle, read = None, 0
                yield name, tensor
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{f}: corrupt or unreadable safetensors file ({exc})") from exc
        finally:
            if handle is not None:
                handle.__exit__(None, None, None)


def read_tensors(files: list[Path], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor at once in `dtype` (tools that edit a whole state dict; loading streams)."""
    return {name: tensor.to(dtype) for name, tensor in stream_tensors(files)}


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu",
               dtype: str | torch.dtype | None = None,
               autoregressive: bool = False) -> CodaModel:
    """Load a CoDA folder strictly into a CodaModel in eval mode.

    Tensors are read one at a time straight into the serving dtype and device (shapes are
    checked from the headers first), so loading needs the model's memory and one tensor more.

    ``dtype="int8"``: float32 with every linear layer's weights int8 (coda_model.quantize), a
    CPU serving choice; each linear is quantized as it is read. A model too big to keep fp32
    weights (quantize.KEEP_FP32_BYTES) also keeps its embedding table in bf16
    (quantize.NarrowEmbedding), and a tied lm_head gets an int8 copy of it (quantize.TIED_HEAD).

    ``autoregressive=True`` accepts an autoregressive checkpoint, for callers that decode it
    causally or train it further; by default one is refused before its weights are read.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory")
    config = read_config(path)
    if not autoregressive:
        require_diffusion(path, config)
    int8 = isinstance(dtype, str) and dtype.lower() == "int8"
    if int8 and torch.device(device).type != "cpu":
        raise CheckpointError(f"int8 runs on the CPU only, not {device}: use bfloat16 there")
    if int8 and not quantize.int8_available():
        raise CheckpointError(f"{path}: this PyTorch build has no int8 linear kernels: "
                              "use --dtype float32")
    dtype = resolve_dtype(None if int8 else dtype)
    files = weight_files(path)
    if len(files) > 1:
        log.info("loading %d safetensors shards listed in %s", len(files), INDEX)
    shapes = tensor_shapes(files)
    if "lm_head.weight" not in shapes:
        log.info("no lm_head.weight in %s: tying it to the embedding", path)
        config = CodaConfig(**{**_fields(config), "tie_word_embeddings": True}, extra=config.extra)
    elif config.tie_word_embeddings:
        log.info("lm_head.weight present although config ties embeddings: loading it untied")
        config = CodaConfig(**{**_fields(config), "tie_word_embeddings": False}, extra=config.extra)
    with torch.device("meta"):
        model = CodaModel(config)
    check_tensors(path, model, shapes)
    if int8:
        place = Int8Placement(model, shapes)
    else:
        def place(name: str, tensor: torch.Tensor) -> None:
            _set_parameter(model, name, tensor.to(device=device, dtype=dtype))
    try:
        for name, tensor in stream_tensors(files):
            place(name, tensor)
            del tensor
        if int8:
            place.finish()
    finally:
        if int8:
            place.close()
    if not int8 and config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model = model.to(device).eval()
    return_freed_memory()
    return model


def check_tensors(path: Path, model: CodaModel, shapes: dict[str, tuple[int, ...]]) -> None:
    """Names and shapes on disk against the model the config describes, before any read."""
    expected = dict(model.state_dict())
    if model.config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            more = " ..." if len(missing) > 8 else ""
            parts.append(f"missing tensors: {', '.join(missing[:8])}{more}")
        if unexpected:
            parts.append(f"unexpected tensors: {', '.join(unexpected[:8])}"
                         + (" ..." if len(unexpected) > 8 else ""))
        raise CheckpointError(f"{path}: does not match its config.json ({'; '.join(parts)})")
    for name, tensor in expected.items():
        if shapes[name] != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: tensor {name} has shape {shapes[name]}, "
                f"config.json implies {tuple(tensor.shape)}"
            )


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """What load_state_dict(assign=True) does for one parameter: the tensor becomes it."""
    owner, _, leaf = name.rpartition(".")
    module = model.get_submodule(owner)
    old = getattr(module, leaf)
    setattr(module, leaf, nn.Parameter(tensor, requires_grad=old.requires_grad))


class Int8Placement:
    """Places streamed tensors into an int8 model: each linear weight becomes an Int8Linear
    as it arrives (its fp32 form lives only while it is quantized), norms are fp32, and the
    embedding fp32, or bf16 when the linears are too big to keep fp32 copies.

    Linears are quantized and packed on QUANTIZING threads while the next tensors are read:
    fbgemm's packing runs on one core, and it is a third of a 1.7B model's load. At most
    QUANTIZING weights wait or are in work, so memory stays a few tensors above the model's."""

    QUANTIZING = 2

    def __init__(self, model: CodaModel, shapes: dict[str, tuple[int, ...]]) -> None:
        self.model = model
        self.linears = {f"{name}.weight": name for name, module in model.named_modules()
                        if isinstance(module, nn.Linear)}
        linear_numel = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
        self.keep_fp32 = 4 * linear_numel <= quantize.KEEP_FP32_BYTES
        self.reduce_range = not bool(quantize.cpu_flags() & quantize.VNNI_FLAGS)
        self.embedding = "model.embed_tokens.weight"
        self.pool = ThreadPoolExecutor(self.QUANTIZING, thread_name_prefix="int8-load")
        self.pending: deque[tuple[str, Future]] = deque()
        self.head: Future | None = None  # a big tied model's int8 head, quantized meanwhile

    def __call__(self, name: str, tensor: torch.Tensor) -> None:
        if name in self.linears:
            while len(self.pending) >= self.QUANTIZING:
                self._settle_oldest()
            self.pending.append((name, self.pool.submit(
                quantize.Int8Linear, tensor.float() if self.keep_fp32 else tensor,
                self.reduce_range, self.keep_fp32)))
        elif name == self.embedding and not self.keep_fp32:
            narrow = tensor if tensor.dtype in (torch.bfloat16, torch.float16) else tensor.to(
                torch.bfloat16)
            table = quantize.NarrowEmbedding(narrow.shape[0], narrow.shape[1], _weight=narrow)
            table.weight.requires_grad_(self.model.model.embed_tokens.weight.requires_grad)
            self.model.model.embed_tokens = table
            if self.model.config.tie_word_embeddings and quantize.TIED_HEAD == "int8":
                self.head = self.pool.submit(quantize.Int8Linear, narrow, self.reduce_range,
                                             False)  # 311 M numbers at 1.7B: ~5 s, overlapped
        else:
            _set_parameter(self.model, name, tensor.float())

    def _settle_oldest(self) -> None:
        name, future = self.pending.popleft()
        owner, _, leaf = self.linears[name].rpartition(".")
        setattr(self.model.get_submodule(owner), leaf, future.result())

    def close(self) -> None:
        """Stop the quantizing threads (after a read failed too: queued work is dropped)."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def finish(self) -> None:
        """The last linears in place, and the tied lm_head, once the embedding is in."""
        while self.pending:
            self._settle_oldest()
        if not self.model.config.tie_word_embeddings:
            return
        table = self.model.model.embed_tokens
        if self.keep_fp32:
            self.model.lm_head = quantize.Int8Linear(table.weight, self.reduce_range, True)
        elif self.head is not None:
            self.model.lm_head = self.head.result()
        else:
            self.model.lm_head = quantize.NarrowHead(table)


def _fields(config: CodaConfig) -> dict:
    return {k: v for k, v in config.to_dict().items()
            if k in CodaConfig.__dataclass_fields__ and k != "extra"}


def save_model(model: CodaModel, out_dir: str | os.PathLike, *,
               tokenizer_dir: str | os.PathLike | None = None,
               dtype: str | torch.dtype | None = None) -> Path:
    """Write config.json + model.safetensors (+ tokenizer files) as one atomic folder swap."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        state = {}
        for name, tensor in model.state_dict().items():
            if name == "lm_head.weight" and model.config.tie_word_embeddings:
                continue
            t = tensor.detach().to("cpu")
            state[name] = (t.to(resolve_dtype(dtype)) if dtype is not None else t).contiguous()
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        if tokenizer_dir is not None:
            for name in TOKENIZER_FILES:
                src = Path(tokenizer_dir) / name
                if src.is_file():
                    shutil.copyfile(src, tmp / name)
        (tmp / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
        # mkdtemp makes the folder 0700: a model folder is a build output others serve too.
        os.chmod(tmp, 0o755)
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
