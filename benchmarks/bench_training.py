"""Training throughput on this CPU and the model-FLOPs utilisation it implies.

    python benchmarks/bench_training.py [--recipe tiny_cpu] [--steps 20] [--threads 1]

Measures, in the same process and thread count: (1) the fp32 matmul peak, as the best of a few
square and model-shaped GEMMs; (2) training tokens/s of the recipe's model on random tokens with
its objective (the sparse output head included, as in real runs).  MFU counts 6·N FLOPs per token
for the weight matmuls (N excludes the embedding lookup, includes the output head) plus the
attention score/value matmuls, all as if every position were projected by the head; the sparse
head makes the real FLOPs lower, so the "effective" figure can exceed what the GEMMs did.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from coda_model import CodaConfig, CodaModel
from training import recipes
from training.loop import build_optimizer, init_weights
from training.objective import corrupt, diffusion_loss_sparse


def matmul_peak(threads: int, seconds: float = 1.0) -> tuple[float, str]:
    torch.set_num_threads(threads)
    best, shape = 0.0, ""
    for m, k, n in [(1024, 1024, 1024), (2048, 2048, 2048), (2048, 256, 768), (2048, 768, 256),
                    (2048, 256, 8192)]:
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 5:
            a @ b
            reps += 1
        rate = 2 * m * k * n * reps / (time.perf_counter() - t0)
        if rate > best:
            best, shape = rate, f"{m}x{k}x{n}"
    return best, shape


def model_flops_per_token(config: CodaConfig, seq_len: int) -> float:
    h, layers = config.hidden_size, config.num_hidden_layers
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * config.intermediate_size
    n = layers * per_layer + config.vocab_size * h          # output head counted
    attention = layers * 2 * 2 * seq_len * q                 # QK^T and AV, forward
    return 6 * n + 3 * attention


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="tiny_cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=None, help="default: the recipe's")
    args = parser.parse_args(argv)

    recipe = recipes.get(args.recipe)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = args.vocab or recipe.tokenizer.vocab_size
    config = CodaConfig(vocab_size=vocab, mask_token_id=2, pad_token_id=0, **recipe.model)
    model = CodaModel(config)
    init_weights(model, 0.02)
    optimizer, scheduler = build_optimizer(model, recipe)
    B, L = recipe.train.batch_size, recipe.data.seq_len
    ids = torch.randint(10, vocab, (B, L))

    def step(i: int) -> None:
        c = corrupt(ids, recipe.objective, mask_id=2, pad_id=0, vocab_size=vocab,
                    generator=torch.Generator().manual_seed(i))
        loss, _ = diffusion_loss_sparse(model.hidden_states(c.input_ids), model.lm_head,
                                        c.targets, c.weights)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

    for i in range(3):
        step(i)
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(100 + i)
    elapsed = time.perf_counter() - t0
    tokens_per_s = B * L * args.steps / elapsed
    peak, peak_shape = matmul_peak(args.threads)
    achieved = tokens_per_s * model_flops_per_token(config, L)
    result = {
        "recipe": recipe.name, "threads": args.threads, "parameters": config.num_parameters,
        "batch": B, "seq_len": L, "steps": args.steps, "ms_per_step": 1000 * elapsed / args.steps,
        "tokens_per_s": tokens_per_s, "model_gflops_per_s": achieved / 1e9,
        "matmul_peak_gflops_per_s": peak / 1e9, "peak_shape": peak_shape,
        "mfu": achieved / peak,
    }
    print(json.dumps(result, indent=1))
    print(f"{recipe.name}: {tokens_per_s:,.0f} tokens/s on {args.threads} thread(s), "
          f"{achieved / 1e9:.1f} model GFLOP/s vs {peak / 1e9:.1f} matmul peak "
          f"({peak_shape}) → MFU {100 * achieved / peak:.1f}%")
    return result


if __name__ == "__main__":
    main()
