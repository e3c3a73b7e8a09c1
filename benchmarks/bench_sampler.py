"""Infill latency of the exact and approximate sampler paths, measured in one run on this CPU.

For each model, context size, middle size and step count: ms per infill and forward passes for
exact (reference schedule, idle steps skipped, lm_head at masked positions only), cached
(context K/V computed once) and cached+threshold (commit every token above tau), plus the token
agreement of each approximate path with the exact one, and the speedup ratios.

    python benchmarks/bench_sampler.py                    # tiny random + CoDA-1.7B-shaped bf16
    python benchmarks/bench_sampler.py --model model/     # a real checkpoint on real code
                                                          # (held-out stdlib files)
    python benchmarks/bench_sampler.py --quick            # a small grid
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from coda_model import CodaConfig, CodaModel, SamplerConfig, load_model, load_tokenizer
from coda_model.forward import ContextCache, FullForward
from coda_model.infill import build_batch
from coda_model.sampler import denoise


class RandomIds:
    """Stands in for a tokenizer when the model is random: only the named ids matter."""

    def __init__(self, vocab: int) -> None:
        self.mask_id, self.pad_id, self.eos_id = vocab - 1, vocab - 2, vocab - 3

    def decode(self, ids):
        return ""


def context_tokens(tok, n: int, vocab: int, gen: torch.Generator) -> list[int]:
    """Real code for a real tokenizer (held-out stdlib files), random ids for a random model."""
    if isinstance(tok, RandomIds):
        return torch.randint(0, vocab - 3, (n,), generator=gen).tolist()
    stdlib = Path(os.__file__).parent
    text = "".join((stdlib / name).read_text() for name in ("heapq.py", "copy.py", "ftplib.py"))
    ids = tok.encode(text, allow_special=False)
    start = int(torch.randint(0, len(ids) - n, (1,), generator=gen))
    return ids[start : start + n]


def random_model(config: CodaConfig, dtype: torch.dtype) -> CodaModel:
    torch.manual_seed(0)
    model = CodaModel(config)
    for p in model.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.02)
    return model.to(dtype).eval()


def tiny_config() -> CodaConfig:
    return CodaConfig(vocab_size=8192, hidden_size=256, intermediate_size=768,
                      num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=64)


def coda_1p7b_config(layers: int) -> CodaConfig:
    return CodaConfig(vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                      num_hidden_layers=layers, num_attention_heads=16, num_key_value_heads=8,
                      head_dim=128)


def run(model, tok, prefix, suffix, middle, config):
    ids, key_mask = build_batch(prefix, suffix, [middle], tok.mask_id, tok.pad_id, "cpu")
    if config.context_cache:
        forward = ContextCache(model, ids, None, len(prefix), [middle], config)
    else:
        forward = FullForward(model)
    start = time.perf_counter()
    out = denoise(model, ids, config, mask_id=tok.mask_id, forward=forward)
    ms = (time.perf_counter() - start) * 1000
    passes = forward.passes + getattr(forward, "window_passes", 0)
    return out[0, len(prefix) : len(prefix) + middle], ms, passes


def bench(name, model, tok, contexts, middles, steps_list, tau, repeats, vocab):
    print(f"\n## {name}")
    print("| ctx | mid | steps | exact ms (passes) | cached ms (passes) | cached+tau ms (passes)"
          " | cache x | cache+tau x | agree cache | agree cache+tau |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    gen = torch.Generator().manual_seed(1)
    for ctx in contexts:
        for middle in middles:
            tokens = context_tokens(tok, ctx, vocab, gen)
            prefix, suffix = tokens[: ctx * 3 // 4], tokens[ctx * 3 // 4 :]
            for steps in steps_list:
                paths = {
                    "exact": SamplerConfig(steps=steps),
                    "cached": SamplerConfig(steps=steps, context_cache=True),
                    "tau": SamplerConfig(steps=steps, context_cache=True, threshold=tau),
                }
                results = {}
                for key, config in paths.items():
                    times = []
                    for _ in range(repeats):
                        out, ms, passes = run(model, tok, prefix, suffix, middle, config)
                        times.append(ms)
                    results[key] = (out, statistics.median(times), passes)
                exact_out, exact_ms, exact_passes = results["exact"]
                agree = {k: (results[k][0] == exact_out).float().mean().item() for k in results}
                print(f"| {ctx} | {middle} | {steps} | {exact_ms:.0f} ({exact_passes}) "
                      f"| {results['cached'][1]:.0f} ({results['cached'][2]}) "
                      f"| {results['tau'][1]:.0f} ({results['tau'][2]}) "
                      f"| {exact_ms / results['cached'][1]:.1f} "
                      f"| {exact_ms / results['tau'][1]:.1f}"
                      f" | {agree['cached']:.0%} | {agree['tau']:.0%} |", flush=True)


def matmul_peak(dtype, n=1024, repeats=5):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def per_layer_ms(model, ctx, dtype):
    layer = model.model.layers[0]
    x = torch.randn(1, ctx, model.config.hidden_size, dtype=dtype)
    from coda_model.modeling import rotary_tables
    cos, sin = rotary_tables(torch.arange(ctx), model.config.head_dim, model.config.rope_theta,
                             dtype)
    with torch.inference_mode():
        layer(x, cos, sin)
        start = time.perf_counter()
        layer(x, cos, sin)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a checkpoint folder instead of the random models")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tau", type=float, default=0.9)
    parser.add_argument("--big-layers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell (median)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="for --model")
    parser.add_argument("--skip-big", action="store_true", help="no CoDA-1.7B-shaped model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    contexts = [512] if args.quick else [512, 2048]
    middles = [16] if args.quick else [16, 32, 64]
    steps_list = [8] if args.quick else [8, 16, 32]
    print(f"threads={args.threads}; matmul peak fp32 {matmul_peak(torch.float32):.0f} GFLOP/s, "
          f"bf16 {matmul_peak(torch.bfloat16):.0f} GFLOP/s")
    with torch.inference_mode():
        if args.model:
            tok = load_tokenizer(args.model)
            for dtype in args.dtypes.split(","):
                model = load_model(args.model, dtype=dtype)
                bench(f"{args.model} ({dtype})", model, tok, contexts, middles, steps_list,
                      args.tau, args.repeats, tok.vocab_size)
            if args.skip_big:
                return
        else:
            config = tiny_config()
            for dtype in (torch.float32, torch.bfloat16):
                model = random_model(config, dtype)
                bench(f"tiny random ({config.num_parameters / 1e6:.1f}M params, {dtype})",
                      model, RandomIds(config.vocab_size), contexts, middles, steps_list,
                      args.tau, args.repeats, config.vocab_size)
        big = coda_1p7b_config(args.big_layers)
        model = random_model(big, torch.bfloat16)
        for ctx in contexts:
            ms = per_layer_ms(model, ctx, torch.bfloat16)
            print(f"\nCoDA-1.7B-shaped layer, bf16, context {ctx}: {ms:.0f} ms per layer per full"
                  f" pass; x28 layers = {ms * 28 / 1000:.1f} s per full pass")
        bench(f"CoDA-1.7B-shaped random, {args.big_layers} layer(s), bf16", model,
              RandomIds(big.vocab_size), [contexts[-1]], [32], [8], args.tau, 1, big.vocab_size)


if __name__ == "__main__":
    main()
