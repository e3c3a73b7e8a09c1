"""``python scripts/ship_model.py RUN_OUT``: ``python -m training.ship`` judged by what users
see: the run ships only if its held-out fills through the server's own path are no worse
(the probe only warns; twice it passed runs whose fills were not better); its typing latency
(bench_lsp.py) is recorded and warned about past the budget, and so is the share of typing
offers the automatic bar lets through (bench_threshold.py: a new model's confidences may need a
new bar). About 9 minutes on 2 cores. A separate script because ``training`` may not import
the server."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from coda_lsp.core.fim import best_fill  # noqa: E402
from training.ship import main  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def typing_latency(folder: Path, requests: int = 30, spans: int = 400) -> dict:
    """bench_lsp.py's typing run (steps 8, one server thread) on a model folder, and what
    bench_threshold.py's held-out ``spans`` show at the default automatic bar."""
    import argparse
    import asyncio
    import statistics

    import torch

    sys.path.insert(0, str(BENCHMARKS))
    from bench_lsp import percentile, run
    from bench_threshold import table, typing_requests

    from coda_lsp.core.engine import Engine
    from coda_lsp.core.settings import Settings

    args = argparse.Namespace(model=folder, steps=8, requests=requests, warmup=3, threads=1,
                              device="cpu", verbose=False, server_args="")
    r = asyncio.run(run(args, None, folder))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        filled = typing_requests(Engine.load(folder, device="cpu"), limit=spans)
    finally:
        torch.set_num_threads(threads)
    bar = Settings().automatic_confidence_threshold
    [row] = table(filled, bars=(0.0, bar))[1:]
    return {"p50_ms": round(statistics.median(r["times"]), 1),
            "p95_ms": round(percentile(r["times"], 0.95), 1), "cold_s": round(r["cold_s"], 2),
            "rss_mb": round(r["rss_mb"] or 0),
            "automatic_bar": {k: round(v, 3) if isinstance(v, float) else v
                              for k, v in row.items()} | {"spans": len(filled)}}


if __name__ == "__main__":
    sys.exit(main(server_fill=best_fill, typing_latency=typing_latency))
