"""Retries of the fill contract: how often trying again turns a refusal into a parsing fill.

Fills held-out spans (``training.data.heldout``, as ``bench_fill_hole.py`` picks them), each
made a hole (the span's code replaced by a ``<FILL>`` marker, sized as a hole is), through
``Engine.fill`` and ``coda_lsp.core.contract``, as "Fill this hole" does: once with the first
attempt only, once with retries (shorter and expression-sized lengths, another unmasking order
and seed; at most ``contract.RETRY_BUDGET`` times the first attempt's time). Prints how many
holes the first attempt refused, how many of those a retry rescued, the rescued fills' exact
match against the code that was there, and what retrying cost (time with retries / without,
over the refused holes and over all). A measurement, not a test.

    python benchmarks/bench_fill_retry.py [--model DIR] [--holes 40] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fill_hole import hole_job  # noqa: E402

from coda_lsp.cli import default_model_dir  # noqa: E402
from coda_lsp.core import (
    contract,  # noqa: E402
    prompt,  # noqa: E402
)
from coda_lsp.core.engine import (
    Engine,  # noqa: E402
    FillJob,  # noqa: E402
)
from coda_lsp.core.settings import Settings  # noqa: E402
from coda_syntax import languages, spans  # noqa: E402
from coda_syntax.text import FILL_MARKER  # noqa: E402
from training.data import heldout  # noqa: E402
from training.run import recipes  # noqa: E402


def marker_job(ex: heldout.Example, settings: Settings):
    """The span's code replaced by a hole marker: "Fill this hole"'s job and error counter."""
    marker = FILL_MARKER.decode()
    source = (ex.prefix + marker + ex.suffix).encode("utf-8")
    syn = spans.Syntax(languages.resolve(language_id=ex.language), source)
    hole = spans.hole_at(syn, len(ex.prefix.encode("utf-8")))
    window = settings.context_tokens * prompt.CHARS_PER_TOKEN + 1
    job = FillJob(prefix=ex.prefix[-window:], suffix=ex.suffix[:window],
                  span_lengths=tuple(hole.lengths), steps=settings.fill_hole_steps,
                  settings=settings)
    return job, spans.error_counter(syn, hole)


def decide(engine: Engine, job, errors, settings: Settings, retry: bool):
    t0 = time.perf_counter()
    decision = contract.decide(lambda j: engine.fill(j).fills, job,
                               settings.confidence_threshold,
                               lambda t: errors(t.encode("utf-8")), retry=retry)
    return decision, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=default_model_dir())
    p.add_argument("--holes", type=int, default=40)
    p.add_argument("--per-file", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine.load(args.model, device="cpu")
    docs = heldout.heldout_documents(recipes.get("default_model_cpu").data)
    found = heldout.heldout_examples(docs, engine.tokenizer, per_file=args.per_file, seed=args.seed)
    examples = random.Random(args.seed).sample(found, min(args.holes, len(found)))
    settings = Settings()
    engine.fill(hole_job(examples[0], settings)[0])   # warm-up, not timed
    once, tried, refused, rescued, em, retried = [], [], 0, 0, [], []
    for ex in examples:
        job, errors = marker_job(ex, settings)
        first, t_first = decide(engine, job, errors, settings, retry=False)
        again, t_again = decide(engine, job, errors, settings, retry=True)
        once.append(t_first)
        tried.append(t_again)
        if again.attempts > 1:
            retried.append(t_again / t_first)
        if not first.accepted:
            refused += 1
            if again.accepted:
                rescued += 1
                em.append(heldout.exact_match(again.fills[0].text, ex.middle))
    refused_ratio = retried or [1.0]
    print(f"model={args.model} holes={len(examples)} steps={settings.fill_hole_steps} "
          f"threads={args.threads} budget={contract.RETRY_BUDGET}x")
    print(f"refused by the first attempt: {refused}/{len(examples)}; rescued by a retry: "
          f"{rescued}/{refused} ({rescued / max(1, refused):.0%}); rescued EM "
          f"{statistics.mean(em) if em else 0:.3f}")
    print(f"time with retries / without: all holes {sum(tried) / sum(once):.2f}x, "
          f"{len(retried)} retried holes: median {statistics.median(refused_ratio):.2f}x, "
          f"max {max(refused_ratio):.2f}x")


if __name__ == "__main__":
    main()
