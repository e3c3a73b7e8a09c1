"""Which model size the CPU typing path can afford: ``bench_lsp.py`` across model shapes.

Latency depends on a model's shape, not its weights, so each candidate is the shipped model's
config with other sizes and random weights (the shipped tokenizer), saved in bf16 like a GPU
run's export.  Every shape runs through a real server in turn, ``--rounds`` times, so a busy
machine slows each alike; the table gives p50/p95 per keystroke at ``--steps``, cold start,
peak RSS and the bf16 size on disk, against the budget of issue 11 (p50 ≤ 100 ms, p95 ≤ 200 ms).

Two families: deeper at the shipped width (what ``training.gpu_run --grow-layers`` makes from
the shipped weights) and wider.

    python benchmarks/bench_sizes.py [--shapes d4,d8,d12,w384x6] [--requests 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_lsp import compare, percentile  # noqa: E402

from coda_lsp.cli import default_model_dir  # noqa: E402
from coda_model import CodaModel, load_model, save_model  # noqa: E402
from training.ship import TYPING_BUDGET_MS  # noqa: E402 -- one budget, also ship's

P50_BUDGET_MS, P95_BUDGET_MS = TYPING_BUDGET_MS["p50_ms"], TYPING_BUDGET_MS["p95_ms"]
# name -> (hidden, layers, query heads, kv heads, intermediate); head_dim stays 64.
SHAPES = {
    "d4": (256, 4, 4, 2, 768),      # the shipped model
    "d6": (256, 6, 4, 2, 768),
    "d8": (256, 8, 4, 2, 768),
    "d12": (256, 12, 4, 2, 768),
    "d16": (256, 16, 4, 2, 768),
    "w384x6": (384, 6, 6, 2, 1024),
    "w448x8": (448, 8, 7, 1, 1280),
    "w512x8": (512, 8, 8, 4, 1536),
    # what training.run.grow makes of the shipped model (--grow-width 384: MLP in proportion)
    "g384x6": (384, 6, 6, 2, 1152),
    "g384x8": (384, 8, 6, 2, 1152),
}


def build(name: str, base: Path, folder: Path) -> tuple[Path, int]:
    """A random-weight checkpoint of shape ``name`` beside the shipped tokenizer."""
    hidden, layers, heads, kv, ffn = SHAPES[name]
    config = replace(load_model(base).config, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=ffn)
    torch.manual_seed(0)
    model = CodaModel(config)
    for p in model.parameters():   # small random weights, like an initialised model
        torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else torch.nn.init.ones_(p)
    out = folder / name
    save_model(model.to(torch.bfloat16), out, tokenizer_dir=base)
    return out, sum(p.numel() for p in model.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="d4,d8,d12,w384x6,w512x8",
                   help=",".join(SHAPES))
    p.add_argument("--base", type=Path, default=default_model_dir())
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the servers")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--dtypes", default="", help="e.g. float32,int8: each shape served in each "
                   "(default: the server's choice for this CPU)")
    args = p.parse_args()
    args.verbose = False
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()] or [None]
    names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        p.error(f"unknown shapes {unknown}; known: {', '.join(SHAPES)}")
    with tempfile.TemporaryDirectory(prefix="coda_sizes_") as tmp:
        built = {n: build(n, args.base, Path(tmp)) for n in names}
        pooled = compare(args, [(folder, d) for folder, _ in built.values() for d in dtypes])
        rows = []
        for (name, (folder, n_params)), dtype in itertools.product(built.items(), dtypes):
            r = pooled[(folder, dtype)]
            p50, p95 = statistics.median(r["times"]), percentile(r["times"], 0.95)
            rows.append({"shape": name, "dtype": dtype or "auto",
                         "params_m": round(n_params / 1e6, 1),
                         "bf16_mib": round(2 * n_params / 2**20, 1), "p50_ms": round(p50, 1),
                         "p95_ms": round(p95, 1), "cold_s": round(r["cold_s"], 2),
                         "rss_mb": round(r["rss_mb"]), "fits": p50 <= P50_BUDGET_MS
                         and p95 <= P95_BUDGET_MS})
    print(f"\nsteps={args.steps} threads={args.threads} rounds={args.rounds} "
          f"requests={args.requests} (budget p50 ≤ {P50_BUDGET_MS:.0f}, "
          f"p95 ≤ {P95_BUDGET_MS:.0f} ms)")
    print("| shape | dtype | params | bf16 MiB | p50 ms | p95 ms | cold start s | peak RSS MB "
          "| fits |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['dtype']} | {r['params_m']} M | {r['bf16_mib']} | "
              f"{r['p50_ms']} | {r['p95_ms']} | {r['cold_s']} | {r['rss_mb']} | "
              f"{'yes' if r['fits'] else 'no'} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
