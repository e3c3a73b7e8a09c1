"""Training throughput and the model-FLOPs utilisation it implies, on CPU or CUDA.

    python benchmarks/bench_training.py [--recipe tiny_cpu] [--device cpu|cuda] [--steps 20]
        [--precision auto|fp32|bf16] [--corruption auto|host|device] [--compile]
        [--batch N] [--seq-len L] [--set model.hidden_size=512 ...]

Measures, in the same process, thread count and device:
(1) the matmul peak in the training precision (bf16 on CUDA: a large square GEMM timed with
    synchronisation; on CPU the best of a few square and model-shaped GEMMs);
(2) the *bare* step: forward, sparse-head loss, backward, clip and optimizer step on one
    corrupted batch already on the device (what the loop could reach at best);
(3) the *loop* step: ``Trainer.train_step`` itself on a synthetic packed split (random tokens
    and syntax spans), so batch assembly and corruption are included, as in real runs.
Prints tokens/s of both, loop/bare, and MFU of each against (1).  MFU counts 6·N FLOPs per token
for the weight matmuls (N excludes the embedding lookup, includes the output head) plus the
attention score/value matmuls, as if every position were projected by the head; the sparse
head makes the real FLOPs lower, so the "effective" figure can exceed what the GEMMs did.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coda_model import CodaConfig  # noqa: E402
from training.data.packing import PackedSplit  # noqa: E402
from training.objective.masks import diffusion_loss_sparse  # noqa: E402
from training.run import recipes  # noqa: E402
from training.run.loop import Trainer  # noqa: E402

TOKENIZER = ROOT / "model"   # its ids (mask, pad) and vocabulary size; no text is tokenized


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 1.0
                ) -> tuple[float, str]:
    shapes = [(8192, 8192, 8192)] if device.type == "cuda" else \
        [(1024, 1024, 1024), (2048, 2048, 2048), (2048, 256, 768), (2048, 768, 256),
         (2048, 256, 8192)]
    best, label = 0.0, ""
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        sync(device)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / len(shapes):
            a @ b
            reps += 1
            if device.type == "cuda" and reps % 10 == 0:
                sync(device)
        sync(device)
        rate = 2 * m * k * n * reps / (time.perf_counter() - t0)
        if rate > best:
            best, label = rate, f"{m}x{k}x{n} {str(dtype).removeprefix('torch.')}"
    return best, label


def model_flops_per_token(config: CodaConfig, seq_len: int) -> float:
    h, layers = config.hidden_size, config.num_hidden_layers
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * config.intermediate_size
    n = layers * per_layer + config.vocab_size * h          # output head counted
    attention = layers * 2 * 2 * seq_len * q                 # QK^T and AV, forward
    return 6 * n + 3 * attention


def synthetic_split(rows: int, seq_len: int, vocab: int, max_span: int, seed: int = 0
                    ) -> PackedSplit:
    """Random token rows with about one syntax-like span per four tokens (CSR, as packed)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, vocab, (rows, seq_len), generator=g, dtype=torch.int32)
    per_row = max(1, seq_len // 4)
    start = torch.randint(1, seq_len - 1, (rows, per_row), generator=g)
    length = torch.randint(1, max_span + 1, (rows, per_row), generator=g)
    end = torch.minimum(start + length, torch.tensor(seq_len))
    spans = torch.stack([start, end], -1).view(-1, 2).to(torch.int32)
    ptr = torch.arange(rows + 1, dtype=torch.int64) * per_row
    return PackedSplit(ids, ptr, spans)


def timed(fn, steps: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        fn(i)
    sync(device)
    return time.perf_counter() - t0


def grown_copy(init: str, width: int, layers: int, folder: Path) -> str:
    """``init`` grown as ``training.gpu_run --grow-width/--grow-layers`` grows it, saved."""
    from coda_model import load_model, save_model
    from training.run.grow import grow_to
    save_model(grow_to(load_model(init), width, layers), folder, tokenizer_dir=init)
    return str(folder)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="tiny_cpu")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--corruption", default="auto", choices=("auto", "host", "device"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batch", type=int, help="default: the recipe's")
    parser.add_argument("--seq-len", type=int, help="default: the recipe's")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="recipe overrides, e.g. model.hidden_size=512")
    parser.add_argument("--grow-width", type=int, default=0,
                        help="a warm-start recipe: bench its init model widened to N first")
    parser.add_argument("--grow-layers", type=int, default=0,
                        help="a warm-start recipe: bench its init model deepened to N first")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    recipe = recipes.override(recipes.get(args.recipe), args.set)
    L = args.seq_len or recipe.data.seq_len
    B = args.batch or recipe.train.batch_size
    init = None   # a warm-start recipe (model={}) benchmarks the shape of its init model
    if recipe.init_from and not recipe.model:
        init = recipe.init_from if Path(recipe.init_from).is_absolute() else \
            str(ROOT / recipe.init_from)
    recipe = replace(
        recipe, init_from=init, data=replace(recipe.data, seq_len=L),
        tokenizer=replace(recipe.tokenizer, path=str(TOKENIZER)),
        model={**recipe.model, "max_position_embeddings": max(L, 512)},
        train=replace(recipe.train, device=args.device, batch_size=B, grad_accum=1,
                      precision=args.precision, corruption=args.corruption,
                      compile=args.compile, threads=args.threads, eval_every=0,
                      checkpoint_every_seconds=0.0))
    vocab = 8192
    split = synthetic_split(max(4 * B, 64), L, vocab, recipe.data.max_span_tokens)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        if init and (args.grow_width or args.grow_layers):   # the shape gpu_run will train
            recipe = replace(recipe, init_from=grown_copy(init, args.grow_width,
                                                          args.grow_layers, Path(tmp) / "grown"))
        trainer = Trainer(recipe, tmp, train_split=split, eval_split=None)
        model, config = trainer.model, trainer.config

        # (2) the bare step: one corrupted batch resident on the device
        g = torch.Generator().manual_seed(1)
        batch = trainer._batch(split, list(range(B)), recipe.objective, g)
        batch = tuple(t.to(device) for t in batch)

        def bare(i: int) -> None:
            with trainer.autocast():
                loss, _ = diffusion_loss_sparse(trainer._hidden(batch[0]), model.lm_head,
                                                batch[1], batch[2])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)

        def loop(i: int) -> None:
            trainer.train_step()

        t_warm = timed(bare, args.warmup, device) + timed(loop, args.warmup, device)
        bare_s = timed(bare, args.steps, device)
        loop_s = timed(loop, args.steps, device)
        # bf16 peak if the step runs in bf16, else fp32
        peak, peak_shape = matmul_peak(device, torch.bfloat16 if trainer.bf16 else torch.float32)
    per_token = model_flops_per_token(config, L)
    tokens = B * L * args.steps
    bare_tps, loop_tps = tokens / bare_s, tokens / loop_s
    result = {
        "recipe": recipe.name, "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "threads": args.threads, "torch": torch.__version__,
        "precision": "bf16" if trainer.bf16 else "fp32",
        "corruption": "device" if trainer.on_device else "host", "compile": args.compile,
        "parameters": config.num_parameters, "batch": B, "seq_len": L, "steps": args.steps,
        "warmup_s": t_warm, "bare_tokens_per_s": bare_tps, "loop_tokens_per_s": loop_tps,
        "loop_over_bare": loop_tps / bare_tps, "matmul_peak_gflops_per_s": peak / 1e9,
        "peak_shape": peak_shape, "bare_mfu": bare_tps * per_token / peak,
        "loop_mfu": loop_tps * per_token / peak, "tokens_per_s": loop_tps,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{recipe.name} on {result['device_name']} ({result['precision']}, "
          f"{result['corruption']} corruption{', compiled' if args.compile else ''}, "
          f"{config.num_parameters / 1e6:.1f}M params, {B}x{L}): loop {loop_tps:,.0f} tokens/s "
          f"= {100 * loop_tps / bare_tps:.0f}% of the bare step's {bare_tps:,.0f}; "
          f"MFU {100 * result['loop_mfu']:.1f}% (bare {100 * result['bare_mfu']:.1f}%) of a "
          f"{peak / 1e12:.2f} TFLOP/s matmul peak ({peak_shape})")
    return result


if __name__ == "__main__":
    main()
