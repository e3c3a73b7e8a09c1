"""Retries of the fill contract: how often trying again turns a refusal into a parsing fill.

Fills holes through ``Engine.fill`` and ``coda_lsp.core.contract``, as "Fill this hole" does:
once with the first attempt only, once with retries (shorter and expression-sized lengths,
another unmasking order and seed; at most ``contract.RETRY_BUDGET`` times the first attempt's
time). Each hole is its code replaced by a ``<FILL>`` marker, sized as a hole is. The sets:
``heldout`` (held-out spans, as ``bench_fill_hole.py`` picks them; the shipped model rarely
refuses one) and HumanEval infilling's ``single-line``, ``multi-line`` and ``random-span``
middles ($CODA_SHARED/benchmarks/humaneval-infilling; a random span cuts through tokens and
lines, where refusals happen). Prints per set how many holes the first attempt refused, how
many of those a retry rescued, the rescued fills' exact match against the code that was
there, and what retrying cost (time with retries / without, over all holes and over the
retried ones). A measurement, not a test.

    python benchmarks/bench_fill_retry.py [--model DIR] [--holes 40] [--threads 2]
                                          [--sets heldout multi-line random-span]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as coda-lsp runs; before torch loads
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fill_hole import held_out_holes, hole_arguments  # noqa: E402

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
from training.eval import evaluate  # noqa: E402

SETS = ("heldout", *evaluate.HUMANEVAL)  # HumanEval: single-line, multi-line, random-span
SHARED = os.environ.get("CODA_SHARED")
HUMANEVAL = Path(SHARED) / "benchmarks" / "humaneval-infilling" if SHARED else evaluate.BENCHMARKS


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


def examples_of(name: str, args: argparse.Namespace, held_out: list) -> list[heldout.Example]:
    """``heldout``: held-out spans (as bench_fill_hole.py picks them); else a HumanEval
    infilling set (a seeded sample of ``args.holes``), its middle made a hole."""
    if name == "heldout":
        return held_out
    return evaluate.humaneval_examples(args.benchmarks, name, args.holes, args.seed)


def measure(engine: Engine, examples: list[heldout.Example], settings: Settings) -> dict:
    """Each hole twice, without then with retries: refusals, rescues and what retrying cost."""
    once, tried, retried, em = [], [], [], []
    refused = rescued = 0
    for n, ex in enumerate(examples, 1):
        if n % 10 == 0:
            print(f"  {n}/{len(examples)} holes, {refused} refused so far", file=sys.stderr,
                  flush=True)
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
    return {"holes": len(examples), "refused": refused, "rescued": rescued, "em": em,
            "all": sum(tried) / sum(once), "retried": retried}


def report(name: str, m: dict) -> str:
    refused, rescued, ratios = m["refused"], m["rescued"], m["retried"] or [1.0]
    em = f"{statistics.mean(m['em']):.3f}" if m["em"] else "-"
    return (f"{name:12} refused {refused}/{m['holes']}, rescued {rescued}/{refused} "
            f"({rescued / max(1, refused):.0%}), rescued EM {em}; time with retries / without: "
            f"all {m['all']:.2f}x, {len(m['retried'])} retried: median "
            f"{statistics.median(ratios):.2f}x, max {max(ratios):.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    hole_arguments(p, holes=40)
    p.add_argument("--sets", nargs="+", default=["heldout"], choices=SETS,
                   help="hole sets, each measured on its own (default: heldout)")
    p.add_argument("--benchmarks", type=Path, default=HUMANEVAL,
                   help="the HumanEval infilling folder (default: from $CODA_SHARED)")
    args = p.parse_args()
    engine, held_out = held_out_holes(args)
    settings = Settings()
    sets = {name: examples_of(name, args, held_out) for name in args.sets}
    engine.fill(marker_job(next(iter(sets.values()))[0], settings)[0])   # warm-up, not timed
    print(f"model={args.model} holes={args.holes} per set, steps={settings.fill_hole_steps} "
          f"threads={args.threads} budget={contract.RETRY_BUDGET}x")
    for name, examples in sets.items():
        print(report(name, measure(engine, examples, settings)), flush=True)


if __name__ == "__main__":
    main()
