"""``python -m training.ar_baseline --recipe NAME``: the autoregressive FIM baseline.

What a user would pick instead of the diffusion model: the same architecture (``CodaModel`` with
``causal=True``), the same tokenizer, the same packed data and the same number of training
tokens as the diffusion run of ``--recipe``, trained left to right on prefix-suffix-middle (PSM)
rows: ``<|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> middle <eos>``.  The middle is
drawn the way the diffusion objective draws its FIM middle (a tree-sitter span of at most
``objective.fim_max_middle`` tokens, half the time starting inside its node; else a random run),
so both models see the same infilling task.  A fraction ``--p-fim`` of rows is FIM, the rest
plain next-token prediction.

Decoding (:func:`greedy_fim`) is greedy with a per-layer K/V cache.  This module does not
evaluate infilling quality (``training.eval.evaluate`` does) and never touches the diffusion run.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from coda_model import load_model, load_tokenizer, save_model
from training.data.packing import BatchStream, PackedSplit, load_or_build
from training.run import checkpointing, recipes
from training.run.loop import build_model, build_optimizer
from training.run.metrics import MetricsLog

log = logging.getLogger(__name__)

OBJECTIVE = "autoregressive-fim"
EXTRA_TOKENS = 4   # three sentinels and the eos closing the middle


# --------------------------------------------------------------------------------------------
# PSM formatting
# --------------------------------------------------------------------------------------------

def psm_prompt(tok, prefix_ids: list[int], suffix_ids: list[int]) -> list[int]:
    """The inference prompt: the model continues with the middle and then eos."""
    return ([tok.fim_prefix_id, *prefix_ids, tok.fim_suffix_id, *suffix_ids, tok.fim_middle_id])


def pick_middle(length: int, spans: torch.Tensor | None, max_middle: int, p_inside: float,
                generator: torch.Generator) -> tuple[int, int]:
    """[start, end) of the middle inside a document of ``length`` tokens (never empty)."""
    if spans is not None and len(spans):
        ok = (spans[:, 0] >= 1) & (spans[:, 1] > spans[:, 0]) & \
            (spans[:, 1] - spans[:, 0] <= max_middle) & (spans[:, 1] <= length)
        idx = ok.nonzero().flatten()
        if len(idx):
            s = spans[idx[torch.randint(len(idx), (1,), generator=generator)].item()]
            start, end = int(s[0]), int(s[1])
            if torch.rand(1, generator=generator).item() < p_inside:
                start += int(torch.rand(1, generator=generator).item() * (end - start))
            return start, end
    n = 1 + int(torch.randint(min(max_middle, length - 2), (1,), generator=generator))
    start = 1 + int(torch.randint(max(1, length - 1 - n), (1,), generator=generator))
    return start, min(length, start + n)


def psm_rows(ids: torch.Tensor, spans: torch.Tensor | None, tok, *, p_fim: float,
             max_middle: int, p_inside: float, generator: torch.Generator,
             middle_out: torch.Tensor | None = None) -> torch.Tensor:
    """Packed rows [B, L] → training rows [B, L]: PSM with probability p_fim, else plain.

    A row keeps its first L - 4 tokens so the sentinels and the closing eos fit; a middle is cut
    at the first eos inside it (a file boundary) so eos always means "the middle ends here".
    ``middle_out`` ([B, L] bool), if given, receives the positions of each middle and its eos.
    """
    B, L = ids.shape
    n = L - EXTRA_TOKENS
    out = ids.clone()
    for b in range(B):
        if torch.rand(1, generator=generator).item() >= p_fim:
            continue
        row = ids[b, :n].tolist()
        start, end = pick_middle(n, None if spans is None else spans[b], max_middle, p_inside,
                                 generator)
        middle = row[start:end]
        if tok.eos_id in middle:
            cut = middle.index(tok.eos_id)
            middle, end = middle[:cut], start + cut
        formatted = (psm_prompt(tok, row[:start], row[start + len(middle):]) + middle
                     + [tok.eos_id])
        if middle_out is not None:
            first = len(formatted) - len(middle) - 1
            middle_out[b, first:len(formatted)] = True
        formatted += [tok.pad_id] * (L - len(formatted))
        out[b] = torch.tensor(formatted[:L], dtype=ids.dtype)
    return out


def causal_loss(model, rows: torch.Tensor, pad_id: int,
                scored: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token cross-entropy over every position (padding targets ignored), or only where
    ``scored`` [B, L] marks the target token."""
    logits = model.lm_head(model.hidden_states(rows, causal=True))   # [B, L, V]
    ignore = rows[:, 1:] == pad_id
    if scored is not None:
        ignore |= ~scored[:, 1:]
    targets = rows[:, 1:].masked_fill(ignore, -100)
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(),
                           ignore_index=-100)


# --------------------------------------------------------------------------------------------
# Greedy decoding
# --------------------------------------------------------------------------------------------

@torch.inference_mode()
def greedy(model, prompt: list[int], max_new: int, stop_ids, *, use_cache: bool = True
           ) -> list[int]:
    """Greedy continuation of ``prompt`` (stop tokens excluded).  Without the cache every step
    recomputes the whole sequence (the reference the cached path must equal)."""
    device = next(model.parameters()).device
    seq = list(prompt)
    stops = set(stop_ids)
    out: list[int] = []
    cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    for _ in range(max_new):
        if use_cache:
            start = 0 if cache is None else len(seq) - 1
            fresh = seq[start:]
            layers: list[tuple[torch.Tensor, torch.Tensor]] = []
            hidden = model.hidden_states(
                torch.tensor([fresh], device=device), causal=True,
                positions=torch.arange(start, len(seq), device=device),
                kv_context=cache, out_kv=layers)
            cache = layers if cache is None else [
                (torch.cat((k0, k1), 2), torch.cat((v0, v1), 2))
                for (k0, v0), (k1, v1) in zip(cache, layers, strict=True)]
        else:
            hidden = model.hidden_states(torch.tensor([seq], device=device), causal=True)
        nxt = int(model.lm_head(hidden[0, -1]).argmax())
        if nxt in stops:
            break
        out.append(nxt)
        seq.append(nxt)
    return out


def greedy_fim(model, tok, prefix_ids: list[int], suffix_ids: list[int], max_new: int,
               *, use_cache: bool = True) -> list[int]:
    """The middle the AR baseline writes between prefix and suffix (greedy, PSM)."""
    stops = {tok.eos_id, tok.pad_id, tok.fim_prefix_id, tok.fim_suffix_id, tok.fim_middle_id}
    return greedy(model, psm_prompt(tok, prefix_ids, suffix_ids), max_new, stops,
                  use_cache=use_cache)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def _generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step + 17)


def train(recipe: recipes.Recipe, out: Path, tokenizer_dir: Path, *, p_fim: float,
          data_dir: Path | None = None, stop_after_step: int | None = None) -> dict:
    t = recipe.train
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(tokenizer_dir)
    if None in (tok.fim_prefix_id, tok.fim_suffix_id, tok.fim_middle_id):
        raise SystemExit(f"{tokenizer_dir}: the tokenizer has no FIM tokens")
    train_split, eval_split = load_or_build(recipe.data, tok, data_dir or out / "data")
    model = build_model(recipe, tok)
    model.config.extra["objective"] = OBJECTIVE   # extra is a plain dict: recorded in config.json
    optimizer, scheduler = build_optimizer(model, recipe)
    stream = BatchStream(len(train_split), t.batch_size, t.seed)
    ckpt_dir = out / "checkpoints"
    step = tokens = 0
    ckpt = checkpointing.latest_checkpoint(ckpt_dir)
    if ckpt is not None:
        state = checkpointing.load_state(ckpt)
        model.load_state_dict(load_model(ckpt, autoregressive=True).state_dict(), strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stream.load_state_dict(state["stream"])
        torch.set_rng_state(state["torch_rng"])
        step, tokens = state["step"], state["tokens"]
        log.info("resumed from %s at step %d", ckpt, step)
    (out / "recipe.json").write_text(json.dumps({**recipe.to_dict(), "objective": OBJECTIVE,
                                                 "p_fim": p_fim}, indent=1, default=str) + "\n")
    metrics = MetricsLog(out / "metrics.jsonl", step if ckpt is not None else None)
    fim = dict(p_fim=p_fim, max_middle=recipe.objective.fim_max_middle,
               p_inside=recipe.objective.p_span_from_inside)

    def state_dict() -> dict:
        return {"step": step, "tokens": tokens, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "stream": stream.state_dict(),
                "torch_rng": torch.get_rng_state(), "recipe": json.dumps(recipe.to_dict(),
                                                                          default=str)}

    end = t.steps if stop_after_step is None else min(t.steps, stop_after_step)
    stopping: list[int] = []   # SIGTERM: checkpoint after the current step, then exit
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum)) \
        if threading.current_thread() is threading.main_thread() else None
    t0, tokens0, last_ckpt = time.monotonic(), tokens, time.monotonic()
    row: dict = {}
    model.train()
    while step < end and not stopping:
        rows = stream.next()
        spans = train_split.spans_for(rows) if train_split.spans.shape[0] else None
        batch = psm_rows(train_split.ids[rows].long(), spans, tok,
                         generator=_generator(t.seed, step), **fim)
        loss = causal_loss(model, batch, tok.pad_id)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        step += 1
        tokens += batch.numel()
        if step % t.log_every == 0 or step == end:
            row = {"kind": "train", "step": step, "tokens": tokens, "ce": loss.item(),
                   "grad_norm": float(grad_norm), "lr": lr,
                   "tokens_per_s": (tokens - tokens0) / max(time.monotonic() - t0, 1e-9),
                   "time": time.time()}
            metrics.write(row)
            log.info("step %d ce %.4f (%.0f tok/s)", step, row["ce"], row["tokens_per_s"])
        if t.eval_every and (step % t.eval_every == 0 or step == t.steps):
            metrics.write({"kind": "eval", "step": step, "tokens": tokens,
                           **evaluate_loss(model, eval_split, tok, t, fim)})
        if time.monotonic() - last_ckpt >= t.checkpoint_every_seconds and step < end:
            checkpointing.save_checkpoint(ckpt_dir, step, model, tokenizer_dir, state_dict(),
                                          keep=t.keep_checkpoints)
            last_ckpt = time.monotonic()
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
    if stopping:
        log.info("SIGTERM: checkpointing step %d and exiting", step)
    if step > 0:
        checkpointing.save_checkpoint(ckpt_dir, step, model, tokenizer_dir, state_dict(),
                                      keep=t.keep_checkpoints)
    if step >= t.steps:
        save_model(model, out / "final", tokenizer_dir=tokenizer_dir)
        log.info("final model in %s", out / "final")
    return row


@torch.no_grad()
def evaluate_loss(model, split: PackedSplit, tok, t, fim: dict) -> dict:
    """Held-out next-token CE on all-PSM rows (fixed draws), on their middles (+ eos) only —
    the number to hold against the diffusion run's ``fim_masked_ce`` — and on plain rows."""
    if split is None or len(split) == 0:
        return {}
    model.eval()
    sums = {"eval_ce_fim": 0.0, "eval_ce_middle": 0.0, "eval_ce_plain": 0.0}
    n = min(len(split), t.batch_size)
    for i in range(t.eval_batches):
        rows = [(i * n + k) % len(split) for k in range(n)]
        ids = split.ids[rows].long()
        spans = split.spans_for(rows) if split.spans.shape[0] else None
        middle = torch.zeros(ids.shape, dtype=torch.bool)
        psm = psm_rows(ids, spans, tok, generator=_generator(1_234_567, i),
                       middle_out=middle, **{**fim, "p_fim": 1.0})
        sums["eval_ce_fim"] += float(causal_loss(model, psm, tok.pad_id))
        sums["eval_ce_middle"] += float(causal_loss(model, psm, tok.pad_id, middle))
        sums["eval_ce_plain"] += float(causal_loss(model, ids, tok.pad_id))
    model.train()
    return {k: v / t.eval_batches for k, v in sums.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.ar_baseline",
        description="autoregressive PSM baseline, same budget",
        epilog="hardware: CPU only (one process, train.threads); GPUs and TPUs train diffusion "
               "models through training.finetune (accelerate launch) and training.run.pretrain "
               "(torch_xla)")
    parser.add_argument("--recipe", default="default_model_cpu",
                        help="the diffusion recipe whose shape, data and token budget to match")
    parser.add_argument("--tokenizer", default="runs/default/tokenizer",
                        help="the diffusion run's tokenizer folder (must have FIM tokens)")
    parser.add_argument("--out", default="runs/ar_baseline")
    parser.add_argument("--data-dir", help="packed data folder (default OUT/data; rebuilt "
                                           "if it was built from another config)")
    parser.add_argument("--p-fim", type=float, default=0.9)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--stop-after-step", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    recipe = recipes.override(recipes.get(args.recipe), args.set)
    recipe = replace(recipe, name=f"{recipe.name}_ar")
    row = train(recipe, Path(args.out), Path(args.tokenizer), p_fim=args.p_fim,
                data_dir=Path(args.data_dir) if args.data_dir else None,
                stop_after_step=args.stop_after_step)
    if row:
        print(f"step {row['step']}: ce {row['ce']:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
