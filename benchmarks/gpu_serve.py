"""Serving on a GPU (issue 14), measured in one run: CoDA-1.7B-shaped random weights in bf16.

Needs only the repository and the fixture folder that scripts/gpu_serve_prep.sh packs (the real
tokenizer and the golden fixtures, unpacked by scripts/gpu_serve_check.sh). Sections, each
guarded so one failure does not stop the rest; one JSON line per result, a table at the end,
everything also in $OUT/gpu_serve.json:
  golden   the golden fixtures on the device (fp32, TF32 off), in its default layout
  window   one cached window step: dynamic eager (torch.cat context) vs static eager vs CUDA graph
  equal    graph vs eager tokens (must be equal), static vs dynamic agreement, device reads
  latency  infill: exact / cache / carry / threshold, and a hole fill (3 lengths, 64 steps)
  lsp      benchmarks/bench_lsp.py through the real server (p50/p95)
  profile  one window step's kernels: how many per step, and the costliest (torch.profiler)
  compiled the layers through torch.compile: compile time, window step, full pass, infill
  lsp_compiled  bench_lsp.py with the server's --compile

    python benchmarks/gpu_serve.py --fixture DIR                 # on the GPU machine
    python benchmarks/gpu_serve.py --fixture DIR --tiny --device cpu --ctx 128 --requests 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

from coda_model import (
    CodaConfig,
    CodaModel,
    ContextCarry,
    SamplerConfig,
    denoise,
    forward,
    graphs,
    infill,
    load_model,
    load_tokenizer,
    save_model,
)
from coda_model.forward import ContextCache
from coda_model.infill import build_batch

ROOT = Path(__file__).resolve().parents[1]
RESULTS: dict = {}
T0 = time.time()


def emit(key: str, value) -> None:
    RESULTS[key] = value
    print(json.dumps({key: value}), flush=True)
    out = Path(os.environ.get("OUT", tempfile.gettempdir())) / "gpu_serve.json"
    out.write_text(json.dumps(RESULTS, indent=1))


def section(name: str, fn, args) -> None:
    if time.time() - T0 > args.budget:
        emit(name, "skipped: out of time")
        return
    start = time.time()
    try:
        fn(args)
    except Exception:
        emit(name + "_error", traceback.format_exc()[-2500:])
    emit(name + "_s", round(time.time() - start, 1))


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, reps: int, warmup: int = 2) -> float:
    """Median milliseconds of fn() over reps runs, after warmup runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(times), 2)


class Ids:
    """The special ids of the real tokenizer; latency runs decode nothing."""

    mask_id, pad_id, eos_id = 151669, 151643, 151645

    def decode(self, ids) -> str:
        return ""


def model_config(tiny: bool) -> CodaConfig:
    shape = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=128)
    if tiny:  # the same vocabulary and head layout, a sliver of the width and depth
        shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    return CodaConfig(vocab_size=151936, tie_word_embeddings=False, mask_token_id=Ids.mask_id,
                      pad_token_id=Ids.pad_id, **shape)


MODEL: dict = {}


def big_model(args) -> CodaModel:
    if "m" not in MODEL:
        torch.manual_seed(0)
        with torch.device(args.device):
            model = CodaModel(model_config(args.tiny))
        for p in model.parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=0.02)
        dtype = torch.bfloat16 if args.device == "cuda" else torch.float32  # CPUs: no bf16 matmul
        MODEL["m"] = model.to(dtype).eval()
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        emit("model", {"params_M": round(model.config.num_parameters / 1e6),
                       "weights_GB": round(size / 1e9, 2)})
    return MODEL["m"]


def prompt(ctx: int, seed: int = 1) -> tuple[list[int], list[int]]:
    ids = torch.randint(0, 151000, (ctx,), generator=torch.Generator().manual_seed(seed)).tolist()
    return ids[: ctx * 3 // 4], ids[ctx * 3 // 4 :]


# ------------------------------------------------------------------------------ golden
def golden(args) -> None:
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    fixture = Path(args.fixture)
    cases = json.loads((fixture / "golden.json").read_text())
    tok = load_tokenizer(fixture)
    model = load_model(fixture, device=args.device, dtype=torch.float32)
    total, failed, detail = 0, 0, []
    with torch.inference_mode():
        for case in cases["forward"]:
            total += 1
            logits = model(torch.tensor([case["input_ids"]], device=args.device))[0].float().cpu()
            ok = logits.argmax(-1).tolist() == case["argmax"]
            ok &= torch.allclose(torch.logsumexp(logits, -1), torch.tensor(case["logsumexp"]),
                                 atol=5e-4)
            ok &= torch.allclose(logits[:, :32], torch.tensor(case["logits_first_32"]), atol=5e-4)
            failed += not ok
        for case in cases["infill"] + cases["complete"]:
            total += 1
            ids = list(case["input_ids"]) + [tok.mask_id] * case.get("max_new_tokens", 0)
            config = SamplerConfig(steps=case["steps"], alg=case["alg"],
                                   alg_temp=case["alg_temp"], temperature=case["temperature"],
                                   eps=case["eps"], top_k=case.get("top_k"),
                                   top_p=case.get("top_p"))
            out = denoise(model, torch.tensor([ids], device=args.device), config,
                          mask_id=tok.mask_id)
            if out[0].tolist() != case["output_ids"]:
                failed += 1
                detail.append(f"{case['alg']} steps={case['steps']}")
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    emit("golden", f"{total - failed}/{total} " + "; ".join(detail[:3]))


# ------------------------------------------------------------------------------ window step
def loaded_cache(args, ctx: int, hole: int) -> tuple[ContextCache, torch.Tensor]:
    """A context cache after its full pass (context keys/values in the window's buffers) for
    one hole of ``hole`` tokens in ``ctx`` tokens of context, and the batch's ids."""
    prefix, suffix = prompt(ctx)
    ids, _ = build_batch(prefix, suffix, [hole], Ids.mask_id, Ids.pad_id, args.device)
    cache = ContextCache(big_model(args), ids, None, len(prefix), [hole],
                         SamplerConfig(context_cache=True))
    cache(ids, ids == Ids.mask_id)
    return cache, ids


def window(args) -> None:
    model = big_model(args)
    rows = {}
    with torch.inference_mode():
        for ctx, hole in ((args.ctx, 16), (args.ctx, 48), (4 * args.ctx, 16)):
            cache, ids = loaded_cache(args, ctx, hole)
            a, b = cache.start, cache.stop
            step = cache.window
            full = timed(lambda ids=ids: model.hidden_states(ids), args.device, args.reps)
            positions = torch.arange(a, b, device=args.device)

            def dynamic(cache=cache, a=a, b=b, positions=positions, ids=ids):
                h = model.hidden_states(ids[:, a:b], positions=positions,
                                        kv_context=cache.context_kv)
                return model.lm_head(h)

            step.use_graph = False
            eager_logits = step(ids[:, a:b]).clone()
            eager = timed(lambda step=step, ids=ids, a=a, b=b: step(ids[:, a:b]), args.device,
                          args.reps)
            row = {"full_pass_ms": full, "window_dynamic_eager_ms": timed(dynamic, args.device,
                                                                          args.reps),
                   "window_static_eager_ms": eager, "bucket": [step.width, step.context]}
            if args.device == "cuda":
                step.use_graph = True
                graph_logits = step(ids[:, a:b]).clone()
                row["window_graph_ms"] = timed(lambda step=step, ids=ids, a=a, b=b:
                                               step(ids[:, a:b]), args.device, args.reps)
                row["graph_vs_eager_max_abs_logit_diff"] = round(
                    float((graph_logits.float() - eager_logits.float()).abs().max()), 4)
            rows[f"ctx{ctx}_hole{hole}"] = row
            emit("window", rows)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    emit("weights_read_floor_ms", round(weights / 3.0e9, 2))  # ~3.0 TB/s measured on the H100


# ------------------------------------------------------------------------------ profile
def profile(args) -> None:
    """Where a window step's time goes: kernels per step and the costliest kernels (the graph
    step measured 6.5 ms against a 1.35 ms weight-read floor, issue 14)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    cuda = args.device == "cuda"
    with torch.inference_mode():
        cache, ids = loaded_cache(args, args.ctx, 16)
        step, window_ids = cache.window, ids[:, cache.start:cache.stop]
        step.use_graph = False
        timed(lambda: step(window_ids), args.device, 1)
        reps = 5
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with torch_profile(activities=activities) as prof:
            for _ in range(reps):
                step(window_ids)
            sync(args.device)
    rows = []
    for e in prof.key_averages():
        us = (e.device_time_total if cuda else e.self_cpu_time_total) / reps
        if us > 0 and (not cuda or e.device_type.name == "CUDA"):
            rows.append((us, e.count / reps, e.key[:70]))
    rows.sort(reverse=True)
    emit("profile_window_step", {
        "kernels_per_step" if cuda else "ops_per_step": round(sum(r[1] for r in rows)),
        "busy_us_per_step": round(sum(r[0] for r in rows)),
        "top": [{"us": round(us), "calls": round(n, 1), "name": name}
                for us, n, name in rows[:15]]})


# ------------------------------------------------------------------------------ equality
def equal(args) -> None:
    """Graph vs eager (same static shapes): the same tokens. Static vs dynamic shapes: the
    same arithmetic up to kernel choice; reported as agreement. Device reads per request."""
    model = big_model(args)
    prefix, suffix = prompt(args.ctx, seed=2)
    configs = {"cache8": SamplerConfig(steps=8, context_cache=True),
               "cache32": SamplerConfig(steps=32, context_cache=True),
               "tau": SamplerConfig(steps=16, context_cache=True, threshold=0.9),
               "hole64": SamplerConfig(steps=64, context_cache=True)}
    out = {}
    with torch.inference_mode():
        for name, config in configs.items():
            for lengths in ([16], [16, 32], [8, 16, 32])[: 1 if args.tiny else 3]:
                runs = {}
                for mode in ("graph", "eager", "dynamic"):
                    graphs.CUDA_GRAPHS = mode == "graph"
                    graphs.STATIC_ON_CUDA = graphs.STATIC_ON_CPU = mode != "dynamic"
                    graphs._steps.pop(model, None)
                    runs[mode] = [c.ids for c in infill(model, Ids(), prefix, suffix, lengths,
                                                        config)]
                graphs.CUDA_GRAPHS = graphs.STATIC_ON_CUDA = True
                graphs.STATIC_ON_CPU = args.device == "cpu"
                key = f"{name}_{'-'.join(map(str, lengths))}"
                same = sum(a == b for r, s in zip(runs["eager"], runs["dynamic"], strict=True)
                           for a, b in zip(r, s, strict=False))
                size = sum(min(len(r), len(s)) for r, s in zip(runs["eager"], runs["dynamic"],
                                                               strict=True))
                out[key] = {"graph_equals_eager": runs["graph"] == runs["eager"],
                            "static_vs_dynamic_agree": round(same / max(1, size), 3)}
        emit("equal", out)
        emit("graph_equals_eager_all", all(v["graph_equals_eager"] for v in out.values()))
        if args.device == "cuda":  # device reads per request: the same for 8 and 64 steps
            reads = {}
            for steps in (8, 64):
                config = SamplerConfig(steps=steps, context_cache=True, skip_idle_steps=False)
                infill(model, Ids(), prefix, suffix, [16, 32], config)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        infill(model, Ids(), prefix, suffix, [16, 32], config)
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                reads[f"steps{steps}"] = sum("synchroniz" in str(w.message) for w in caught)
            emit("device_syncs_per_request", reads)


# ------------------------------------------------------------------------------ latency
def latency(args) -> None:
    model = big_model(args)
    prefix, suffix = prompt(args.ctx)
    rows = []

    def fill(lengths, config, prefix=prefix, carry=None):
        return infill(model, Ids(), prefix, suffix, lengths, config, carry=carry)

    with torch.inference_mode():
        for lengths, steps in (([16], 8), ([16, 32], 8), ([16], 32), ([16, 32], 32)):
            row = {"ctx": args.ctx, "lengths": lengths, "steps": steps}
            for name, config in (
                    ("exact", SamplerConfig(steps=steps)),
                    ("cache", SamplerConfig(steps=steps, context_cache=True)),
                    ("cache_tau0.9", SamplerConfig(steps=steps, context_cache=True,
                                                   threshold=0.9))):
                reps, warm = (3, 1) if name == "exact" else (args.reps, 2)  # exact: slow
                row[name] = timed(lambda c=config, n=lengths: fill(n, c), args.device, reps, warm)
            if steps == 8:  # typing: one token more per request, the context carried
                for forced in (False, True):  # on a GPU the carry is skipped unless forced
                    forward.CARRY_ON_ACCELERATORS = forced
                    carry, typed = ContextCarry(), list(prefix)
                    gen = torch.Generator().manual_seed(3)

                    def keystroke(carry=carry, typed=typed, gen=gen, n=lengths):
                        typed.append(int(torch.randint(0, 151000, (1,), generator=gen)))
                        fill(n, SamplerConfig(steps=8, context_cache=True), typed, carry)
                    row["carry_forced" if forced else "carry"] = timed(keystroke, args.device,
                                                                       args.reps + 4)
                forward.CARRY_ON_ACCELERATORS = False
            rows.append(row)
            emit("latency", rows)
        hole = SamplerConfig(steps=64, context_cache=True)
        emit("fill_hole_3_lengths_64_steps_ms",
             timed(lambda: fill([16, 32, 48], hole), args.device, args.reps))
        emit("fill_hole_3_lengths_64_steps_exact_ms",
             timed(lambda: fill([16, 32, 48], SamplerConfig(steps=64)), args.device, 1, 1))


# ------------------------------------------------------------------------------ compiled
def compiled(args) -> None:
    """The layers through torch.compile (coda_model.compiled): compilation time, then the
    window step (graph), the full pass, typing infill (repeated and growing prompt), the hole
    fill, and how often its tokens equal the eager layers' (fused bf16 rounds differently)."""
    from coda_model.compiled import compile_layers, uncompile_layers
    model = big_model(args)
    prefix, suffix = prompt(args.ctx)
    typing = SamplerConfig(steps=8, context_cache=True)
    cases = ([16], [16, 32])
    reps, warm = (1, 0) if args.tiny else (args.reps, 2)  # a rehearsal runs each row once

    def fill(lengths, config, prefix=prefix):
        return [c.ids for c in infill(model, Ids(), prefix, suffix, lengths, config)]

    with torch.inference_mode():
        eager = {tuple(n): fill(n, typing) for n in cases}
        graphs._steps.pop(model, None)  # steps captured with the eager layers
        compile_layers(model)
        try:
            start = time.time()
            got = {tuple(n): fill(n, typing) for n in cases}  # compiles each variant
            sync(args.device)
            emit("compile_s", round(time.time() - start, 1))
            same = sum(a == b for n in eager for a, b in zip(eager[n], got[n], strict=True))
            row = {"tokens_equal_eager": f"{same}/{sum(len(v) for v in eager.values())}"}
            cache, ids = loaded_cache(args, args.ctx, 16)
            step, window_ids = cache.window, ids[:, cache.start:cache.stop]
            row["window_step_ms"] = timed(lambda: step(window_ids), args.device, reps, warm)
            row["full_pass_ms"] = timed(lambda: model.hidden_states(ids), args.device, reps, warm)
            for lengths in cases:
                name = "-".join(map(str, lengths))
                row[f"infill8_{name}_ms"] = timed(lambda n=lengths: fill(n, typing), args.device,
                                                  reps, warm)
                typed = list(prefix)
                gen = torch.Generator().manual_seed(3)

                def keystroke(typed=typed, gen=gen, n=lengths):
                    typed.append(int(torch.randint(0, 151000, (1,), generator=gen)))
                    fill(n, typing, typed)
                row[f"keystroke8_{name}_ms"] = timed(keystroke, args.device,
                                                     reps + 4 * (not args.tiny), warm)
            row["fill_hole_3_lengths_64_steps_ms"] = timed(
                lambda: fill([16, 32, 48], SamplerConfig(steps=64, context_cache=True)),
                args.device, reps, warm)
            emit("compiled", row)
        finally:
            uncompile_layers(model)
            graphs._steps.pop(model, None)


# ------------------------------------------------------------------------------ server
def lsp(args, server_args: str = "", tag: str = "") -> None:
    model = big_model(args)
    folder = Path(tempfile.mkdtemp()) / "coda-shaped"
    start = time.time()
    save_model(model, folder, tokenizer_dir=args.fixture)
    emit("lsp_save_s", round(time.time() - start, 1))
    MODEL.clear()
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for steps in args.lsp_steps:
        start = time.time()
        run = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "bench_lsp.py"), "--model", str(folder),
             "--steps", str(steps), "--device", args.device, "--requests", str(args.requests),
             "--threads", "4", f"--server-args={server_args}"], capture_output=True, text=True,
            env=env, cwd=ROOT, timeout=max(30, args.budget + 60 - (time.time() - T0)))
        emit(f"lsp{tag}_steps{steps}", {"rc": run.returncode,
                                        "wall_s": round(time.time() - start),
                                        "out": run.stdout[-700:], "err": run.stderr[-800:]})


def lsp_compiled(args) -> None:
    """bench_lsp.py again, the server started with --compile (its warm-up compiles)."""
    lsp(args, "--compile", "_compiled")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fixture", help="tokenizer + golden.json + the tiny reference checkpoint "
                   "(for the golden and lsp sections)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a tiny shape (rehearsal on a CPU)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--ctx", type=int, default=1024, help="context tokens around the hole")
    p.add_argument("--requests", type=int, default=30, help="bench_lsp requests")
    p.add_argument("--lsp-steps", type=int, nargs="*", default=[8, 32])
    p.add_argument("--budget", type=float, default=300, help="seconds; later sections skip")
    p.add_argument("--sections",
                   default="golden,window,equal,latency,lsp,profile,compiled,lsp_compiled")
    args = p.parse_args()
    if args.device == "cpu":  # rehearse the accelerator's code paths, eagerly
        forward.DENSE_ON_CPU = graphs.STATIC_ON_CPU = True
    info = {"torch": torch.__version__, "device": args.device, "tiny": args.tiny}
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    emit("env", info)
    for name in args.sections.split(","):
        section(name, globals()[name], args)
    emit("total_s", round(time.time() - T0, 1))
    summary()


def summary() -> None:
    """The figures the issue's acceptance names, last (the reply shows the end of the output)."""
    r = RESULTS
    lines = [f"golden: {r.get('golden')}",
             f"graph == eager tokens (all cases): {r.get('graph_equals_eager_all')}",
             f"device syncs per request (8 vs 64 steps): {r.get('device_syncs_per_request')}"]
    for key, row in (r.get("window") or {}).items():
        lines.append(f"window {key}: " + ", ".join(f"{k}={v}" for k, v in row.items()))
    for row in r.get("latency") or []:
        lines.append("infill " + ", ".join(f"{k}={v}" for k, v in row.items()))
    lines.append(f"fill hole (3 lengths, 64 steps): {r.get('fill_hole_3_lengths_64_steps_ms')} ms"
                 f" (exact {r.get('fill_hole_3_lengths_64_steps_exact_ms')} ms)")
    if isinstance(r.get("compiled"), dict):
        lines.append(f"compiled (compile {r.get('compile_s')} s): " + ", ".join(
            f"{k}={v}" for k, v in r["compiled"].items()))
    for key in sorted(k for k in r if k.startswith("lsp") and "_steps" in k):
        out = r[key].get("out", "") if isinstance(r[key], dict) else str(r[key])
        lines.append(f"{key}: " + " | ".join(x for x in out.splitlines() if "p50" in x))
    prof = r.get("profile_window_step")
    if isinstance(prof, dict):
        lines.append("window step profile: " + ", ".join(
            f"{k}={v}" for k, v in prof.items() if k != "top") + "; top: " + "; ".join(
            f"{t['name']} {t['us']} us x{t['calls']}" for t in prof["top"][:6]))
    errors = [k for k in r if k.endswith("_error")]
    lines.append(f"errors: {errors or 'none'}; total {r.get('total_s')} s")
    print("\n== summary ==\n" + "\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
