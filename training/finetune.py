"""`python -m training.finetune --base DIR --data PATH... --recipe NAME`: accelerate fine-tuning.

Two kinds of data, told apart by the paths given:

* folders of source files (a repository): continued span-masked diffusion training, the same
  objective as pre-training, for a domain fine-tune on your code;
* ``.jsonl`` files of ``{"prompt": ..., "response": ...}`` records: SFT, where only the response
  and the padding after it can be masked, so the model learns to answer and to pad.

Runs on CPU (``finetune_repo_cpu``: minutes, with before/after scores on the repository's
held-out files, ``training.eval.repo``) and on one or more GPUs (``accelerate launch -m
training.finetune ...``).  Checkpoints, metrics and resume are the pre-training loop's.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import torch

from coda_model import load_model, load_tokenizer
from training.data import heldout
from training.data.packing import DataError, PackedSplit
from training.errors import UsageError, main_guarded
from training.eval import repo as repo_eval
from training.eval import verdict
from training.run import devices, dry_run, recipes
from training.run.loop import Trainer

log = logging.getLogger(__name__)


class AccelerateBackend:
    """The loop's backend on top of 🤗 accelerate (DDP / FSDP / mixed precision per its config)."""

    def __init__(self, mixed_precision: str | None = None, cpu: bool = False) -> None:
        from accelerate import Accelerator
        if mixed_precision is None:
            mixed_precision = "bf16" if torch.cuda.is_available() and not cpu else "no"
        self.accelerator = Accelerator(mixed_precision=mixed_precision, cpu=cpu)
        self.device = self.accelerator.device
        self.is_main = self.accelerator.is_main_process
        self.world_size = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        # Several processes: call the wrapped model as a whole so DDP hooks (and autocast) run.
        # One process in fp32 (the CPU recipe): project only the scored positions.
        self.sparse_head = self.world_size == 1 and mixed_precision == "no"

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
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not JSON ({exc})") from exc
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) \
                    or not isinstance(record.get("response"), str):
                raise DataError(f"{path}:{n}: expected string fields 'prompt' and 'response'")
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
        raise DataError("no (prompt, response) records in the given files")

    def held_out(pair):
        digest = hashlib.sha256(pair[0].encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction

    train = [p for p in pairs if not held_out(p)]
    evals = [p for p in pairs if held_out(p)]
    return pack_pairs(train, tok, seq_len), pack_pairs(evals, tok, seq_len) if evals else None


INSTALL_TRAIN = 'pip install -e ".[train]"'


def check_extras() -> None:
    """Without the train extras: one line with the install command, not a ModuleNotFoundError."""
    try:
        import accelerate  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"the train extras are not installed (no {exc.name or 'accelerate'}): "
                         f"run {INSTALL_TRAIN} in the repository") from None


def base_dtype(base: Path) -> str | None:
    """The dtype the base model is served in (its config's torch_dtype): final/ is saved so."""
    return json.loads((base / "config.json").read_text()).get("torch_dtype")


def check_base(base: Path) -> None:
    """A wrong --base fails now with one line, not after the data is packed."""
    if not base.is_dir():
        raise UsageError(f"--base {base}: no such folder (give a CoDA model folder, e.g. model/)")
    missing = [name for name in ("config.json", "tokenizer.json") if not (base / name).is_file()]
    if not any(base.glob("*.safetensors")):
        missing.append("*.safetensors weights")
    if missing:
        raise UsageError(f"--base {base} is not a CoDA model folder: no {', '.join(missing)}")
    try:
        json.loads((base / "config.json").read_text())
    except ValueError as exc:
        raise UsageError(f"{base / 'config.json'}: not JSON ({exc})") from exc


def fit_to_base(recipe: recipes.Recipe, base: Path) -> recipes.Recipe:
    """Sequences no longer than the base model's positions: RoPE past them was never trained."""
    positions = json.loads((base / "config.json").read_text()).get("max_position_embeddings")
    if positions and recipe.data.seq_len > positions:
        log.warning("data.seq_len %d is above %s's %d positions: training at %d",
                    recipe.data.seq_len, base, positions, positions)
        recipe = replace(recipe, data=replace(recipe.data, seq_len=positions))
    return recipe


def default_recipe() -> str:
    name = "finetune_repo_gpu" if torch.cuda.is_available() else "finetune_repo_cpu"
    log.info("no --recipe: %s (%s)", name, "CUDA is available" if name.endswith("gpu")
             else "no CUDA GPU")
    return name


def before_scores(trainer: Trainer, examples, fresh: bool) -> dict:
    """The base model's scores, computed once per run folder (a resumed run reuses them)."""
    cache = trainer.out / "eval_before.json"
    key = {"base": str(trainer.recipe.init_from), "spans": [e.id for e in examples]}
    if cache.is_file() and not fresh:
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return stored["scores"]
    log.info("scoring the base model on %d held-out spans", len(examples))
    scores = repo_eval.score(trainer.backend.unwrap(trainer.model), trainer.tok, examples,
                             desc="scoring the base model")
    cache.write_text(json.dumps({"key": key, "scores": scores}) + "\n")
    return scores


HELP = """\
fine-tune a CoDA checkpoint on your repository (span-masked) or on prompt/response pairs (SFT)

hardware:
  CPU     --recipe finetune_repo_cpu (the default without CUDA): 2-10 minutes for the shipped
          model on a 5-20k-line repository, with before/after scores on held-out files;
          final/ averages the fine-tuned and base weights (train.blend=0.5); a fine-tune
          that did not help is written to OUT/rejected/, not OUT/final/ (exit 1)
  GPU     --recipe finetune_repo_gpu (the default with CUDA), bf16; several GPUs or machines:
          accelerate launch -m training.finetune ...  (see `accelerate config`); a
          CoDA-1.7B-sized base trains LoRA adapters (peft), merged into final/ in bf16
          (--lora / --no-lora to choose)
  TPU     pre-training only: python -m training.pretrain with a *_tpu_* recipe (torch_xla)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.finetune", description=HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True,
                        help="CoDA checkpoint folder or Hub id (owner/name[@rev]) to start from")
    parser.add_argument("--data", nargs="+", required=True,
                        help="source folders (span-masked) or .jsonl prompt/response files (SFT)")
    parser.add_argument("--recipe", default=None,
                        help="finetune_repo_cpu without CUDA, finetune_repo_gpu with it; any of "
                        + ", ".join(sorted(recipes.RECIPES)))
    parser.add_argument("--out", help="run folder (default runs/finetune-RECIPE)")
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    parser.add_argument("--cpu", action="store_true", help="train on CPU whatever the recipe says")
    parser.add_argument("--lora", action=argparse.BooleanOptionalAction, default=None,
                        help="train LoRA adapters (peft) and merge them into final/ (bf16); "
                        "default: on for a CoDA-1.7B-sized base on a GPU, off otherwise")
    parser.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default=None)
    parser.add_argument("--fresh", action="store_true",
                        help="ignore existing checkpoints and re-pack the data")
    parser.add_argument("--force", action="store_true",
                        help="resume even though --set or the recipe changed since the checkpoint")
    parser.add_argument("--dry-run", action="store_true",
                        help="check recipe, data, shapes and memory; train nothing")
    parser.add_argument("--no-eval", action="store_true",
                        help="skip the before/after scores on held-out spans")
    parser.add_argument("--eval-spans", type=int, default=80,
                        help="held-out spans scored before and after (default 80)")
    parser.add_argument("--keep-worse", action="store_true",
                        help="write the model to OUT/final/ (exit 0) even when the before/after "
                        "scores say it did not help; by default it goes to OUT/rejected/ "
                        "and the exit status is 1")
    parser.add_argument("--stop-after-step", type=int, default=None)
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks, debug logs")
    return main_guarded(parser, parser.parse_args(argv), run)


def base_folder(ref: str) -> Path:
    """--base: a folder, or a Hub id (owner/name[@rev]) fetched into the HF cache once."""
    from coda_model.hub import HubError, HubId, parse, resolve

    if not isinstance(parse(ref), HubId):
        return Path(ref)
    try:
        return resolve(ref)
    except HubError as exc:
        raise UsageError(f"--base {exc}") from exc


def run(args: argparse.Namespace) -> int:
    check_extras()
    base = base_folder(args.base)
    check_base(base)
    try:
        recipe = recipes.override(recipes.get(args.recipe or default_recipe()), args.set)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    paths = [Path(p) for p in args.data]
    for p in paths:
        if not p.exists():
            raise DataError(f"--data {p}: no such file or folder")
    sft = all(p.is_file() and p.suffix == ".jsonl" for p in paths)
    if any(p.suffix == ".jsonl" for p in paths) and not sft:
        raise UsageError("give either .jsonl SFT files or source folders, not both")
    data = replace(recipe.data, sources=tuple(str(p) for p in paths))
    recipe = replace(recipe, init_from=str(base), data=data,
                     tokenizer=replace(recipe.tokenizer, path=str(base)))
    if args.cpu:
        recipe = replace(recipe, train=replace(recipe.train, device="cpu"))
    if args.lora is not None:
        recipe = replace(recipe, lora=replace(recipe.lora, enabled="on" if args.lora else "off"))
    device = devices.resolve(recipe.train.device)
    recipe = fit_to_base(recipe, base)
    backend = AccelerateBackend(args.mixed_precision, cpu=device == "cpu")
    splits = {}
    if sft:
        tok = load_tokenizer(base)
        train, evals = sft_splits(paths, tok, recipe.data.seq_len, recipe.data.eval_fraction)
        splits = {"train_split": train, "eval_split": evals}
    out = args.out or f"runs/finetune-{recipe.name}"
    trainer = Trainer(recipe, out, backend=backend, rebuild_data=args.fresh, **splits)
    # LoRA: the merged model in bf16 whatever the base's files say (the released layout)
    trainer.final_dtype = "bfloat16" if trainer.recipe.lora.enabled == "on" else base_dtype(base)
    examples = []
    if not (sft or args.no_eval):
        docs = heldout.heldout_documents(trainer.recipe.data)
        examples = repo_eval.examples_for(docs, trainer.tok, max_spans=args.eval_spans)
        warning = repo_eval.too_small(len(docs), len(examples))
        if warning:
            log.warning(warning)
    if args.dry_run:
        print(dry_run.report(trainer))
        if examples:
            print(f"held-out: {len(examples)} spans for the before/after scores")
        return 0
    before = before_scores(trainer, examples, args.fresh) if examples and backend.is_main \
        else None
    result = trainer.run(resume=not args.fresh, stop_after_step=args.stop_after_step,
                         force=args.force)
    if result and backend.is_main:
        print(f"step {trainer.step}: masked CE {result.get('masked_ce', float('nan')):.4f}",
              file=sys.stderr)
    if before is None or not trainer.finished:
        return 0
    return judge_and_place(Path(out), base, args, before, examples, trainer.tok)


def judge_and_place(out: Path, base: Path, args, before: dict, examples, tok) -> int:
    """Score the saved final/ (what would be served, in its saved dtype) on the same spans,
    print the table and the verdict; a fine-tune that did not help moves to rejected/."""
    final, rejected = out / "final", out / "rejected"
    after = repo_eval.score(load_model(final), tok, examples, desc="scoring the fine-tuned model")
    v = verdict.judge(before, after)
    keep = v.helped or args.keep_worse
    where = final if keep else rejected
    if not keep:
        shutil.rmtree(rejected, ignore_errors=True)
        os.replace(final, rejected)
    elif rejected.exists():   # an older run's verdict no longer stands
        shutil.rmtree(rejected)
    rows = {f"base {base}": before, f"fine-tuned {where}": after}
    header = (f"held-out spans of {', '.join(args.data)} ({len(examples)} spans, "
              f"{before['steps']} denoising steps, true length)")
    print(repo_eval.write(out, rows, header, v))
    if v.helped:
        print(f"{v.line()}\nserve it: coda-lsp --model {final}")
        return 0
    if args.keep_worse:
        print(f"{v.line()}\nkept anyway (--keep-worse) in {final}")
        return 0
    print(f"{v.line()}\nnot kept: the model is in {rejected}, not {final}; the base serves "
          f"better (--keep-worse writes it to final/)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
