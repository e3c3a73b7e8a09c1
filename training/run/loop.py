"""The one training loop behind ``training.run.pretrain`` and ``training.finetune``.

It builds (or reuses) the tokenizer, the packed data and the model, then runs optimizer steps of
the CoDA objective with a *backend* that owns everything device-specific: plain torch on CPU or
CUDA (``training.run.torch_backend``), torch_xla SPMD on TPU (``training.run.xla_backend``,
imported only there) or accelerate (``training.finetune``).  Every step's corruption is drawn
from a generator seeded by (seed, step, micro-batch), so with the optimizer, scheduler and data
position saved in the checkpoint a resumed run repeats the uninterrupted one exactly.  On CUDA
the plain backend trains in bf16 autocast with fused AdamW and corrupts whole batches on the
device (``training.objective.batched``); on CPU the defaults stay fp32 and the per-row reference
corruption, whose output the golden loss curve pins (``TrainConfig.precision``/``corruption``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from coda_model import CheckpointError, CodaConfig, CodaModel, load_model, load_tokenizer
from training.data.packing import (
    BatchStream,
    DataError,
    PackedSplit,
    load_or_build,
    load_packed,
    load_val,
    read_corpus,
)
from training.data.tokenizer_train import train_tokenizer
from training.errors import UsageError
from training.objective.batched import corrupt_batched, dense_spans
from training.objective.masks import (
    ObjectiveConfig,
    corrupt,
    diffusion_loss,
    diffusion_loss_sparse,
    response_maskable,
)
from training.run import blend, checkpointing, early_stop, lora, recipes
from training.run.metrics import MetricsLog, plot_losses
from training.run.progress import progress as progress_bar
from training.run.recipes import Recipe
from training.run.state_io import StateError
from training.run.torch_backend import TorchBackend

log = logging.getLogger(__name__)

EVAL_SEED = 1_234_567


class RecipeChanged(UsageError):
    """Resuming a run under a recipe other than the one its checkpoint was trained with."""


def step_generator(seed: int, step: int, micro: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + micro)


def init_weights(model: CodaModel, std: float) -> None:
    """Normal(0, std) everywhere; residual outputs scaled by 1/sqrt(2·layers) (GPT-2 style)."""
    n_layers = model.config.num_hidden_layers
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue   # RMSNorm weights stay at one
        scale = 1 / math.sqrt(2 * n_layers) if name.endswith(("o_proj.weight",
                                                               "down_proj.weight")) else 1.0
        torch.nn.init.normal_(p, mean=0.0, std=std * scale)


def build_optimizer(model, recipe: Recipe, *, fused: bool = False):
    """AdamW (``fused``: one CUDA kernel for all parameters) or Adafactor, with its schedule."""
    o = recipe.optim
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": o.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if o.name == "adafactor":
        optimizer = torch.optim.Adafactor(groups, lr=o.lr)
    else:
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=1e-8,
                                      **({"fused": True} if fused else {}))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(recipe))


def lr_factor(recipe: Recipe):
    """The schedule as a function of the step: linear warm-up, then cosine/linear/constant."""
    o = recipe.optim
    total, warm = recipe.train.steps, o.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if o.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if o.schedule == "cosine" \
            else 1 - progress
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * shape

    return factor


def prepare_tokenizer(recipe: Recipe, out: Path):
    """The tokenizer folder of a run: the recipe's, the base model's, or one trained here."""
    if recipe.tokenizer.path:
        return Path(recipe.tokenizer.path)
    if recipe.init_from:
        return Path(recipe.init_from)
    folder = out / "tokenizer"
    if not (folder / "tokenizer.json").is_file():
        docs = read_corpus(recipe.data)
        log.info("training a %d-token BPE on %d train files", recipe.tokenizer.vocab_size,
                 sum(not d.is_eval for d in docs))
        train_tokenizer((d.text for d in docs if not d.is_eval), folder,
                        recipe.tokenizer.vocab_size)
    return folder


def passes_for(t, rows: int) -> float:
    """Passes over a train split of ``rows`` rows: ``t.passes``, or with ``t.passes_rows`` as
    many as make about that many rows, clamped to [passes_min, passes_max]; 0: by steps."""
    if t.passes_rows <= 0:
        return t.passes
    return min(t.passes_max, max(t.passes_min, t.passes_rows / max(1, rows)))


def build_model(recipe: Recipe, tok) -> CodaModel:
    if recipe.init_from:
        model = load_model(recipe.init_from, autoregressive=True)  # AR or diffusion: retrained
        model.config.extra.pop("objective", None)   # an AR start: this run makes a diffusion model
        if model.config.vocab_size < tok.vocab_size:
            raise ValueError(f"{recipe.init_from} has {model.config.vocab_size} embedding rows, "
                             f"its tokenizer {tok.vocab_size}")
        return model.train()
    config = CodaConfig(vocab_size=tok.vocab_size, mask_token_id=tok.mask_id,
                        pad_token_id=tok.pad_id, **recipe.model)
    model = CodaModel(config)
    init_weights(model, recipe.train.init_std)
    return model.train()


class Trainer:
    """One run in ``out_dir``; call :meth:`run`.  Safe to construct again to resume."""

    def __init__(self, recipe: Recipe, out_dir: str | Path, *, backend=None,
                 train_split: PackedSplit | None = None, eval_split: PackedSplit | None = None,
                 rebuild_data: bool = False) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if recipe.train.threads:
            torch.set_num_threads(recipe.train.threads)
        torch.manual_seed(recipe.train.seed)
        self.backend = backend or TorchBackend(recipe.train.device)
        # recipe.json records the device actually used ("auto" resolved, accelerate's choice).
        device = getattr(getattr(self.backend, "device", None), "type", recipe.train.device)
        self.recipe = recipe = replace(recipe, train=replace(recipe.train, device=device))
        log.info("training on %s with %d CPU threads", device, torch.get_num_threads())
        if self.backend.is_main:   # one process trains the tokenizer and packs the data
            tok_dir = prepare_tokenizer(recipe, self.out)
            if train_split is None:
                load_or_build(recipe.data, load_tokenizer(tok_dir), self.out / "data",
                              rebuild=rebuild_data)
        self.backend.wait()
        self.tokenizer_dir = prepare_tokenizer(recipe, self.out)
        self.tok = load_tokenizer(self.tokenizer_dir)
        packed_here = train_split is None
        if packed_here:   # packed above by the main process
            train_split, eval_split = load_packed(self.out / "data")
        self.train_split, self.eval_split = train_split, eval_split
        self.val_split = load_val(self.out / "data") if packed_here else None
        passes = passes_for(recipe.train, len(train_split))
        if passes > 0:   # steps by the data's size, train.steps the cap
            world = self.backend.world_size
            steps = max(1, min(recipe.train.steps, math.ceil(
                passes * len(train_split) / (recipe.train.batch_size * world))))
            log.info("%.3g passes over %d rows: %d steps (cap %d)", passes,
                     len(train_split), steps, recipe.train.steps)
            self.recipe = recipe = replace(recipe, train=replace(recipe.train, steps=steps))
        model = build_model(recipe, self.tok)
        self.config = model.config
        use_lora = lora.wanted(recipe.lora, sum(p.numel() for p in model.parameters()), device)
        self.recipe = recipe = replace(recipe, lora=replace(recipe.lora,
                                                            enabled="on" if use_lora else "off"))
        if use_lora:
            if recipe.lora.lr > 0:
                self.recipe = recipe = replace(recipe, optim=replace(recipe.optim,
                                                                     lr=recipe.lora.lr))
            model = lora.wrap(model, recipe.lora)
            trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
            log.info("LoRA rank %d on %s: %.2fM trained parameters", recipe.lora.rank,
                     ", ".join(recipe.lora.targets), trained / 1e6)
        self._resolve_speed(recipe.train)
        optimizer, scheduler = build_optimizer(model, recipe,
                                               fused=self.plain and self.device.type == "cuda")
        self.model, self.optimizer, self.scheduler = self.backend.prepare(model, optimizer,
                                                                          scheduler)
        self._hidden = self.backend.unwrap(self.model).hidden_states
        if self.plain and recipe.train.compile:
            self._hidden = torch.compile(self._hidden)
        self._resident: dict[int, tuple] = {}
        world = self.backend.world_size
        if len(train_split) < recipe.train.batch_size * world:
            raise DataError(f"the train split has {len(train_split)} rows of "
                            f"{train_split.ids.shape[1]} tokens, fewer than a batch of "
                            f"{recipe.train.batch_size * world}: add files, or lower "
                            f"train.batch_size or data.seq_len")
        self.stream = BatchStream(len(train_split), recipe.train.batch_size * world,
                                  recipe.train.seed)
        self.step = 0
        self.tokens = 0
        self.ckpt_dir = self.out / "checkpoints"
        self.final_dtype: str | None = None   # final/'s weights; None: as trained (fp32)
        self.stopped_early = False   # by the validation scores; a re-run does not train on
        self.best_step: int | None = None
        self._last_plot = time.monotonic()

    @property
    def finished(self) -> bool:
        """Trained to the end, or stopped early by the validation scores."""
        return self.step >= self.recipe.train.steps or self.stopped_early

    def _resolve_speed(self, t) -> None:
        """Precision and where corruption runs; only the plain torch backend changes either
        (accelerate has its own mixed precision; XLA wants the static-shape reference)."""
        self.plain = isinstance(self.backend, TorchBackend)
        self.device = self.backend.device if self.plain else torch.device("cpu")
        cuda = self.device.type == "cuda"
        self.bf16 = self.plain and (t.precision == "bf16" or (t.precision == "auto" and cuda))
        self.on_device = self.plain and (t.corruption == "device"
                                         or (t.corruption == "auto" and cuda))

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def set_total_steps(self, steps: int) -> None:
        """Re-plan the run's length (the schedule's horizon) during the warm-up, which does not
        depend on it: a time-budgeted run measures its step time first (``training.gpu_run``)."""
        if self.step > 0 and self.step >= self.recipe.optim.warmup_steps:
            raise ValueError(f"step {self.step} is past the warm-up: the schedule has begun")
        self.recipe = replace(self.recipe, train=replace(self.recipe.train, steps=steps))
        self.scheduler.lr_lambdas = [lr_factor(self.recipe)] * len(self.optimizer.param_groups)

    def use_train_split(self, split: PackedSplit) -> None:
        """Train on ``split`` from the next step: a budgeted run starts on the corpus built so
        far and takes the larger one as it grows (``training.gpu_run``)."""
        world = self.backend.world_size
        if len(split) < self.recipe.train.batch_size * world:
            raise DataError(f"the new train split has {len(split)} rows, fewer than a batch")
        self._resident.pop(id(self.train_split), None)   # its device copy is not needed again
        self.train_split = split
        self.stream = BatchStream(len(split), self.recipe.train.batch_size * world,
                                  self.recipe.train.seed + self.step)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"step": self.step, "tokens": self.tokens,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "stream": self.stream.state_dict(),
                "stopped_early": self.stopped_early,
                "torch_rng": torch.get_rng_state(),
                "recipe": json.dumps(self.recipe.to_dict(), default=str)}

    def resume(self, force: bool = False) -> bool:
        """Restore the newest readable checkpoint; an unreadable one is moved aside (kept, as
        ``corrupt-step-N``) with a warning and the one before it is used."""
        found = checkpointing.candidates(self.ckpt_dir)
        for ckpt in found:
            try:
                state = checkpointing.load_state(ckpt)
                weights = load_model(ckpt).state_dict()
                break
            except (StateError, CheckpointError) as exc:
                log.warning("checkpoint %s is unreadable (%s): trying the one before it",
                            ckpt.name, exc)
                if self.backend.is_main:
                    log.warning("moved it to %s", checkpointing.set_aside(ckpt).name)
        else:
            if found:
                raise StateError(f"no readable checkpoint in {self.ckpt_dir}: use --fresh to "
                                 f"start over")
            return False
        self._check_recipe(json.loads(state["recipe"]), force)
        target = self.backend.unwrap(self.model)
        if lora.is_lora(target):   # the frozen base is init_from's; the adapters are the state
            lora.load_adapters(target, ckpt)
        else:
            target.load_state_dict({k: v for k, v in weights.items()
                                    if k in target.state_dict()}, strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.stream.load_state_dict(state["stream"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.tokens = state["step"], state["tokens"]
        self.stopped_early = bool(state.get("stopped_early", False))
        log.info("resumed from %s at step %d (%d tokens)", ckpt, self.step, self.tokens)
        return True

    def _check_recipe(self, saved: dict, force: bool) -> None:
        current = json.loads(json.dumps(self.recipe.to_dict(), default=str))
        changed = recipes.differences(saved, current)
        if changed and not force:
            raise RecipeChanged(f"{self.out} was trained with another recipe ({'; '.join(changed)})"
                                f": re-run with the same settings, add --force to continue with "
                                f"the new ones, or --fresh to start over")
        if changed:
            log.warning("--force: continuing %s with a changed recipe: %s", self.out,
                        "; ".join(changed))

    def plot(self, force: bool = False) -> None:
        """Refresh loss.png at most once a minute (matplotlib is slow to start)."""
        if not force and time.monotonic() - self._last_plot < 60:
            return
        with contextlib.suppress(Exception):   # a plot must never stop training
            plot_losses(self.out / "metrics.jsonl", self.out / "loss.png", self.recipe.name)
        self._last_plot = time.monotonic()

    def checkpoint(self, final: bool = False) -> Path | None:
        path = None
        if self.backend.is_main:
            trained = self.backend.unwrap(self.model)
            extra = (lambda folder: lora.save_adapters(trained, folder)) \
                if lora.is_lora(trained) else None
            path = checkpointing.save_checkpoint(
                self.ckpt_dir, self.step, lora.merged(trained), self.tokenizer_dir,
                self.state_dict(), keep=self.recipe.train.keep_checkpoints, extra=extra)
            self.plot(force=final)
        self.backend.wait()
        return path

    # ---------------------------------------------------------------- steps
    def _resident_split(self, split: PackedSplit) -> tuple:
        """The split's rows, spans and prompt lengths on the device, moved there once."""
        key = id(split)
        if key not in self._resident:
            spans = dense_spans(split.span_ptr, split.spans, len(split),
                                self.recipe.train.max_spans, self.recipe.train.seed) \
                if split.spans.shape[0] else None
            put = self.backend.to_device
            self._resident[key] = (
                put(split.ids), None if spans is None else put(spans),
                None if split.prompt_lengths is None else put(split.prompt_lengths.long()))
        return self._resident[key]

    def _device_batch(self, split: PackedSplit, rows: list[int], objective: ObjectiveConfig,
                      generator: torch.Generator):
        """:meth:`_batch` with the batched corruption on the device (seeded from ``generator``,
        so it is still a function of (seed, step, micro-batch))."""
        ids, spans, prompts = self._resident_split(split)
        index = torch.tensor(rows, device=ids.device)
        maskable = None
        if prompts is not None:
            pos = torch.arange(ids.shape[1], device=ids.device)[None, :]
            maskable = pos >= prompts[index].clamp(min=1)[:, None]
        seed = int(torch.randint(2**62, (1,), generator=generator))
        g = torch.Generator(device=ids.device).manual_seed(seed)
        c = corrupt_batched(ids[index], objective, mask_id=self.tok.mask_id,
                            pad_id=self.tok.pad_id, vocab_size=self.config.vocab_size,
                            generator=g, spans=None if spans is None else spans[index],
                            maskable=maskable)
        return c.input_ids, c.targets, c.weights

    def _batch(self, split: PackedSplit, rows: list[int], objective: ObjectiveConfig,
               generator: torch.Generator):
        if self.on_device:
            return self._device_batch(split, rows, objective, generator)
        ids = split.ids[rows].long()
        spans = split.spans_for(rows) if split.spans.shape[0] else None
        maskable = None
        if split.prompt_lengths is not None:
            maskable = response_maskable(split.prompt_lengths[rows], ids.shape[1])
        c = corrupt(ids, objective, mask_id=self.tok.mask_id, pad_id=self.tok.pad_id,
                    vocab_size=self.config.vocab_size, generator=generator, spans=spans,
                    maskable=maskable)
        put = self.backend.to_device
        return put(c.input_ids), put(c.targets), put(c.weights)

    def train_step(self) -> dict:
        t = self.recipe.train
        self.model.train()
        totals = {"loss": 0.0, "masked_ce": 0.0}
        world, rank = self.backend.world_size, self.backend.rank
        for micro in range(t.grad_accum):
            rows = self.stream.next()[rank::world]
            g = step_generator(t.seed, self.step, micro * world + rank)
            input_ids, targets, weights = self._batch(self.train_split, rows,
                                                      self.recipe.objective, g)
            with self.backend.no_sync(self.model, sync=micro == t.grad_accum - 1):
                with self.autocast():
                    if self.backend.sparse_head:
                        hidden = self._hidden(input_ids)
                        loss, m = diffusion_loss_sparse(hidden, self.model.lm_head, targets,
                                                        weights)
                    else:
                        loss, m = diffusion_loss(self.model(input_ids), targets, weights)
                self.backend.backward(loss / t.grad_accum)
            totals["loss"] = totals["loss"] + loss.detach() / t.grad_accum
            totals["masked_ce"] = totals["masked_ce"] + m["masked_ce"] / t.grad_accum
        grad_norm = self.backend.clip_grad_norm(self.model, self.recipe.optim.grad_clip)
        self.backend.optimizer_step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.backend.step_end()
        self.step += 1
        self.tokens += t.batch_size * t.grad_accum * world * self.train_split.ids.shape[1]
        return {"loss": totals["loss"], "masked_ce": totals["masked_ce"],
                "grad_norm": grad_norm, "lr": lr}

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Loss on held-out files with fixed corruption draws; plus FIM-only masked CE."""
        if self.eval_split is None or len(self.eval_split) == 0:
            return {}
        self.model.eval()
        t = self.recipe.train
        fim = replace(self.recipe.objective, p_block=0.0, p_span=0.0, p_fim=1.0, p_edit=0.0)
        sums = {"loss": 0.0, "masked_ce": 0.0, "fim_masked_ce": 0.0}
        n = min(len(self.eval_split), t.batch_size)
        for i in range(t.eval_batches):
            rows = [(i * n + k) % len(self.eval_split) for k in range(n)]
            for key, obj in (("masked_ce", self.recipe.objective), ("fim_masked_ce", fim)):
                g = torch.Generator().manual_seed(EVAL_SEED + 2 * i + (key != "masked_ce"))
                input_ids, targets, weights = self._batch(self.eval_split, rows, obj, g)
                with self.autocast():
                    loss, m = diffusion_loss(self.model(input_ids), targets, weights)
                sums[key] += float(m["masked_ce"])
                if key == "masked_ce":
                    sums["loss"] += float(loss)
        self.model.train()
        return {k: v / t.eval_batches for k, v in sums.items()}

    @torch.no_grad()
    def validate(self) -> float:
        """Middle cross-entropy (FIM masks, fixed draws) on the validation split: what early
        stopping compares; never the held-out files the verdict scores."""
        split, t = self.val_split, self.recipe.train
        fim = replace(self.recipe.objective, p_block=0.0, p_span=0.0, p_fim=1.0, p_edit=0.0)
        self.model.eval()
        total, weight = 0.0, 0
        rows = list(range(min(len(split), 4 * t.batch_size)))
        for draw in range(t.eval_batches):
            for at in range(0, len(rows), t.batch_size):
                chunk = rows[at:at + t.batch_size]
                g = torch.Generator().manual_seed(EVAL_SEED + 7919 * draw + at)
                input_ids, targets, weights = self._batch(split, chunk, fim, g)
                with self.autocast():
                    _, m = diffusion_loss(self.model(input_ids), targets, weights)
                total += float(m["masked_ce"]) * len(chunk)
                weight += len(chunk)
        self.model.train()
        return total / max(1, weight)

    def _early_stop(self) -> early_stop.EarlyStop | None:
        t = self.recipe.train
        if not t.early_stop_every:
            return None
        if self.val_split is None:
            log.warning("train.early_stop_every is set but there are no validation rows "
                        "(data.val_token_cap): training to the end")
            return None
        return early_stop.EarlyStop(t.early_stop_patience)

    def _score_for_stop(self, stopper, step: int, metrics) -> bool:
        ce = self.validate()
        target = self.backend.unwrap(self.model)
        stop = stopper.see(step, ce, lambda: early_stop.snapshot(target))
        if self.backend.is_main:
            metrics.write({"kind": "val", "step": step, "middle_ce": ce, "best": stopper.best,
                           "best_step": stopper.best_step})
            log.info("step %d: validation middle CE %.4f (best %.4f at step %d)%s", step, ce,
                     stopper.best, stopper.best_step, "; stopping" if stop else "")
        return stop

    def blend_with_base(self, trained) -> None:
        """final/ = train.blend of the trained weights + the rest of the base's (in place:
        training is over); the checkpoints keep the trained weights, so a re-run blends the
        same way."""
        share = self.recipe.train.blend
        if share >= 1.0:
            return
        if not self.recipe.init_from:
            raise UsageError(f"train.blend={share} needs a base to blend with (init_from)")
        blend.with_base(trained, load_model(self.recipe.init_from, dtype=torch.float32,
                                            autoregressive=True), share)
        log.info("final/: %.2f of the fine-tuned weights + %.2f of the base's", share,
                 1.0 - share)

    # ---------------------------------------------------------------- the run
    def run(self, *, resume: bool = True, stop_after_step: int | None = None,
            force: bool = False, deadline: float | None = None, on_checkpoint=None,
            on_step=None) -> dict:
        """Train to ``train.steps`` (or ``stop_after_step``), or until ``time.monotonic()``
        passes ``deadline``; either way the last step is checkpointed.  ``on_checkpoint(self)``
        runs after each periodic checkpoint (a budgeted run exports its weights there);
        ``on_step(self)`` after every step (it may re-plan the length in the warm-up)."""
        t = self.recipe.train
        resumed = self.resume(force) if resume else False
        if self.backend.is_main:
            (self.out / "recipe.json").write_text(json.dumps(self.recipe.to_dict(), indent=1,
                                                             default=str) + "\n")
        metrics = MetricsLog(self.out / "metrics.jsonl", self.step if resumed else None)
        if self.backend.is_main and not resumed:
            log.info("model %s: %.2fM parameters", self.recipe.name,
                     sum(p.numel() for p in self.backend.unwrap(self.model).parameters()) / 1e6)
        last_ckpt = time.monotonic()
        t0, tokens0 = time.monotonic(), self.tokens
        end = t.steps if stop_after_step is None else min(t.steps, stop_after_step)
        progress = progress_bar(end, "training", unit="step", initial=self.step,
                                enabled=self.backend.is_main)
        result: dict = {}
        stopper = None if self.stopped_early else self._early_stop()
        if stopper is not None:
            self._score_for_stop(stopper, self.step, metrics)
        while self.step < end and not self.stopped_early and \
                (deadline is None or time.monotonic() < deadline):
            out = self.train_step()
            step, tokens = self.step, self.tokens
            if on_step is not None:
                on_step(self)
                t = self.recipe.train
                end = t.steps if stop_after_step is None else min(t.steps, stop_after_step)
                progress.total = end
            if step % t.log_every == 0 or step == end:
                elapsed = time.monotonic() - t0

                def record(out=out, step=step, tokens=tokens, elapsed=elapsed):
                    row = {"kind": "train", "step": step, "tokens": tokens,
                           "loss": float(out["loss"]), "masked_ce": float(out["masked_ce"]),
                           "grad_norm": float(out["grad_norm"]), "lr": out["lr"],
                           "tokens_per_s": (tokens - tokens0) / max(elapsed, 1e-9),
                           "time": time.time()}
                    if self.backend.is_main:
                        metrics.write(row)
                        progress.set_postfix(loss=f"{row['masked_ce']:.3f}",
                                             tok_s=f"{row['tokens_per_s']:.0f}")
                    result.update(row)

                self.backend.on_host(record)
            if t.eval_every and (step % t.eval_every == 0 or step == t.steps):
                ev = self.evaluate()
                if ev and self.backend.is_main:
                    metrics.write({"kind": "eval", "step": step, "tokens": tokens, **ev})
                    log.info("step %d eval %s", step, {k: round(v, 4) for k, v in ev.items()})
            progress.update(1)
            if stopper is not None and (step % t.early_stop_every == 0 or step == end) \
                    and self._score_for_stop(stopper, step, metrics):
                self.stopped_early = True
                break
            due_steps = t.checkpoint_every_steps and step % t.checkpoint_every_steps == 0
            due_time = t.checkpoint_every_seconds and \
                time.monotonic() - last_ckpt >= t.checkpoint_every_seconds
            if (due_steps or due_time) and step < end:
                self.checkpoint()
                if on_checkpoint is not None:
                    on_checkpoint(self)
                last_ckpt = time.monotonic()
        progress.close()
        if stopper is not None and stopper.best_step != self.step and stopper.state is not None:
            early_stop.restore(self.backend.unwrap(self.model), stopper.state)
            log.info("early stopping: the weights of step %d (validation middle CE %.4f) are "
                     "the result", stopper.best_step, stopper.best)
        if stopper is not None:
            self.best_step = stopper.best_step
        if self.step > 0 and (checkpointing.latest_checkpoint(self.ckpt_dir) is None or
                              checkpointing.latest_checkpoint(self.ckpt_dir).name
                              != f"step-{self.step:06d}"):
            self.checkpoint(final=True)
        elif self.backend.is_main:
            self.plot(force=True)
        if self.finished and self.backend.is_main:
            from coda_model import save_model
            # LoRA: the adapters merged into the base, in place (training is over)
            trained = lora.merged(self.backend.unwrap(self.model), inplace=True)
            self.blend_with_base(trained)
            save_model(trained, self.out / "final",
                       tokenizer_dir=self.tokenizer_dir, dtype=self.final_dtype)
            log.info("final model in %s", self.out / "final")
        return result


def describe(recipe: Recipe) -> str:
    return json.dumps(asdict(recipe), indent=1, default=str)
