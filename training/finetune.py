"""`python -m training.finetune --base DIR --data PATH... --recipe NAME`: accelerate fine-tuning.

Two kinds of data, told apart by the paths given:

* folders of source files (a repository): continued span-masked diffusion training, the same
  objective as pre-training, for a domain fine-tune on your code;
* ``.jsonl`` files of ``{"prompt": ..., "response": ...}`` records: SFT, where only the response
  and the padding after it can be masked, so the model learns to answer and to pad.

Runs on CPU for tiny checks and on one or more GPUs (``accelerate launch -m training.finetune
...``).  Checkpoints, metrics and resume are the pre-training loop's (``training.loop``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import torch

from coda_model import load_tokenizer

from . import recipes
from .data import PackedSplit
from .loop import Trainer

log = logging.getLogger(__name__)


class AccelerateBackend:
    """The loop's backend on top of 🤗 accelerate (DDP / FSDP / mixed precision per its config)."""

    sparse_head = False   # the wrapped model is called as a whole so DDP hooks run

    def __init__(self, mixed_precision: str | None = None, cpu: bool = False) -> None:
        from accelerate import Accelerator
        if mixed_precision is None:
            mixed_precision = "bf16" if torch.cuda.is_available() and not cpu else "no"
        self.accelerator = Accelerator(mixed_precision=mixed_precision, cpu=cpu)
        self.device = self.accelerator.device
        self.is_main = self.accelerator.is_main_process
        self.world_size = self.accelerator.num_processes
        self.rank = self.accelerator.process_index

    def prepare(self, model, optimizer, scheduler):
        model, optimizer = self.accelerator.prepare(model, optimizer)
        return model, optimizer, scheduler   # the scheduler steps once per optimizer step

    def to_device(self, t):
        return t.to(self.device)

    def backward(self, loss):
        self.accelerator.backward(loss)

    def clip_grad_norm(self, model, max_norm):
        return self.accelerator.clip_grad_norm_(model.parameters(), max_norm)

    def optimizer_step(self, optimizer):
        optimizer.step()

    def step_end(self):
        pass

    def on_host(self, fn, *args):
        fn(*args)

    def unwrap(self, model):
        return self.accelerator.unwrap_model(model)

    def no_sync(self, model, sync: bool):
        return contextlib.nullcontext() if sync else self.accelerator.no_sync(model)

    def wait(self):
        self.accelerator.wait_for_everyone()


def read_pairs(paths: list[Path]) -> list[tuple[str, str]]:
    pairs = []
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record.get("prompt"), str) or not isinstance(
                    record.get("response"), str):
                raise ValueError(f"{path}:{n}: expected string fields 'prompt' and 'response'")
            pairs.append((record["prompt"], record["response"]))
    return pairs


def pack_pairs(pairs: list[tuple[str, str]], tok, seq_len: int) -> PackedSplit:
    """One row per pair: prompt | response eos | pad...; rows too long are cut at seq_len."""
    rows, prompt_lengths = [], []
    for prompt, response in pairs:
        p = tok.encode(prompt)[: seq_len - 2]
        ids = (p + tok.encode(response) + [tok.eos_id])[:seq_len]
        rows.append(ids + [tok.pad_id] * (seq_len - len(ids)))
        prompt_lengths.append(max(1, len(p)))
    n = len(rows)
    return PackedSplit(torch.tensor(rows, dtype=torch.int32).view(n, seq_len),
                       torch.zeros(n + 1, dtype=torch.int64), torch.zeros(0, 2, dtype=torch.int32),
                       torch.tensor(prompt_lengths, dtype=torch.int64))


def sft_splits(paths: list[Path], tok, seq_len: int, eval_fraction: float):
    pairs = read_pairs(paths)
    if not pairs:
        raise ValueError("no (prompt, response) records in the given files")

    def held_out(pair):
        digest = hashlib.sha256(pair[0].encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction

    train = [p for p in pairs if not held_out(p)]
    evals = [p for p in pairs if held_out(p)]
    return pack_pairs(train, tok, seq_len), pack_pairs(evals, tok, seq_len) if evals else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.finetune",
                                     description="fine-tune a CoDA checkpoint")
    parser.add_argument("--base", required=True, help="CoDA checkpoint folder to start from")
    parser.add_argument("--data", nargs="+", required=True,
                        help="source folders (span-masked) or .jsonl prompt/response files (SFT)")
    parser.add_argument("--recipe", default="finetune_repo_gpu",
                        help=", ".join(sorted(recipes.RECIPES)))
    parser.add_argument("--out", help="run folder (default runs/finetune-RECIPE)")
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    parser.add_argument("--cpu", action="store_true", help="force CPU (tiny runs, tests)")
    parser.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default=None)
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints")
    parser.add_argument("--stop-after-step", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    recipe = recipes.override(recipes.get(args.recipe), args.set)
    paths = [Path(p) for p in args.data]
    sft = all(p.is_file() and p.suffix == ".jsonl" for p in paths)
    if any(p.suffix == ".jsonl" for p in paths) and not sft:
        parser.error("give either .jsonl SFT files or source folders, not both")
    data = replace(recipe.data, sources=tuple(str(p) for p in paths))
    recipe = replace(recipe, init_from=args.base, data=data,
                     tokenizer=replace(recipe.tokenizer, path=args.base))
    if args.cpu:
        recipe = replace(recipe, train=replace(recipe.train, device="cpu"))
    backend = AccelerateBackend(args.mixed_precision, cpu=args.cpu or recipe.train.device == "cpu")
    splits = {}
    if sft:
        tok = load_tokenizer(args.base)
        train, evals = sft_splits(paths, tok, recipe.data.seq_len, recipe.data.eval_fraction)
        splits = {"train_split": train, "eval_split": evals}
    out = args.out or f"runs/finetune-{recipe.name}"
    trainer = Trainer(recipe, out, backend=backend, **splits)
    result = trainer.run(resume=not args.fresh, stop_after_step=args.stop_after_step)
    if result and backend.is_main:
        print(f"step {trainer.step}: masked CE {result.get('masked_ce', float('nan')):.4f}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
