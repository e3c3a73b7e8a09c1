"""What batching fills across requests would gain on this machine: one denoising run over
B requests' canvases stacked as rows of one batch, against B runs one after another.

Each request is the HTTP server's fill: the shipped model, a real file's text as context
(its last ``--context`` tokens before a cursor and some after), the candidate lengths the
server tries (2 under --fast, all under the exact path), the server's sampler settings. The
rows of B requests are the same canvas repeated (the cost of a forward pass depends on the
shape, not the tokens). Prints ms per request alone, ms for the batch of B, and the gain
``B * alone / batch`` (1.0: batching buys nothing; B: free).

    python benchmarks/bench_batching.py                 # --fast and exact paths, B 1..16
    python benchmarks/bench_batching.py --batches 1 4 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from coda_lsp.core.engine import INLINE_CANDIDATES, Engine
from coda_lsp.core.settings import Settings
from coda_model import infill
from coda_model.quantize import full_precision

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "coda_lsp" / "core" / "engine.py"


def canvas(engine: Engine, context: int) -> tuple[list[int], list[int]]:
    ids = engine.tokenizer.encode(SOURCE.read_text(encoding="utf-8"), allow_special=False)
    cut = min(len(ids) - 64, context)
    return ids[:cut], ids[cut: cut + 64]


def timed(run, repeats: int) -> float:
    run()  # warm-up: allocations, int8 packing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def measure(engine: Engine, fast: bool, batches: list[int], context: int, steps: int,
            repeats: int) -> list[tuple[int, float, float]]:
    prefix, suffix = canvas(engine, context)
    lengths = [8, 16] if fast else [8, 16, 32, 64]
    lengths = lengths[:INLINE_CANDIDATES] if fast else lengths
    config = engine.sampler(replace(Settings(), steps=steps), steps, fast)
    precision = contextlib.nullcontext if fast else full_precision

    def run(rows: int):
        with torch.inference_mode(), precision():
            infill(engine.model, engine.tokenizer, prefix, suffix, lengths * rows, config)

    out = []
    for b in batches:  # alone measured again beside each batch: a busy box drifts
        alone = timed(lambda: run(1), repeats)
        together = timed(lambda b=b: run(b), repeats)
        out.append((b, alone, together))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "model"))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--context", type=int, default=512, help="prefix tokens")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--dtype", default=None, help="as coda-lsp's --dtype (default: its choice)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--paths", nargs="+", default=["fast", "exact"], choices=["fast", "exact"])
    args = p.parse_args()
    engine = Engine.load(args.model, dtype=args.dtype)
    dtype = next(engine.model.parameters()).dtype
    print(f"model {args.model} ({dtype}) on {engine.device}, {torch.get_num_threads()} threads, "
          f"context {args.context} tokens, {args.steps} steps")
    for fast in [path == "fast" for path in args.paths]:
        name = "--fast (2 lengths, context cached)" if fast else "exact (4 lengths, fp32)"
        print(f"\n{name}")
        print(f"{'B':>3} {'alone ms':>9} {'batch ms':>9} {'gain':>6}")
        for b, alone, together in measure(engine, fast, args.batches, args.context,
                                          args.steps, args.repeats):
            print(f"{b:>3} {alone:>9.1f} {together:>9.1f} {b * alone / together:>6.2f}")


if __name__ == "__main__":
    main()
