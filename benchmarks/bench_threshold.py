"""What each confidence bar would show while typing: the evidence for the settings' defaults.

Held-out spans (the evaluation's own sample: ``training.eval.evaluate.load_examples``) go through
the typing path exactly as ``textDocument/inlineCompletion`` runs it (``fim.fill_between``,
fast: the shortest candidate lengths, context cached, the server's dtype), every candidate
kept. For each bar, the offer is the first ranked fill whose mean token confidence clears it,
as the server picks; the table prints the share of requests that would show ghost text, exact
match and edit similarity among those shown, the edit similarity of the offers it hides, and
how many of the exact offers survive. Ghost text nobody asked for must clear
``automaticConfidenceThreshold``; an explicit request only ``confidenceThreshold``.

    python benchmarks/bench_threshold.py [--model DIR] [--limit 400] [--seed 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from coda_lsp.cli import default_model_dir  # noqa: E402
from coda_lsp.core import fim  # noqa: E402
from coda_lsp.core.engine import Engine, Fill, pick_dtype  # noqa: E402
from coda_lsp.core.settings import Settings  # noqa: E402
from training.data import heldout  # noqa: E402
from training.eval import evaluate  # noqa: E402

BARS = (0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6)


def offer(ranked: list[Fill], bar: float) -> Fill | None:
    """What the server shows at this bar: ranking is kept, the fills under it are skipped."""
    return next((f for f in ranked if f.confidence >= bar), None)


def table(requests: list[tuple[list[Fill], str]], bars=BARS) -> list[dict]:
    """One row per bar from (ranked fills, truth) pairs."""
    base = [offer(ranked, bars[0]) for ranked, _ in requests]
    exact_at_base = sum(1 for f, (_, truth) in zip(base, requests, strict=True)
                        if f is not None and heldout.exact_match(f.text, truth))
    rows = []
    for bar in bars:
        shown, hidden_es = [], []
        for (ranked, truth), first in zip(requests, base, strict=True):
            f = offer(ranked, bar)
            if f is not None:
                shown.append((heldout.exact_match(f.text, truth),
                              heldout.edit_similarity(f.text, truth)))
            elif first is not None:
                hidden_es.append(heldout.edit_similarity(first.text, truth))
        rows.append({
            "bar": bar,
            "shown": len(shown) / len(requests),
            "exact_shown": statistics.mean(e for e, _ in shown) if shown else 0.0,
            "es_shown": statistics.mean(s for _, s in shown) if shown else 0.0,
            "es_hidden": statistics.mean(hidden_es) if hidden_es else 0.0,
            "exact_kept": sum(e for e, _ in shown),
            "exact_at_base": exact_at_base,
        })
    return rows


def typing_requests(engine: Engine, limit: int = 400, seed: int = 7, per_file: int = 16,
                    steps: int = 8) -> list[tuple[list[Fill], str]]:
    """(every ranked fill, truth) for held-out spans through the typing path, no bar applied."""
    examples = evaluate.load_examples(["heldout"], limit, seed, evaluate.BENCHMARKS,
                                      "default_model_cpu", per_file, engine.tokenizer)
    settings = Settings(confidence_threshold=0.0, automatic_confidence_threshold=0.0)
    return [(fim.fill_between(engine, ex.prefix, ex.suffix, settings, steps, fast=True).fills,
             ex.middle) for ex in examples]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=default_model_dir())
    p.add_argument("--limit", type=int, default=400)
    p.add_argument("--per-file", type=int, default=16)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="auto", help="the server's choice by default")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine.load(args.model, device="cpu", dtype=args.dtype)
    start = time.perf_counter()
    requests = typing_requests(engine, args.limit, args.seed, args.per_file, args.steps)
    defaults = Settings()
    print(f"model={args.model} dtype={pick_dtype(args.dtype, 'cpu') or 'float32'} "
          f"spans={len(requests)} seed={args.seed} steps={args.steps} "
          f"({time.perf_counter() - start:.0f} s); defaults: confidenceThreshold "
          f"{defaults.confidence_threshold}, automaticConfidenceThreshold "
          f"{defaults.automatic_confidence_threshold}")
    print("| bar | shown | exact (shown) | ES (shown) | ES (hidden) | exact offers kept |")
    print("|---|---|---|---|---|---|")
    for r in table(requests):
        print(f"| {r['bar']} | {r['shown']:.2f} | {r['exact_shown']:.3f} | {r['es_shown']:.3f} "
              f"| {r['es_hidden']:.3f} | {r['exact_kept']} / {r['exact_at_base']} |")


if __name__ == "__main__":
    main()
