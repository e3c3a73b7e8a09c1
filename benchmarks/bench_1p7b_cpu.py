"""CoDA-1.7B-shaped hole fills on a CPU: load time, memory and latency per serving dtype.

Writes a random checkpoint with the release's shapes (hidden 2048, 28 layers, 16 query / 8 KV
heads of 128, MLP 6144, vocab 151936, tied embeddings; bf16, one safetensors shard per layer
so writing it never holds the whole model) ONCE into --cache, then for each dtype starts a
fresh Python process that loads it (cold load seconds, peak RSS from getrusage, steady RSS
after loading) and fills through the context-cached ``infill`` with one candidate: a one-line
hole (512 context tokens, 16 masks, 8 steps) and a block (32 masks, 16 steps). Prints one
table and the CPU's bf16/int8 flags. Random weights: the timings and memory are the real
model's, the text is not. A measurement, not a test; on a shared box compare ratios.

    python benchmarks/bench_1p7b_cpu.py [--cache DIR] [--dtypes int8,bfloat16,int8-narrow-head]
                                        [--threads 2] [--repeats 3]

``int8`` quantizes the tied lm_head too (quantize.TIED_HEAD, the default since it is faster);
``int8-narrow-head`` multiplies by the bf16 table instead (quantize.TIED_HEAD = "narrow").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

SHAPES = dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16,
              num_key_value_heads=8, head_dim=128, intermediate_size=6144, vocab_size=151936,
              tie_word_embeddings=True)
FIXTURE = Path(os.environ.get("CODA_SHARED", Path(__file__).resolve().parents[2] / "shared")
               ) / "fixtures" / "coda-reference-tiny"
DEFAULT_CACHE = Path.home() / ".cache" / "coda-lsp" / "bench-1p7b-random"
GOALS = {"load_s": 20.0, "peak_gb": 4.0, "steady_gb": 3.0, "line_p50_s": 1.5, "block_p50_s": 3.0}


def write_checkpoint(cache: Path) -> Path:
    """The random 1.7B-shaped folder, written once; a finished folder has its index last."""
    from safetensors.torch import save_file

    from coda_model.checkpoint import INDEX, TOKENIZER_FILES

    if (cache / INDEX).is_file():
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    config = json.loads((FIXTURE / "config.json").read_text())
    config.update(SHAPES)
    (cache / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (FIXTURE / name).is_file():
            (cache / name).write_bytes((FIXTURE / name).read_bytes())
    h, inter, kv = SHAPES["hidden_size"], SHAPES["intermediate_size"], 8 * 128
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * 0.02).to(torch.bfloat16)

    weight_map = {}
    shard = "model-embed.safetensors"
    save_file({"model.embed_tokens.weight": rand(SHAPES["vocab_size"], h),
               "model.norm.weight": torch.ones(h, dtype=torch.bfloat16)}, str(cache / shard),
              metadata={"format": "pt"})
    weight_map.update({"model.embed_tokens.weight": shard, "model.norm.weight": shard})
    for i in range(SHAPES["num_hidden_layers"]):
        p = f"model.layers.{i}."
        layer = {p + "self_attn.q_proj.weight": rand(2048, h),
                 p + "self_attn.k_proj.weight": rand(kv, h),
                 p + "self_attn.v_proj.weight": rand(kv, h),
                 p + "self_attn.o_proj.weight": rand(h, 2048),
                 p + "self_attn.q_norm.weight": torch.ones(128, dtype=torch.bfloat16),
                 p + "self_attn.k_norm.weight": torch.ones(128, dtype=torch.bfloat16),
                 p + "mlp.gate_proj.weight": rand(inter, h),
                 p + "mlp.up_proj.weight": rand(inter, h),
                 p + "mlp.down_proj.weight": rand(h, inter),
                 p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
                 p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16)}
        shard = f"model-layer{i:02d}.safetensors"
        save_file(layer, str(cache / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(layer, shard))
    (cache / INDEX).write_text(json.dumps({"weight_map": weight_map}))
    return cache


def rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def measure(folder: Path, dtype: str, threads: int, repeats: int) -> dict:
    """In this (fresh) process: load, then time the two fills."""
    from coda_model import ContextCarry, SamplerConfig, infill, load_model, load_tokenizer, quantize

    torch.set_num_threads(threads)
    if dtype == "int8-narrow-head":
        quantize.TIED_HEAD = "narrow"
    start = time.perf_counter()
    model = load_model(folder, dtype="int8" if dtype.startswith("int8") else dtype)
    load_s = time.perf_counter() - start
    steady = rss_gb()
    tok = load_tokenizer(folder)
    gen = torch.Generator().manual_seed(1)
    context = torch.randint(1000, 100000, (512,), generator=gen).tolist()
    prefix, suffix = context[:384], context[384:]

    def fill(masks: int, steps: int) -> float:
        config = SamplerConfig(steps=steps, context_cache=True)
        t = time.perf_counter()
        infill(model, tok, prefix, suffix, [masks], config, carry=ContextCarry())
        return time.perf_counter() - t

    fill(16, 8)   # warm-up: first-call allocations and kernel choice
    line = [fill(16, 8) for _ in range(repeats)]
    block = [fill(32, 16) for _ in range(max(1, repeats - 1))]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"dtype": dtype, "load_s": load_s, "peak_gb": peak, "steady_gb": steady,
            "line_p50_s": statistics.median(line), "block_p50_s": statistics.median(block)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--dtypes", default="int8,bfloat16,int8-narrow-head")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.cache, args.child, args.threads, args.repeats)))
        return
    from coda_model.quantize import cpu_flags

    t = time.perf_counter()
    folder = write_checkpoint(args.cache)
    print(f"checkpoint: {folder} (ready in {time.perf_counter() - t:.0f} s)", flush=True)
    flags = cpu_flags()
    wanted = ("avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni")
    print("cpu flags:", " ".join(f for f in wanted if f in flags) or "none of",
          "| cores:", os.cpu_count(), "| threads:", args.threads, "| torch",
          torch.__version__, flush=True)
    rows = []
    for dtype in args.dtypes.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", dtype, "--cache", str(folder),
                              "--threads", str(args.threads), "--repeats", str(args.repeats)],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{dtype}: failed\n{out.stderr[-2000:]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {dtype}: {rows[-1]}", flush=True)
    cols = list(GOALS)
    print(f"{'dtype':<10}" + "".join(f"{c:>13}" for c in cols))
    print(f"{'goal':<10}" + "".join(f"{'<= ' + str(GOALS[c]):>13}" for c in cols))
    for row in rows:
        cells = "".join(f"{row[c]:>12.2f}{'*' if row[c] > GOALS[c] else ' '}" for c in cols)
        print(f"{row['dtype']:<10}{cells}")
    print("* misses the goal (issue 29). GB = 2^30 bytes; peak RSS from getrusage of the "
          "loading process; steady = RSS right after loading.")


if __name__ == "__main__":
    main()
