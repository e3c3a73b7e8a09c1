"""``python -m training.gpu_run --out DIR``: one budgeted run that adds compute to ``model/``.

Made for a lent GPU machine (one command of at most 10 minutes, no network, a few files back),
rehearsed on CPU by ``tests/test_training_gpu_run.py``.  In one process, within ``--budget-s``:

1. corpus: the machine's installed permissive packages + stdlib (``training.data.corpus``), written
   to ``DIR/corpus_manifest.json`` at once;
2. packing with the shipped tokenizer (syntax spans from ``ast``), train/eval by file;
3. a ``Trainer`` warm-started from ``--init-from`` (default the shipped ``model/``), evaluated
   before training; a few steps measure the step time (and compile), then the cosine schedule
   is re-planned to end when the budget (minus the time to evaluate and export) runs out, and
   planned again at the last warm-up step from the steps timed since;
4. training, exporting bf16 weights to ``DIR/model`` at every periodic checkpoint, so a kill
   still leaves the newest export; then the final evaluation and export.

``DIR`` ends with at most 8 files (the GPU machine's limit): ``model/config.json``,
``model/model.safetensors`` (or ≤ 16 MiB shards plus ``model.safetensors.index.json``),
``corpus_manifest.json``, ``report.json`` (status, timings, throughput, evaluations, the
metrics rows, the recipe) and ``train.log``.  Tokenizer files are not copied: the run never
changes the tokenizer, so ``model/``'s stay valid.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from training.data import corpus
from training.data.decontam import ARTIFACT
from training.data.feed import CorpusFeed, pack_files, write_manifest
from training.data.packing import PackedSplit
from training.eval.probe import masked_ce as held_out_ce
from training.run import recipes
from training.run.export import MIB, bf16_state, export_model, files_back
from training.run.loop import EVAL_SEED, Trainer
from training.run.metrics import read_metrics

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
MAX_FILES_BACK = 8


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

def probe(trainer: Trainer, split: PackedSplit, sigma: float, batches: int, batch: int) -> dict:
    """Held-out CE and top-1 accuracy where a fixed fraction σ of tokens is masked (the
    objective's mean over σ ~ U[0, 1] is dominated by near-unigram high-σ rows)."""
    if split is None or len(split) == 0:
        return {}
    n = min(batch, len(split))
    g = torch.Generator().manual_seed(EVAL_SEED)
    x = split.ids[[(i * n + k) % len(split) for i in range(batches) for k in range(n)]]
    masked = torch.cat([torch.rand(n, x.shape[1], generator=g) < sigma for _ in range(batches)])
    masked[:, 0] = False
    model = trainer.backend.unwrap(trainer.model)
    model.eval()
    with trainer.autocast():
        ce, top1 = held_out_ce(model, x, masked, trainer.tok.mask_id)
    model.train()
    return {f"ce_sigma{sigma:g}": ce, f"top1_sigma{sigma:g}": top1}


def evaluate(trainer: Trainer, batch: int) -> dict:
    t = time.monotonic()
    n = trainer.recipe.train.eval_batches
    out = {**trainer.evaluate(), **probe(trainer, trainer.eval_split, 0.05, n, batch),
           **probe(trainer, trainer.eval_split, 0.3, n, batch)}
    out["seconds"] = round(time.monotonic() - t, 2)
    return out


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

class Report:
    """report.json, rewritten atomically after every stage (a kill leaves the last one)."""

    def __init__(self, path: Path) -> None:
        self.path, self.data = path, {"status": "started", "stages": {}}

    def update(self, **kw) -> None:
        self.data.update(kw)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)


def grow(recipe, init: Path, layers: int, folder: Path, train: PackedSplit, report: Report,
         width: int = 0):
    """Widen and deepen the start model function-preservingly (``training.run.grow``; the MLP
    widens in proportion); the run starts there.  A start model already that wide and deep (a
    later session continuing a grown run) is kept as is."""
    from coda_model import load_model, save_model
    from training.run.grow import grow_to, same_function
    base = load_model(init)
    c = base.config
    shape = {"layers": [c.num_hidden_layers] * 2, "hidden": [c.hidden_size] * 2}
    if layers <= c.num_hidden_layers and width <= c.hidden_size:
        log.info("%s has %d layers of %d already: not grown", init, c.num_hidden_layers,
                 c.hidden_size)
        report.update(grown={"from": str(init), **shape, "skipped": True})
        return recipe
    grown = grow_to(base, width, layers, seed=recipe.train.seed)
    g = grown.config
    gap = same_function(base, grown, train.ids[:2, :64].long())
    save_model(grown, folder, tokenizer_dir=init)
    report.update(grown={"from": str(init), "layers": [c.num_hidden_layers, g.num_hidden_layers],
                         "hidden": [c.hidden_size, g.hidden_size],
                         "parameters": [c.num_parameters, g.num_parameters],
                         "max_logit_gap": gap})
    log.info("grew %s from %d × %d to %d × %d (max logit gap %.2e)", init, c.num_hidden_layers,
             c.hidden_size, g.num_hidden_layers, g.hidden_size, gap)
    return replace(recipe, init_from=str(folder))


def calibrate(trainer: Trainer, steps: int = 5, warm: int = 3) -> float:
    """Seconds per optimizer step, after ``warm`` steps (compilation, allocator).  These are
    real training steps (in the warm-up, whose learning rates do not depend on the horizon)."""
    def sync():
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
    try:
        for _ in range(warm):
            trainer.train_step()
    except Exception:
        if not trainer.recipe.train.compile:
            raise
        log.exception("torch.compile failed: continuing eagerly")
        trainer._hidden = trainer.backend.unwrap(trainer.model).hidden_states
        for _ in range(warm):
            trainer.train_step()
    sync()
    t = time.monotonic()
    for _ in range(steps):
        trainer.train_step()
    sync()
    return (time.monotonic() - t) / steps


def replan_at_warmup_end(trainer: Trainer, deadline: float, report: Report, min_steps: int = 10):
    """``Trainer.run``'s ``on_step``: at the last warm-up step, plan the cosine again from the
    steps timed since the run began.  The calibration's few steps can be far off: on CPU with
    ``torch.compile`` they measured 1.72 s/step where the run then took 1.30, which would have
    ended the cosine, and the run, with a quarter of the budget unused."""
    start_step, start = trainer.step, time.monotonic()
    last_warm = trainer.recipe.optim.warmup_steps - 1

    def on_step(tr: Trainer) -> None:
        if tr.step != last_warm or tr.step - start_step < min_steps:
            return
        now = time.monotonic()
        step_s = (now - start) / (tr.step - start_step)
        planned = tr.step + max(1, int((deadline - now) / step_s))
        tr.set_total_steps(planned)
        report.update(replanned={"at_step": tr.step, "seconds_per_step": step_s,
                                 "planned_steps": planned})
        log.info("step %d: %.3f s/step since the start: re-planned to %d steps", tr.step,
                 step_s, planned)
    return on_step


def run(args, report: Report) -> dict:
    t0 = time.monotonic()
    out = Path(args.out)
    stages = report.data["stages"]

    def stage(name: str, start: float) -> None:
        stages[name] = round(time.monotonic() - start, 1)
        report.update()

    recipe = recipes.override(recipes.get(args.recipe), args.set)
    if args.init_from and not Path(args.init_from).exists():  # a Hub id: fetched once, cached
        from coda_model.hub import HubError, HubId, parse, resolve

        if isinstance(parse(args.init_from), HubId):
            try:
                args.init_from = str(resolve(args.init_from))
            except HubError as exc:
                raise SystemExit(f"gpu_run: --init-from {exc}") from None
    init = Path(args.init_from or recipe.init_from or REPO / "model")
    init = (REPO / init if not init.is_absolute() and not init.exists() else init).resolve()
    site_dirs, std = corpus.default_sources()
    site_dirs = [Path(p) for p in args.site_packages] if args.site_packages is not None \
        else site_dirs
    std = None if args.stdlib == "none" else Path(args.stdlib) if args.stdlib else std
    recipe = replace(recipe, init_from=str(init), tokenizer=replace(recipe.tokenizer, path=None),
                     data=replace(recipe.data, sources=tuple(map(str, site_dirs))
                                  + ((str(std),) if std else ())))
    report.update(recipe=recipe.to_dict(), budget_s=args.budget_s, torch=torch.__version__,
                  device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    for item in args.attach:
        name, _, path = item.partition("=")
        try:
            report.update(**{name: json.loads(Path(path).read_text())})
        except (OSError, ValueError) as exc:   # a missing side result never stops the run
            report.update(**{name: f"unreadable: {exc}"})

    t = time.monotonic()
    from coda_model import load_tokenizer
    tok = load_tokenizer(init)
    builder = corpus.CorpusBuilder(
        site_dirs, std, init, recipe.data, artifact=None if args.no_decontam else
        Path(args.decontam), workers=args.workers or max(1, (os.cpu_count() or 2) - 1),
        max_files=args.max_files, nice=10)
    feed = CorpusFeed(builder, recipe.data.seq_len, tok.eos_id, args.refresh_s)
    feed.launch(stop_at=t0 + args.corpus_share * args.budget_s)
    try:
        # Training starts once a few batches and an evaluation batch (the fixed held-out set
        # that eval_before and eval_after share) are there.
        enough = 4 * recipe.train.batch_size * recipe.data.seq_len
        eval_enough = min(32, recipe.train.batch_size) * recipe.data.seq_len \
            if recipe.data.eval_fraction > 0 else 0
        files, manifest = feed.first(lambda: time.monotonic() - t0 >= args.first_share *
                                     args.budget_s and builder.train_tokens >= enough
                                     and builder.eval_tokens >= eval_enough)
        write_manifest(out, manifest)
        stage("corpus", t)

        t = time.monotonic()
        train = pack_files([f for f in files if not f.is_eval], recipe.data.seq_len, tok.eos_id)
        held = pack_files([f for f in files if f.is_eval], recipe.data.seq_len, tok.eos_id)
        feed.start(len(files))
        feed.on_chunk()   # the corpus may have finished between the snapshot and start
        del files
        report.update(data={"train_rows": len(train), "eval_rows": len(held),
                            "train_tokens": train.ids.numel(), "spans": int(train.spans.shape[0]),
                            "seq_len": recipe.data.seq_len}, data_growth=[])
        stage("pack", t)
        if len(train) < recipe.train.batch_size:
            raise SystemExit(f"{len(train)} packed rows cannot fill a batch of "
                             f"{recipe.train.batch_size}")

        t = time.monotonic()
        work = Path(args.work or tempfile.mkdtemp(prefix="coda_gpu_run_"))
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
        if args.grow_layers or args.grow_width:
            recipe = grow(recipe, init, args.grow_layers, work / "grown", train, report,
                          width=args.grow_width)
        trainer = Trainer(recipe, work, train_split=train, eval_split=held)
        n_bytes = sum(v.numel() * 2 for v in bf16_state(trainer.model).values())
        if files_back(n_bytes, args.shard_mib * MIB) > MAX_FILES_BACK:
            raise SystemExit(f"a {n_bytes / MIB:.0f} MiB bf16 model needs more than "
                             f"{MAX_FILES_BACK} files back at {args.shard_mib} MiB per shard")
        eval_batch = min(32, recipe.train.batch_size)
        before = evaluate(trainer, eval_batch)
        report.update(eval_before=before,
                      parameters=sum(p.numel() for p in trainer.model.parameters()))
        stage("setup_and_eval_before", t)

        t = time.monotonic()
        step_s = calibrate(trainer)
        reserve = 2 * before["seconds"] + 5 + 0.02 * args.budget_s + 3 * args.export_s
        deadline = t0 + args.budget_s - reserve
        planned = trainer.step + max(1, int((deadline - time.monotonic()) / step_s))
        trainer.set_total_steps(planned)
        tokens_per_step = recipe.train.batch_size * recipe.data.seq_len
        report.update(calibration={"seconds_per_step": step_s,
                                   "tokens_per_s": tokens_per_step / step_s,
                                   "planned_steps": planned, "reserve_s": round(reserve, 1)})
        log.info("%.3f s/step (%.0f tokens/s): planning %d steps", step_s, tokens_per_step / step_s,
                 planned)
        stage("calibrate", t)

        def export(tr: Trainer) -> None:
            e = time.monotonic()
            export_model(tr.backend.unwrap(tr.model), out / "model", args.shard_mib * MIB)
            report.update(exported_step=tr.step, status="training")
            log.info("exported step %d in %.1fs", tr.step, time.monotonic() - e)

        t = time.monotonic()
        replan = replan_at_warmup_end(trainer, deadline, report)

        def on_step(tr: Trainer) -> None:
            replan(tr)
            grown = feed.take()
            if grown is None:
                return
            split, manifest = grown
            write_manifest(out, manifest)
            if split is None:
                return
            tr.use_train_split(split)
            report.data["data_growth"].append({
                "step": tr.step, "seconds": round(time.monotonic() - t0, 1),
                "files": manifest["files"], "train_rows": len(split),
                "train_tokens": split.ids.numel(), "corpus_done": manifest["corpus_done"]})
            report.update()
            log.info("step %d: training on %d files now (%d rows)", tr.step, manifest["files"],
                     len(split))

        trainer.run(resume=False, deadline=deadline, on_checkpoint=export, on_step=on_step)
        train_s = time.monotonic() - t
        stage("train", t)
        feed.close()   # the pool winds down (niced) while the model is evaluated and exported

        t = time.monotonic()
        after = evaluate(trainer, eval_batch)
        export(trainer)
        feed.close(wait_s=30)
        rows = read_metrics(work / "metrics.jsonl")
        report.update(
            status="done", eval_after=after, steps=trainer.step,
            planned_steps=trainer.recipe.train.steps,
            tokens=trainer.tokens, train_seconds=round(train_s, 1),
            train_tokens_per_s=next((r["tokens_per_s"] for r in reversed(rows)
                                     if r.get("kind") == "train"), None),
            flops=6 * report.data["parameters"] * trainer.tokens,
            corpus_seconds=feed.done_s, corpus_error=feed.error, metrics=rows)
        stage("eval_after_and_export", t)
        report.update(total_seconds=round(time.monotonic() - t0, 1))
        log.info("done: %d steps, %d tokens, eval %s → %s", trainer.step, trainer.tokens,
                 {k: round(v, 3) for k, v in before.items()}, {k: round(v, 3) for k, v in
                                                              after.items()})
        return report.data
    finally:
        feed.close()   # whatever happened, the pool stops after its current chunk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.gpu_run",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (the GPU machine's $OUT)")
    parser.add_argument("--budget-s", type=float, default=540.0,
                        help="wall-clock budget of the whole run, corpus included")
    parser.add_argument("--recipe", default="default_model_gpu")
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    parser.add_argument("--init-from", help="model folder or Hub id to continue (default: the "
                        "recipe's, "
                                            "model/)")
    parser.add_argument("--site-packages", nargs="*", help="default: this Python's")
    parser.add_argument("--stdlib", help="stdlib folder (default: this Python's; 'none': skip)")
    parser.add_argument("--decontam", default=str(ARTIFACT))
    parser.add_argument("--no-decontam", action="store_true")
    parser.add_argument("--workers", type=int, default=0, help="corpus processes (0: per CPU)")
    parser.add_argument("--max-files", type=int)
    parser.add_argument("--corpus-share", type=float, default=0.7,
                        help="stop processing files after this share of the budget (the files "
                             "done are a random sample)")
    parser.add_argument("--first-share", type=float, default=0.05,
                        help="start training on the corpus so far after this share of the "
                             "budget (the rest joins as it is processed)")
    parser.add_argument("--refresh-s", type=float, default=15.0,
                        help="seconds between growing the train split")
    parser.add_argument("--shard-mib", type=float, default=15.5)
    parser.add_argument("--export-s", type=float, default=3.0,
                        help="time one export takes (reserved at the end)")
    parser.add_argument("--work", help="checkpoint folder (default: a new temporary folder)")
    parser.add_argument("--grow-layers", type=int, default=0,
                        help="deepen the start model to N layers first (function-preserving; "
                        "none if it has N already)")
    parser.add_argument("--grow-width", type=int, default=0,
                        help="widen the start model's residual stream to N first (heads and "
                             "MLP in proportion; function-preserving; none if it has N)")
    parser.add_argument("--attach", nargs="*", action="extend", default=[], metavar="NAME=JSON",
                        help="embed a JSON file in report.json (e.g. the benchmark's result)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    handlers = [logging.StreamHandler(sys.stdout), logging.FileHandler(out / "train.log")]
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = Report(out / "report.json")
    try:
        data = run(args, report)
    except BaseException as exc:   # the report says how the run ended, whatever ended it
        import traceback
        report.update(status=f"failed: {type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc()[-4000:])
        raise
    print(json.dumps({k: data.get(k) for k in ("status", "steps", "tokens", "train_seconds",
                                               "total_seconds", "eval_before", "eval_after",
                                               "calibration", "stages")}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
