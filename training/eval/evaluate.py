"""``python -m training.evaluate``: infilling quality vs latency, diffusion model vs AR baseline.

Tasks: HumanEval-Infilling (single-line, multi-line, random-span; pass@1 by running the test in
``training.eval.sandbox``), held-out span infilling (``training.data.heldout``: exact match, edit
similarity, fill parses) and, asked for by name, ``unseen``: line and block holes in whole
repositories no training data came from (``training.data.unseen``; per repository and through
the server's "Fill this hole" path: ``benchmarks/eval_unseen.py``).  The diffusion model is run
at every ``--steps`` value with the true number of masks and, per ``--lengths``, with half and
double that number (DESIGN.md §5: the length problem), or as the server fills a hole
(``server``: its own lengths and ranking); the autoregressive PSM baseline
(``training.eval.ar_baseline``) decodes greedily with a K/V cache in the same run.  Floors: the
empty fill and a copy of the previous line.  Output in ``--out``: ``fills.jsonl`` (every fill),
``summary.json``, ``table.md`` (also printed) and ``quality_latency.png``
(``training.eval.report``).

Both models see the same context: the last ``--prefix-tokens`` tokens before the middle and the
first ``--suffix-tokens`` after it.  Latency is wall time per infill on ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from coda_model import SamplerConfig, hub, infill, load_model, load_tokenizer
from training.data import heldout, unseen
from training.data.heldout import Example
from training.eval import report as eval_report
from training.eval import sandbox
from training.eval.ar_baseline import greedy_fim
from training.run import recipes

log = logging.getLogger(__name__)

HUMANEVAL = {"single-line": "HumanEval-SingleLineInfilling.jsonl.gz",
             "multi-line": "HumanEval-MultiLineInfilling.jsonl.gz",
             "random-span": "HumanEval-RandomSpanInfillingLight.jsonl.gz"}
TASKS = (*HUMANEVAL, "heldout")   # the default run
UNSEEN = "unseen"   # holes in whole repositories no training data came from (fetch them first)
STEPS = (1, 2, 4, 8, 16, 32)
LENGTHS = {"true": 1.0, "half": 0.5, "double": 2.0}
SERVER = "server"   # the language server's own hole sizing and ranking (coda_lsp.core.fim)
REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO.parent / "shared" / "benchmarks" / "humaneval-infilling"


@dataclass(frozen=True)
class Fill:
    system: str          # diffusion | ar
    steps: int | None
    masks: str           # true | half | double (diffusion), "-" (ar)
    task: str
    id: str
    text: str
    ms: float
    passed: bool | None  # HumanEval only
    exact: bool
    similarity: float
    parses: bool | None  # held-out only


def humaneval_examples(folder: Path, task: str, limit: int | None, seed: int) -> list[Example]:
    with gzip.open(folder / HUMANEVAL[task], "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if limit is not None and limit < len(rows):
        rows = random.Random(f"{seed}:{task}").sample(rows, limit)
    return [Example(task, r["task_id"], r["prompt"], r["canonical_solution"], r["suffix"],
                    test=r["test"], entry_point=r["entry_point"]) for r in rows]


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder, a training run folder (its final model, else its latest checkpoint), or
    a Hub id (``owner/name[@revision]``, downloaded into the HF cache by ``coda_model.hub``)."""
    if isinstance(hub.parse(path), hub.HubId):
        return hub.resolve(path)
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    if (path / "final" / "config.json").is_file():
        return path / "final"
    pointer = path / "checkpoints" / "latest"
    if pointer.is_file():
        return path / "checkpoints" / pointer.read_text().strip()
    raise FileNotFoundError(f"{path}: no config.json, final/ or checkpoints/latest")


class Context:
    """Token ids of an example's prefix/suffix within the budgets, and the true length."""

    def __init__(self, tok, ex: Example, prefix_tokens: int, suffix_tokens: int,
                 max_positions: int) -> None:
        self.true_len = max(1, len(tok.encode(ex.middle)))
        self.suffix = tok.encode(ex.suffix)[:suffix_tokens]
        room = max_positions - len(self.suffix) - max(64, 2 * self.true_len) - 8
        self.prefix = tok.encode(ex.prefix)[-max(1, min(prefix_tokens, room)):] or [tok.eos_id]
        if not ex.prefix:
            self.prefix = [tok.eos_id]   # files follow eos in the packed training rows


def program(ex: Example, fill: str) -> str:
    return f"{ex.prefix}{fill}{ex.suffix}\n\n{ex.test}\n\ncheck({ex.entry_point})\n"


class Scorer:
    """Scores fills; HumanEval executions are cached by program text (fills repeat often)."""

    def __init__(self, timeout: float, memory_mb: int) -> None:
        self.timeout, self.memory_mb = timeout, memory_mb
        self.cache: dict[str, bool] = {}

    def __call__(self, ex: Example, text: str) -> dict:
        out = {"exact": heldout.exact_match(text, ex.middle),
               "similarity": heldout.edit_similarity(text, ex.middle),
               "passed": None, "parses": None}
        if ex.task in ("heldout", UNSEEN):
            out["parses"] = heldout.parses(ex, text)
        else:
            source = program(ex, text)
            key = hashlib.sha256(source.encode("utf-8")).hexdigest()
            if key not in self.cache:
                self.cache[key] = sandbox.run_python(source, timeout=self.timeout,
                                                     memory_mb=self.memory_mb).passed
            out["passed"] = self.cache[key]
        return out


def run_diffusion(model, tok, examples, contexts, steps: int, masks: str, scorer) -> list[Fill]:
    fills = []
    for ex, ctx in zip(examples, contexts, strict=True):
        n = max(1, round(ctx.true_len * LENGTHS[masks]))
        t0 = time.perf_counter()
        cand = infill(model, tok, ctx.prefix, ctx.suffix, [n], SamplerConfig(steps=steps))[0]
        ms = 1000 * (time.perf_counter() - t0)
        fills.append(Fill("diffusion", steps, masks, ex.task, ex.id, cand.text, ms,
                          **scorer(ex, cand.text)))
    return fills


def as_typed(ex: Example) -> Example:
    """The example as an editor holds it: a middle that ends its line leaves the newline in
    the document (the user is on a blank line), so the fill is the line's text alone."""
    if ex.middle.endswith("\n") and (not ex.prefix or ex.prefix.endswith("\n")):
        return replace(ex, middle=ex.middle[:-1], suffix="\n" + ex.suffix)
    return ex


def previous_line(prefix: str) -> str:
    """The floor a model must beat: the last non-blank line above the cursor, copied from the
    cursor's column on (what the user would get from "duplicate line" and no model)."""
    head, _, current = prefix.rpartition("\n")
    above = [line for line in head.split("\n") if line.strip()]
    return above[-1][len(current):] if above else ""


def run_server(fill, examples, steps: int, scorer) -> list[Fill]:
    """Fills as the server offers them: ``fill(prefix, suffix, steps) -> text`` is the server's
    own path (its span lengths, candidates, ranking and threshold; "" when it offers nothing),
    handed in by ``benchmarks/bench_infilling.py``: training never imports the server."""
    fills = []
    for ex in map(as_typed, examples):
        t0 = time.perf_counter()
        text = fill(ex.prefix, ex.suffix, steps)
        ms = 1000 * (time.perf_counter() - t0)
        fills.append(Fill("diffusion", steps, SERVER, ex.task, ex.id, text, ms,
                          **scorer(ex, text)))
    return fills


def run_ar(model, tok, examples, contexts, scorer, min_new: int = 64) -> list[Fill]:
    """Greedy PSM; the cap (twice the true length, at least ``min_new``) is never the limit
    that matters for a model that learned to close the middle with eos."""
    fills = []
    for ex, ctx in zip(examples, contexts, strict=True):
        t0 = time.perf_counter()
        ids = greedy_fim(model, tok, ctx.prefix, ctx.suffix, max(min_new, 2 * ctx.true_len))
        ms = 1000 * (time.perf_counter() - t0)
        text = tok.decode(ids)
        fills.append(Fill("ar", None, "-", ex.task, ex.id, text, ms, **scorer(ex, text)))
    return fills


def load_examples(tasks, limit, seed, benchmarks: Path, heldout_recipe: str, per_file: int,
                  tok, unseen_cache: Path | None = None) -> list[Example]:
    examples: list[Example] = []
    for task in tasks:
        if task == UNSEEN:   # line and block holes, as benchmarks/eval_unseen.py cuts them
            repos, exclude = unseen.manifest()
            found = unseen.examples(unseen_cache or unseen.default_cache(), repos, exclude,
                                    seed=seed)
            if limit is not None and limit < len(found):
                found = random.Random(f"{seed}:unseen").sample(found, limit)
            examples += found
        elif task == "heldout":
            docs = heldout.heldout_documents(recipes.get(heldout_recipe).data)
            found = heldout.heldout_examples(docs, tok, per_file=per_file, seed=seed)
            if limit is not None and limit < len(found):
                found = random.Random(f"{seed}:heldout").sample(found, limit)
            examples += found
        else:
            examples += humaneval_examples(benchmarks, task, limit, seed)
    return examples


def evaluate(model_dir, *, ar_dir=None, tasks=TASKS, steps=STEPS, lengths=tuple(LENGTHS),
             limit: int | None = None, seed: int = 0, out: Path | None = None,
             benchmarks: Path = BENCHMARKS, heldout_recipe: str = "default_model_cpu",
             per_file: int = 4, prefix_tokens: int = 256, suffix_tokens: int = 96,
             timeout: float = 10.0, memory_mb: int = 512, ar_min_new: int = 64,
             examples=None, server_fill=None, dtype: str | None = None,
             unseen_cache: Path | None = None) -> dict:
    """Run everything; returns {"fills": [...], "summary": [...], "table": str, "png": path}.

    ``server_fill(model, tokenizer)`` returns the server's fill function for the ``server``
    lengths row (``benchmarks/bench_infilling.py`` passes one built on ``coda_lsp.core.fim``)."""
    if SERVER in lengths and server_fill is None:
        raise ValueError("--lengths server needs the server's fill path: run "
                         "benchmarks/bench_infilling.py")
    # Both models load now: a training run may rotate its checkpoints away while this runs.
    model_dir = resolve_model_dir(model_dir)
    model, tok = load_model(model_dir, dtype=dtype), load_tokenizer(model_dir)
    if ar_dir is not None:
        ar_dir = resolve_model_dir(ar_dir)
        ar_model, ar_tok = load_model(ar_dir, autoregressive=True), load_tokenizer(ar_dir)
    if examples is None:
        examples = load_examples(tasks, limit, seed, benchmarks, heldout_recipe, per_file, tok,
                                 unseen_cache)
    scorer = Scorer(timeout, memory_mb)
    max_pos = model.config.max_position_embeddings
    contexts = [Context(tok, ex, prefix_tokens, suffix_tokens, max_pos) for ex in examples]
    fills: list[Fill] = []
    fill = server_fill(model, tok) if SERVER in lengths else None
    for masks in lengths:
        for s in steps:
            t0 = time.monotonic()
            if masks == SERVER:
                fills += run_server(fill, examples, s, scorer)
            else:
                fills += run_diffusion(model, tok, examples, contexts, s, masks, scorer)
            log.info("diffusion steps=%d masks=%s: %d fills in %.1fs", s, masks, len(examples),
                     time.monotonic() - t0)
    if ar_dir is not None:
        ar_pos = ar_model.config.max_position_embeddings
        ar_contexts = [Context(ar_tok, ex, prefix_tokens, suffix_tokens, ar_pos)
                       for ex in examples]
        t0 = time.monotonic()
        fills += run_ar(ar_model, ar_tok, examples, ar_contexts, scorer, ar_min_new)
        log.info("ar: %d fills in %.1fs", len(examples), time.monotonic() - t0)
    # The floor: some HumanEval-Infilling tests pass with the middle left out entirely.
    fills += [Fill("empty", None, "-", ex.task, ex.id, "", 0.0, **scorer(ex, ""))
              for ex in examples]
    fills += [Fill("previous-line", None, "-", ex.task, ex.id, previous_line(ex.prefix), 0.0,
                   **scorer(ex, previous_line(ex.prefix))) for ex in map(as_typed, examples)]
    summary = eval_report.summarize(fills)
    counts = {t: sum(ex.task == t for ex in examples) for t in dict.fromkeys(ex.task for ex
                                                                             in examples)}
    title = f"{model_dir}" + (f" vs AR {ar_dir}" if ar_dir else "")
    table = eval_report.markdown_table(summary, counts)
    result = {"model": str(model_dir), "ar_model": str(ar_dir) if ar_dir else None,
              "counts": counts, "summary": summary, "table": table,
              "fills": [asdict(f) for f in fills], "png": None}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "fills.jsonl").open("w") as f:
            for row in result["fills"]:
                f.write(json.dumps(row) + "\n")
        meta = {k: v for k, v in result.items() if k not in ("fills", "table")}
        (out / "summary.json").write_text(json.dumps(meta, indent=1) + "\n")
        (out / "table.md").write_text(f"{title}\n\n{table}\n")
        result["png"] = eval_report.plot(summary, out / "quality_latency.png", title)
    return result


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def main(argv: list[str] | None = None, server_fill=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate", description=__doc__.split("\n")[0],
        epilog="hardware: CPU only (--threads), so latencies are CPU numbers; no GPU, TPU or "
               "accelerate launch path")
    p.add_argument("--model", default="model",
                   help="diffusion model folder, run folder or Hub id (owner/name[@rev])")
    p.add_argument("--ar-model", default=str(REPO / "benchmarks" / "ar_baseline"),
                   help="AR baseline folder or run folder ('none' to skip)")
    p.add_argument("--tasks", type=_csv, default=list(TASKS),
                   help=",".join((*TASKS, UNSEEN)) + f" ({UNSEEN}: `python -m training.unseen "
                   "fetch` first; benchmarks/eval_unseen.py fills its holes as the server does)")
    p.add_argument("--unseen-cache", type=Path, default=None,
                   help="where `python -m training.unseen fetch` put the unseen repositories")
    p.add_argument("--steps", type=lambda v: [int(x) for x in _csv(v)], default=list(STEPS))
    p.add_argument("--lengths", type=_csv, default=list(LENGTHS),
                   help="true,half,double,server (the server's own lengths and ranking)")
    p.add_argument("--limit", type=int, help="examples per task (seeded sample)")
    p.add_argument("--per-file", type=int, default=4, help="held-out spans per file")
    p.add_argument("--heldout-recipe", default="default_model_cpu")
    p.add_argument("--benchmarks", type=Path, default=BENCHMARKS)
    p.add_argument("--prefix-tokens", type=int, default=256)
    p.add_argument("--suffix-tokens", type=int, default=96)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per test program")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default=None, help="the diffusion model's: float32 (default), "
                   "bfloat16 or int8 (a CPU serving choice)")
    p.add_argument("--out", type=Path, default=Path("runs/eval"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    unknown = [t for t in args.tasks if t not in (*TASKS, UNSEEN)] + \
        [m for m in args.lengths if m not in (*LENGTHS, SERVER)]
    if unknown:
        p.error(f"unknown tasks/lengths {unknown}")
    if SERVER in args.lengths and server_fill is None:
        p.error("--lengths server needs the server's fill path: run "
                "benchmarks/bench_infilling.py with the same arguments")
    if any(t in HUMANEVAL for t in args.tasks) and not args.benchmarks.is_dir():
        p.error(f"{args.benchmarks} not found (HumanEval-Infilling); use --tasks heldout")
    torch.set_num_threads(args.threads)
    ar = None
    if args.ar_model.lower() != "none":
        try:
            ar = resolve_model_dir(args.ar_model)
        except FileNotFoundError as exc:
            log.warning("no AR baseline (%s): diffusion only", exc)
    result = evaluate(args.model, ar_dir=ar, tasks=args.tasks, steps=args.steps,
                      lengths=args.lengths, limit=args.limit, seed=args.seed, out=args.out,
                      benchmarks=args.benchmarks, heldout_recipe=args.heldout_recipe,
                      per_file=args.per_file, prefix_tokens=args.prefix_tokens,
                      suffix_tokens=args.suffix_tokens, timeout=args.timeout,
                      server_fill=server_fill, dtype=args.dtype,
                      unseen_cache=args.unseen_cache)
    print(result["table"])
    print(f"\nwritten to {args.out}/ (table.md, summary.json, fills.jsonl, quality_latency.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
