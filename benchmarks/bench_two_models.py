"""Typing latency beside a busy fill model: its own worker vs one worker shared by both.

The typing model (default: the shipped one) serves ghost text while a bigger fill model
(random weights of the given shape, the shipped tokenizer) fills holes back to back. Three
runs of the same typing requests, measured in this one process:

  idle    typing alone (no fill work)
  own     typing on its own worker, the fill model busy on its own (what the server does)
  shared  typing queued on the fill model's worker (one worker for both: what it would be
          without core.models)

Prints p50/p95 per run and the ratios to idle. A measurement, not a test; on a busy box
compare the ratios, not the milliseconds.

    python benchmarks/bench_two_models.py [--typing DIR] [--fill-hidden 768]
        [--fill-layers 8] [--requests 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import torch

from coda_lsp.core.engine import FillJob
from coda_lsp.core.models import Models, ModelSpec, Role, Served, load_engine, shipped_model_dir
from coda_lsp.core.settings import Settings
from coda_model import CodaConfig, CodaModel, save_model
from coda_model.checkpoint import read_config

PREFIX = '''import os


def walk(root):
    """Every file under root."""
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            found.append(os.path.join(folder, name))
    return found


def sizes(root):
    total = 0
    for path in walk(root):
        total += '''
SUFFIX = "\n    return total\n"


def big_fill_model(typing_dir: Path, hidden: int, layers: int, out: Path) -> Path:
    """A random model of the given shape with the typing model's tokenizer (same vocabulary)."""
    vocab = read_config(typing_dir).vocab_size
    config = CodaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=3 * hidden,
                        num_hidden_layers=layers, num_attention_heads=hidden // 64,
                        num_key_value_heads=max(1, hidden // 128), head_dim=64,
                        mask_token_id=2, pad_token_id=0, max_position_embeddings=1024)
    torch.manual_seed(0)
    return save_model(CodaModel(config), out, tokenizer_dir=typing_dir)


def typing_job(i: int, settings: Settings) -> FillJob:
    # a keystroke: the prefix grows by one character each time, as when typing
    text = PREFIX + "len(path)"[: i % 9]
    return FillJob(text, SUFFIX, (8, 16), settings.steps, settings, fast=True,
                   carry_key="doc", inline=True)


def hole_job(settings: Settings) -> FillJob:
    return FillJob(PREFIX, SUFFIX, (8, 16, 24), settings.fill_hole_steps, settings)


async def typing_latencies(typing: Served, worker: Served | None, fill: Served | None,
                           settings: Settings, requests: int) -> list[float]:
    """Typing requests one after another (on ``worker``'s queue), while ``fill`` (if any)
    runs hole fills back to back on its own queue."""
    stop = False

    async def keep_fill_busy() -> None:
        n = 0
        while not stop:
            n += 1
            engine = fill.engine
            await fill.scheduler.submit(f"hole{n}",
                                        lambda s, e=engine: e.fill(hole_job(settings), s))

    busy = asyncio.ensure_future(keep_fill_busy()) if fill is not None else None
    await asyncio.sleep(0.2)  # the first hole fill is running
    out = []
    queue = (worker or typing).scheduler
    for i in range(requests):
        start = time.perf_counter()
        await queue.submit("typing",
                           lambda s, i=i: typing.engine.fill(typing_job(i, settings), s))
        out.append((time.perf_counter() - start) * 1e3)
    stop = True
    if busy is not None:
        await busy
    return out


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def run(args) -> None:
    torch.set_num_threads(args.threads)
    settings = Settings(steps=args.steps, fill_hole_steps=args.fill_steps)
    with tempfile.TemporaryDirectory() as tmp:
        big = big_fill_model(args.typing, args.fill_hidden, args.fill_layers, Path(tmp) / "big")
        models = Models(load_engine)
        typing = models.load(ModelSpec(str(args.typing), "cpu", args.dtype))
        fill = models.load(ModelSpec(str(big), "cpu", args.dtype))
        models.install(Role.TYPING, typing)
        models.install(Role.FILL, fill)
        params = sum(p.numel() for p in fill.engine.model.parameters()) / 1e6
        start = time.perf_counter()
        fill.engine.fill(hole_job(settings))
        hole_ms = (time.perf_counter() - start) * 1e3
        print(f"typing {args.typing.name} ({typing.describe()['dtype']}), fill model "
              f"{params:.0f} M parameters ({fill.describe()['dtype']}), one hole fill "
              f"{hole_ms:.0f} ms; {args.requests} typing requests per run, "
              f"{args.threads} torch thread(s)")
        await typing_latencies(typing, None, None, settings, 3)  # warm
        runs = {
            "idle": await typing_latencies(typing, None, None, settings, args.requests),
            "own": await typing_latencies(typing, None, fill, settings, args.requests),
            "shared": await typing_latencies(typing, fill, fill, settings, args.requests),
        }
        models.close()
    idle50 = statistics.median(runs["idle"])
    print(f"{'run':8} {'p50 ms':>8} {'p95 ms':>8} {'p50 / idle':>11}")
    for name, values in runs.items():
        p50 = statistics.median(values)
        print(f"{name:8} {p50:8.1f} {percentile(values, 95):8.1f} {p50 / idle50:11.2f}")
    own, shared = (statistics.median(runs[k]) for k in ("own", "shared"))
    print(f"shared / own p50: {shared / own:.1f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--typing", type=Path, default=shipped_model_dir())
    p.add_argument("--fill-hidden", type=int, default=768)
    p.add_argument("--fill-layers", type=int, default=8)
    p.add_argument("--steps", type=int, default=8, help="typing steps")
    p.add_argument("--fill-steps", type=int, default=32, help="hole-fill steps")
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="float32")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()

