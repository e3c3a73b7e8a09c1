"""Fill-hole latency and agreement: the exact sampler against the context-cached default.

Fills held-out spans (``training.data.heldout``: random cursors in the held-out files and the span
``coda_syntax.spans.choose`` picks there, with its own candidate lengths) through ``Engine.fill``
and ``rank``, as "Fill this hole" does, twice per hole: with ``fillHoleExact`` (every step
recomputes the whole window, the reference) and with the default (the context's keys/values
computed once per request). Prints p50/p95 ms per hole for both, their ratio, how often the
default offers the same fill as the exact path, and each path's exact match and edit
similarity to the code that was there, all measured in this one run. A measurement, not a test.

    python benchmarks/bench_fill_hole.py [--model DIR] [--holes 40] [--threads 2] [--steps 64]
                                         [--alg entropy]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from coda_lsp.cli import default_model_dir  # noqa: E402
from coda_lsp.core import prompt  # noqa: E402
from coda_lsp.core.engine import Engine, FillJob, rank  # noqa: E402
from coda_lsp.core.settings import Settings  # noqa: E402
from coda_syntax import languages, spans  # noqa: E402
from training.data import heldout  # noqa: E402
from training.run import recipes  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def hole_arguments(p: argparse.ArgumentParser, holes: int) -> None:
    """The flags every held-out hole benchmark takes."""
    p.add_argument("--model", type=Path, default=default_model_dir())
    p.add_argument("--holes", type=int, default=holes)
    p.add_argument("--per-file", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)


def held_out_holes(args: argparse.Namespace, dtype: str | None = None,
                   ) -> tuple[Engine, list[heldout.Example]]:
    """The model on the CPU with ``args.threads``, and a seeded sample of ``args.holes``
    held-out spans (the same holes in every benchmark that takes the same flags)."""
    torch.set_num_threads(args.threads)
    engine = Engine.load(args.model, device="cpu", dtype=dtype)
    docs = heldout.heldout_documents(recipes.get("default_model_cpu").data)
    found = heldout.heldout_examples(docs, engine.tokenizer, per_file=args.per_file, seed=args.seed)
    return engine, random.Random(args.seed).sample(found, min(args.holes, len(found)))


def hole_job(ex: heldout.Example, settings: Settings) -> tuple[FillJob, object]:
    """The server's job for this span (its text windows and lengths) and its error counter."""
    source = (ex.prefix + ex.middle + ex.suffix).encode("utf-8")
    syn = spans.Syntax(languages.resolve(language_id=ex.language), source)
    start = len(ex.prefix.encode("utf-8"))
    span = spans.choose(syn, start)   # the span's own candidate lengths, not the true one
    window = settings.context_tokens * prompt.CHARS_PER_TOKEN + 1
    job = FillJob(prefix=ex.prefix[-window:], suffix=ex.suffix[:window],
                  span_lengths=tuple(span.lengths), steps=settings.fill_hole_steps,
                  settings=settings)
    truth = spans.Span(start, start + len(ex.middle.encode("utf-8")), span.kind, ())
    return job, spans.error_counter(syn, truth)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    hole_arguments(p, holes=40)
    p.add_argument("--steps", type=int, default=Settings().fill_hole_steps)
    p.add_argument("--dtype", default=None, help="default: the server's choice for this CPU")
    p.add_argument("--alg", default=Settings().alg, help="unmasking order (settings' default)")
    args = p.parse_args()
    engine, examples = held_out_holes(args, args.dtype)
    fast = dataclasses.replace(Settings(), fill_hole_steps=args.steps, alg=args.alg)
    modes = {"exact": dataclasses.replace(fast, fill_hole_exact=True), "fast": fast}
    ms: dict[str, list[float]] = {m: [] for m in modes}
    top: dict[str, list[str]] = {m: [] for m in modes}
    engine.fill(hole_job(examples[0], fast)[0])   # warm-up, not timed
    for ex in examples:
        for mode, settings in modes.items():   # in turn, so load on the machine hits both
            job, errors = hole_job(ex, settings)
            t0 = time.perf_counter()
            result = engine.fill(job)
            ranked = rank(result.fills, settings.confidence_threshold,
                          lambda t, errors=errors: errors(t.encode("utf-8")))
            ms[mode].append((time.perf_counter() - t0) * 1e3)
            top[mode].append(ranked[0].text if ranked else "")
    dtype = next(engine.model.parameters()).dtype
    print(f"model={args.model} holes={len(examples)} steps={args.steps} alg={args.alg} "
          f"dtype={dtype} threads={args.threads}")
    print(f"{'path':6} {'p50 ms':>8} {'p95 ms':>8} {'same as exact':>14} {'EM':>6} {'ES':>6} "
          f"{'nothing':>8}")
    for mode in modes:
        same = statistics.mean(a == b for a, b in zip(top[mode], top["exact"], strict=True))
        pairs = list(zip(top[mode], examples, strict=True))
        em = statistics.mean(heldout.exact_match(t, ex.middle) for t, ex in pairs)
        es = statistics.mean(heldout.edit_similarity(t, ex.middle) for t, ex in pairs)
        empty = statistics.mean(not t for t in top[mode])
        print(f"{mode:6} {percentile(ms[mode], 0.5):>8.0f} {percentile(ms[mode], 0.95):>8.0f} "
              f"{same:>14.3f} {em:>6.3f} {es:>6.3f} {empty:>8.3f}")
    print(f"speed-up fast vs exact: p50 "
          f"{percentile(ms['exact'], 0.5) / percentile(ms['fast'], 0.5):.2f}x, p95 "
          f"{percentile(ms['exact'], 0.95) / percentile(ms['fast'], 0.95):.2f}x")


if __name__ == "__main__":
    main()
