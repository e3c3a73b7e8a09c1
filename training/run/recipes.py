"""Typed training configs and the named recipes built from them.

A recipe is a frozen :class:`Recipe` returned by a function registered in :data:`RECIPES`;
the CLIs pick one with ``--recipe NAME`` and change a few fields with ``--set key=value``
(dotted paths, e.g. ``--set train.steps=200 optim.lr=1e-3``).  Architecture lives in
``CodaConfig``-shaped ``model`` dicts; everything about training lives here, never in the
checkpoint's config.json.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from coda_model.config import CodaConfig
from training.data.packing import DataConfig
from training.objective.masks import ObjectiveConfig
from training.run.lora import LoraSettings

STDLIB = str(Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}")


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adamw"                  # adamw | adafactor
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    warmup_steps: int = 100
    schedule: str = "cosine"             # cosine | linear | constant (after warmup)
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in ("adamw", "adafactor"):
            raise ValueError(f"unknown optimizer {self.name!r}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"unknown schedule {self.schedule!r}")
        if self.lr <= 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("lr > 0, warmup_steps >= 0, min_lr_ratio in [0, 1] required")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 100
    batch_size: int = 8                  # per optimizer step, per process, before accumulation
    grad_accum: int = 1
    seed: int = 0
    threads: int = 0                     # torch.set_num_threads; 0 leaves the default
    device: str = "cpu"                  # cpu | cuda | xla
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 4
    checkpoint_every_steps: int = 0      # 0: only by time and at the end
    checkpoint_every_seconds: float = 300.0
    keep_checkpoints: int = 2
    # > 0: train this many passes over the train split (a small repository gets fewer steps
    # than a large one), ``steps`` becoming the cap.
    passes: float = 0.0
    # > 0: passes set by the split's size instead: as many as show the model about this many
    # rows, within [passes_min, passes_max] (a small repository is seen more often, a large
    # one less; train.steps stays the cap).
    passes_rows: int = 0
    passes_min: float = 1.0
    passes_max: float = 4.0
    # > 0: score the validation split (data.val_token_cap) every this many steps, keep the
    # best weights, stop after early_stop_patience scores without a gain (training.run.early_stop)
    early_stop_every: int = 0
    early_stop_patience: int = 2
    # < 1: final/ is this share of the fine-tuned weights plus the rest of the base's
    # (init_from), a WiSE-FT style average (training.run.blend); checkpoints stay as trained.
    blend: float = 1.0
    init_std: float = 0.02
    # GPU efficiency (plain torch backend). "auto" means bf16 autocast and corruption on the
    # device on CUDA, fp32 and the reference per-row corruption on CPU (the golden curve).
    precision: str = "auto"              # auto | fp32 | bf16 (autocast; weights stay fp32)
    corruption: str = "auto"             # auto | host (objective.corrupt) | device (batched)
    compile: bool = False                # torch.compile the backbone (pays on long GPU runs)
    max_spans: int = 128                 # spans kept per row for device corruption

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("steps, batch_size and grad_accum must be positive")
        if self.device not in ("cpu", "cuda", "xla", "auto"):
            raise ValueError(f"unknown device {self.device!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"unknown precision {self.precision!r}; use auto, fp32 or bf16")
        if not 0.0 <= self.blend <= 1.0:
            raise ValueError(f"train.blend must be in [0, 1], not {self.blend}")
        if self.corruption not in ("auto", "host", "device"):
            raise ValueError(f"unknown corruption {self.corruption!r}; use auto, host or device")


@dataclass(frozen=True)
class TokenizerConfig:
    path: str | None = None              # an existing tokenizer folder (e.g. the CoDA release)
    vocab_size: int = 8192               # trained on the train split when path is None


@dataclass(frozen=True)
class Recipe:
    name: str
    model: dict[str, Any]                # CodaConfig fields except vocab_size and special ids
    data: DataConfig
    objective: ObjectiveConfig = ObjectiveConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    lora: LoraSettings = LoraSettings()   # adapters instead of full weights (training.run.lora)
    init_from: str | None = None         # a CoDA checkpoint folder to start from
    hardware: str = "CPU"
    notes: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------

SPAN_FIM_BLOCK = ObjectiveConfig(p_block=0.2, block_sizes=(2, 4, 8, 16, 32), p_span=0.35,
                                 p_span_from_inside=0.5, p_fim=0.3, fim_max_middle=64,
                                 fim_max_extra=32, p_prefix=0.1, p_truncate=0.05)


def tiny_cpu() -> Recipe:
    """A few-hundred-thousand-parameter model on a small corpus: tests, smoke runs, benchmarks."""
    return Recipe(
        name="tiny_cpu",
        model=dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                   tie_word_embeddings=True, rope_theta=10_000.0),
        data=DataConfig(sources=(str(Path(STDLIB) / "json"),), seq_len=64, eval_fraction=0.2,
                        max_span_tokens=24),
        objective=replace(SPAN_FIM_BLOCK, fim_max_middle=16, fim_max_extra=8),
        optim=OptimConfig(lr=3e-3, warmup_steps=5, weight_decay=0.0),
        train=TrainConfig(steps=30, batch_size=8, log_every=5, eval_every=15, eval_batches=2,
                          threads=1),
        tokenizer=TokenizerConfig(vocab_size=512),
        notes="Seconds on one CPU core; loss falls but the model is useless.",
    )


def default_model_cpu() -> Recipe:
    """The model shipped in model/ (issue 7): 5.3M parameters (21 MB fp32), ~90 min on one core.

    Measured on this machine: ~1,200 training tokens/s on one idle thread at sequence 512, but
    ~700 while the other core is busy; 1,800 steps of 4 x 512 tokens are 3.7M tokens (about
    1.3 passes over the stdlib's train split).  max_position_embeddings is the training length:
    servers should not exceed it.
    """
    return Recipe(
        name="default_model_cpu",
        model=dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                   tie_word_embeddings=True, rope_theta=10_000.0,
                   max_position_embeddings=512),
        data=DataConfig(sources=(STDLIB,), seq_len=512, eval_fraction=0.03,
                        max_span_tokens=64),
        objective=SPAN_FIM_BLOCK,
        optim=OptimConfig(lr=2e-3, warmup_steps=150, weight_decay=0.1, min_lr_ratio=0.1),
        train=TrainConfig(steps=1800, batch_size=4, threads=1, log_every=10, eval_every=250,
                          eval_batches=4, checkpoint_every_seconds=300.0),
        tokenizer=TokenizerConfig(vocab_size=8192),
        notes="CPython stdlib (PSF) minus tests; whole files held out by path hash.",
    )


def default_model_cpu_from_ar() -> Recipe:
    """The shipped model: the AR baseline's first 1,800 steps adapted to diffusion (as CoDA
    adapts Qwen3). From random weights, bidirectional attention stayed near the unigram loss
    for thousands of CPU steps; from an AR model, output i already predicts token i+1."""
    base = default_model_cpu()
    return replace(base, name="default_model_cpu_from_ar", init_from="runs/ar_baseline-1800/final",
                   optim=replace(base.optim, lr=1e-3, warmup_steps=100),
                   train=replace(base.train, steps=2400, seed=2))


def default_model_cpu_continue() -> Recipe:
    """A second, warm-restarted cosine over the finished default run (more tokens, same data)."""
    base = default_model_cpu()
    return replace(base, name="default_model_cpu_continue", init_from="runs/default/final",
                   optim=replace(base.optim, lr=1e-3, warmup_steps=100),
                   train=replace(base.train, steps=1800, seed=1))


def default_model_gpu() -> Recipe:
    """More compute for the shipped model: one H100 command of at most 10 minutes
    (``training.gpu_run``, ``scripts/gpu_default_model.sh``).

    Warm-starts from ``model/`` (itself AR-started, then diffusion) so every lent GPU adds to
    the same weights.  Data: the GPU machine's installed permissive packages plus the stdlib
    (``training.data.corpus``; ``data.sources`` is filled in by the run).  ``train.steps`` is a
    placeholder: the run measures its step time and re-plans the cosine to fit its budget.
    """
    base = default_model_cpu()
    return replace(base, name="default_model_gpu", model={}, init_from="model",
                   data=replace(base.data, eval_fraction=0.01),
                   optim=replace(base.optim, lr=1e-3, warmup_steps=100, min_lr_ratio=0.1),
                   train=TrainConfig(steps=100_000, batch_size=256, seed=3, device="auto",
                                     log_every=50, eval_every=1000, eval_batches=4,
                                     checkpoint_every_seconds=120.0, keep_checkpoints=1,
                                     compile=True),
                   hardware="1 GPU (H100: bf16, compiled), one command of at most 10 minutes",
                   notes="Installed MIT/BSD/Apache/PSF/ISC packages + stdlib, deduplicated and "
                         "decontaminated against HumanEval-Infilling.")


def finetune_repo_gpu() -> Recipe:
    """Continued span-masked training of a CoDA checkpoint on one repository (GPU, accelerate)."""
    return Recipe(
        name="finetune_repo_gpu",
        model={},
        data=DataConfig(sources=(".",), extensions=(".py", ".js", ".ts", ".rs", ".go", ".c",
                                                    ".h", ".cpp", ".java", ".lua"),
                        seq_len=2048, eval_fraction=0.0, eval_token_cap=0.12,
                        max_span_tokens=256),
        objective=replace(SPAN_FIM_BLOCK, fim_max_middle=256, fim_max_extra=64),
        optim=OptimConfig(lr=1e-5, warmup_steps=50, weight_decay=0.0, min_lr_ratio=0.1),
        train=TrainConfig(steps=1000, batch_size=4, grad_accum=8, device="cuda", log_every=10,
                          eval_every=200, eval_batches=8, checkpoint_every_seconds=1800.0),
        # a CoDA-1.7B base trains LoRA adapters (lora.enabled=auto) at the usual LoRA rate
        lora=LoraSettings(lr=2e-4),
        hardware="1+ GPU with 24 GB (bf16); multi-GPU via accelerate launch",
    )


def finetune_repo_cpu() -> Recipe:
    """Fine-tune the shipped model on one repository in a few minutes on a 2-core CPU.

    The best measured on four repositories the model never saw (training/README.md): lr 1.5e-4
    (it helped two of the four beyond one s.e.; 3e-4 one, 1e-3 none), 10 warm-up steps then a
    cosine, two passes over the repository in batches of 16 rows of 256 tokens (capped at 100
    steps), and half of the train tokens replayed from the stdlib the base model learned from,
    against forgetting; final/ is the average of the fine-tuned and the base weights
    (``train.blend=0.5``): on the same runs it passed the verdict on three of four unseen
    repositories where the trained weights alone passed on one (marshmallow lost 0.075 of its
    fills that parse).  Held out: files by a hash of their path inside the repository, up to
    12 % of its tokens.  One thread: on a shared 2-core machine two threads were 3x slower per
    step.
    """
    base = finetune_repo_gpu()
    return replace(base, name="finetune_repo_cpu",
                   data=replace(base.data, extensions=(".py",), seq_len=256, eval_fraction=0.0,
                                min_eval_files=0, eval_token_cap=0.12, max_span_tokens=64,
                                replay_sources=(STDLIB,), replay_mix=0.5),
                   objective=SPAN_FIM_BLOCK,
                   optim=OptimConfig(lr=1.5e-4, warmup_steps=10, weight_decay=0.0,
                                     min_lr_ratio=0.1),
                   train=TrainConfig(steps=100, passes=2.0, batch_size=16, device="cpu",
                                     threads=1, log_every=10, eval_every=0, eval_batches=4,
                                     checkpoint_every_seconds=120.0, blend=0.5),
                   hardware="2 CPU cores, a few minutes with the shipped model")


def finetune_repo_cpu_early_stop() -> Recipe:
    """finetune_repo_cpu with early stopping and passes by the repository's size (a candidate:
    its measurement did not finish, training/README.md).  6 % of the repository's tokens
    (files by path hash, apart from the 12 % the verdict scores) are validation files, their
    middle cross-entropy scored every 10 steps from the base on; the best weights are kept and
    the run stops after two scores without a gain.  Passes: about 1600 rows (1 to 4 passes,
    at most 100 steps), so a small repository is seen more often and the validation decides.
    """
    base = finetune_repo_cpu()
    return replace(base, name="finetune_repo_cpu_early_stop",
                   data=replace(base.data, val_token_cap=0.06),
                   train=replace(base.train, passes=0.0, passes_rows=1600, passes_min=1.0,
                                 passes_max=4.0, early_stop_every=10, early_stop_patience=2))


def sft_gpu() -> Recipe:
    """Instruction tuning on (prompt, response) JSONL pairs: only the response is maskable."""
    return replace(finetune_repo_gpu(), name="sft_gpu",
                   objective=ObjectiveConfig(p_truncate=0.0),
                   optim=OptimConfig(lr=2e-5, warmup_steps=100, weight_decay=0.0))


def tiny_finetune_cpu() -> Recipe:
    """tiny_cpu's shapes and sizes for finetune smoke runs on CPU."""
    base = tiny_cpu()
    return replace(base, name="tiny_finetune_cpu", model={},
                   optim=replace(base.optim, lr=1e-3), train=replace(base.train, steps=10))


def pretrain_coda_1p7b_tpu_v4() -> Recipe:
    """CoDA-1.7B diffusion pre-training from Qwen3-1.7B weights on a TPU v4 pod slice.

    Shapes are the release's; token budgets follow the paper (~180B pre-training tokens).
    The optimizer numbers are our choice: check them against the paper before spending a pod.
    """
    return Recipe(
        name="pretrain_coda_1p7b_tpu_v4",
        model=dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                   num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                   rope_theta=1_000_000.0, max_position_embeddings=40960,
                   tie_word_embeddings=False),
        data=DataConfig(sources=("/data/pretrain",), extensions=(".py", ".js", ".ts", ".rs",
                                                                  ".go", ".c", ".cpp", ".java",
                                                                  ".md", ".txt"),
                        seq_len=8192, eval_fraction=0.001, max_span_tokens=512,
                        max_bytes=2_000_000),
        objective=ObjectiveConfig(p_block=0.01, p_prefix=0.01, p_truncate=0.01, p_span=0.1,
                                  p_fim=0.1, fim_max_middle=512, fim_max_extra=128,
                                  block_sizes=(2, 4, 8, 16, 32, 64)),
        optim=OptimConfig(name="adafactor", lr=3e-4, warmup_steps=2000, schedule="cosine",
                          min_lr_ratio=0.1, weight_decay=0.01, grad_clip=1.0),
        # batch_size is per host process: 4 x 32 hosts of a v4-256 = 128 sequences per step.
        train=TrainConfig(steps=170_000, batch_size=4, device="xla", log_every=50,
                          eval_every=2000, eval_batches=16, checkpoint_every_steps=2000,
                          checkpoint_every_seconds=3600.0, keep_checkpoints=3),
        tokenizer=TokenizerConfig(path="checkpoints/CoDA-v0-Base"),
        init_from="checkpoints/Qwen3-1.7B",
        hardware="TPU v4-256 or larger (SPMD FSDP over all chips)",
        notes="~128 x 8192 tokens per step x 170k steps ≈ 180B tokens.",
    )


def midtrain_coda_1p7b_tpu_v4() -> Recipe:
    """CoDA mid-training: code-centric data, stronger masking curriculum (~20B tokens)."""
    base = pretrain_coda_1p7b_tpu_v4()
    return replace(base, name="midtrain_coda_1p7b_tpu_v4",
                   data=replace(base.data, sources=("/data/midtrain",)),
                   objective=replace(base.objective, p_block=0.1, p_prefix=0.1, p_truncate=0.1,
                                     p_span=0.25, p_fim=0.25),
                   optim=replace(base.optim, lr=1e-4, warmup_steps=500),
                   train=replace(base.train, steps=19_000),
                   init_from="runs/pretrain_coda_1p7b_tpu_v4/final")


def edit_stage_cpu() -> Recipe:
    """Second stage for the default model: edit-based corruption so it revises what it sees."""
    base = default_model_cpu()
    return replace(base, name="edit_stage_cpu",
                   objective=replace(base.objective, p_edit=0.3, edit_rate=0.05),
                   optim=replace(base.optim, lr=5e-4, warmup_steps=50),
                   train=replace(base.train, steps=1000),
                   init_from="runs/default/final")


RECIPES = {f.__name__: f for f in (tiny_cpu, tiny_finetune_cpu, default_model_cpu,
                                   default_model_cpu_continue, default_model_cpu_from_ar,
                                   default_model_gpu, edit_stage_cpu, finetune_repo_cpu,
                                   finetune_repo_cpu_early_stop,
                                   finetune_repo_gpu, sft_gpu,
                                   pretrain_coda_1p7b_tpu_v4, midtrain_coda_1p7b_tpu_v4)}


def get(name: str) -> Recipe:
    try:
        return RECIPES[name]()
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}") from None


def override(recipe: Recipe, assignments: list[str]) -> Recipe:
    """Apply ``section.field=value`` strings (values parsed as JSON when they parse)."""
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        value = _parsed(raw)
        parts = key.split(".")
        if parts[0] == "model":
            _check_model_key(parts)
        recipe = _set(recipe, parts, value)
    return recipe


def _parsed(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


TOKENIZER_OWNED = {"vocab_size": "; set tokenizer.vocab_size instead",
                   "mask_token_id": "", "pad_token_id": ""}


def _check_model_key(parts: list[str]) -> None:
    """``model.*`` overrides name CodaConfig fields; the tokenizer owns the vocabulary fields,
    so a run cannot disagree with its own tokenizer."""
    name = ".".join(parts[1:])
    if name in TOKENIZER_OWNED:
        raise ValueError(f"model.{name} comes from the tokenizer{TOKENIZER_OWNED[name]}")
    known = {f.name for f in dataclasses.fields(CodaConfig)} - {"extra"} - set(TOKENIZER_OWNED)
    if name not in known:
        raise ValueError(f"unknown model field {name!r}; known: {', '.join(sorted(known))}")


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every field that differs between two ``Recipe.to_dict()``s.

    A field the old dict lacks was added by a later version of this code and is not a change
    (else every new field would stop every older run from resuming)."""
    out = []
    for key in sorted(set(old) | set(new)):
        if (not prefix and key == "notes") or key not in old:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return out


def _set(obj, parts: list[str], value):
    head, rest = parts[0], parts[1:]
    if isinstance(obj, dict):
        return {**obj, head: _set(obj[head], rest, value) if rest else value}
    if not dataclasses.is_dataclass(obj) or head not in {f.name for f in dataclasses.fields(obj)}:
        raise ValueError(f"unknown recipe field {head!r}")
    current = getattr(obj, head)
    if rest:
        return replace(obj, **{head: _set(current, rest, value)})
    if isinstance(current, tuple):  # a JSON list, or names with commas: a=tests,test
        if isinstance(value, str):
            value = [_parsed(v) for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ValueError(f"{head} takes a list, e.g. [\"a\", \"b\"] or a,b; got {value!r}")
        value = tuple(value)
    return replace(obj, **{head: value})
