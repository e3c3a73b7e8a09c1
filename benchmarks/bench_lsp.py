"""Round-trip latency of textDocument/inlineCompletion through a real LSP client.

Starts ``coda-lsp --steps N`` as a subprocess, opens a Python file with about 1k tokens of
context around the cursor, and times sequential inline completion requests, each after typing
one more character of a line (the line is deleted when complete, and typed again). Prints
p50/p95; it is a measurement, not a test. ``--dtypes float32,bfloat16`` starts one server per
dtype, ``--rounds`` times in turn (so a busy machine slows each alike), and prints the ratio;
``--model A --model B`` does the same across models (``bench_sizes.py`` builds them).  Each
server also reports its cold start (process start to the first completion shown) and its
peak resident memory (``VmHWM``, Linux).

    python benchmarks/bench_lsp.py [--model DIR]... [--steps 8] [--requests 40] [--dtypes D,D]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from coda_lsp.cli import default_model_dir

URI = "file:///bench/module.py"
TYPED = "total / count if count else 0.0"  # typed at the cursor, a character per request


def context_source(functions: int = 40) -> tuple[str, types.Position]:
    """About 1k tokens before the cursor and a few hundred after it."""
    parts = []
    for i in range(functions):
        parts.append(
            f"def helper_{i}(values, scale={i}):\n"
            f'    """Scale and sum the values (variant {i})."""\n'
            f"    total = 0\n"
            f"    for v in values:\n"
            f"        total += v * scale\n"
            f"    return total\n\n\n"
        )
    before = "".join(parts[: functions * 3 // 4])
    after = "".join(parts[functions * 3 // 4 :])
    head = before + "def mean(values):\n    count = len(values)\n    return "
    line = head.count("\n")
    column = len(head) - head.rfind("\n") - 1
    return head + "\n\n\n" + after, types.Position(line=line, character=column)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) in MB; None where /proc does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


async def run(args: argparse.Namespace, dtype: str | None = None,
              model: Path | None = None) -> dict:
    """One server: {"times": ms per request, "cold_s": start to first completion, "rss_mb"}."""
    model = model or args.model
    client = LanguageClient("bench", "0")
    ready = asyncio.Event()

    @client.feature("coda/status")
    def status(params):
        if params.state in ("ready", "error"):
            print(f"server: {params.state} {params.message}", file=sys.stderr)
            ready.set()

    stage_lines: list[str] = []

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def log_message(params: types.LogMessageParams):
        if "[inline-" in params.message:
            stage_lines.append(params.message)
            if args.verbose:
                print(params.message, file=sys.stderr)

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    dtype_flag = ["--dtype", dtype] if dtype else []
    spawned = time.perf_counter()
    await client.start_io(sys.executable, "-m", "coda_lsp", "--model", str(model),
                          "--steps", str(args.steps), "--device", args.device, *dtype_flag,
                          *shlex.split(getattr(args, "server_args", "")), env=env)
    caps = types.ClientCapabilities(text_document=types.TextDocumentClientCapabilities(
        inline_completion=types.InlineCompletionClientCapabilities()))
    await client.initialize_async(types.InitializeParams(
        capabilities=caps,
        initialization_options={"coda": {"contextTokens": 1024, "confidenceThreshold": 0.0,
                                            "automaticConfidenceThreshold": 0.0,
                                            **json.loads(getattr(args, "settings", "{}"))}}))
    initialized_s = time.perf_counter() - spawned
    client.initialized(types.InitializedParams())
    await asyncio.wait_for(ready.wait(), 600)
    ready_s = time.perf_counter() - spawned

    text, cursor = context_source()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=URI, language_id="python", version=1, text=text)))
    times: list[float] = []
    cold_s = None
    shown = 0
    typed = 0  # characters of TYPED at the cursor so far
    for i in range(args.warmup + args.requests):
        version = i + 2
        # type TYPED one character at a time; when it is all there, delete it in one edit
        at = types.Position(line=cursor.line, character=cursor.character + typed)
        if typed < len(TYPED):
            change, typed = types.TextDocumentContentChangePartial(
                range=types.Range(start=at, end=at), text=TYPED[typed]), typed + 1
        else:
            change, typed = types.TextDocumentContentChangePartial(
                range=types.Range(start=cursor, end=at), text=""), 0
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=version),
            content_changes=[change]))
        pos = types.Position(line=cursor.line, character=cursor.character + typed)
        t0 = time.perf_counter()
        result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI), position=pos,
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
        elapsed = (time.perf_counter() - t0) * 1e3
        if cold_s is None:
            cold_s = time.perf_counter() - spawned
        if i >= args.warmup:
            times.append(elapsed)
            shown += bool(result and result.items)
    rss_mb = peak_rss_mb(client._server.pid) if client._server else None
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    print(f"model={model} steps={args.steps} dtype={dtype or 'default'} context~1k tokens "
          f"requests={len(times)} threads={args.threads}")
    print(f"p50={statistics.median(times):.1f} ms  p95={percentile(times, 0.95):.1f} ms  "
          f"min={min(times):.1f} ms  max={max(times):.1f} ms  with items={shown}/{len(times)}")
    print("server stages (median ms): " + stage_medians(stage_lines[-len(times):]))
    rss = f"{rss_mb:.0f} MB" if rss_mb is not None else "unknown"
    print(f"cold start to first completion: {cold_s:.2f} s (initialize answered "
          f"{initialized_s:.2f} s, model ready {ready_s:.2f} s)  server peak RSS: {rss}")
    return {"times": times, "cold_s": cold_s, "rss_mb": rss_mb}


def stage_medians(lines: list[str]) -> str:
    """Median of each ``stage=12.3ms`` field in the server's log lines."""
    stages: dict[str, list[float]] = {}
    for line in lines:
        for field in line.split():
            name, _, value = field.partition("=")
            if value.endswith("ms"):
                stages.setdefault(name, []).append(float(value[:-2]))
    return "  ".join(f"{k}={statistics.median(v):.1f}" for k, v in stages.items())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, action="append",
                   help="model folder; repeat to compare models (default: the shipped one)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the server")
    p.add_argument("--dtypes", default="", help="e.g. float32,bfloat16 (default: the server's)")
    p.add_argument("--rounds", type=int, default=1, help="servers per dtype, started in turn")
    p.add_argument("--device", default="auto", help="the server's --device (auto, cpu, cuda)")
    p.add_argument("--server-args", default="", help="more coda-lsp arguments, e.g. --compile")
    p.add_argument("--settings", default="{}",
                   help='more server settings as JSON, e.g. \'{"alg": "maskgit_plus"}\'')
    p.add_argument("-v", "--verbose", action="store_true", help="print the server's stage lines")
    args = p.parse_args()
    models = args.model or [default_model_dir()]
    args.model = models[0]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()] or [None]
    compare(args, [(m, d) for m in models for d in dtypes])


def compare(args: argparse.Namespace, configs: list[tuple[Path, str | None]]) -> dict:
    """Every (model, dtype) once per round, in turn; pooled figures and ratios to the first."""
    runs: dict[tuple, list[dict]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for model, dtype in configs:
            runs[(model, dtype)].append(asyncio.run(run(args, dtype, model)))
    pooled = {c: {"times": [t for r in rs for t in r["times"]],
                  "cold_s": max(r["cold_s"] for r in rs),
                  "rss_mb": max((r["rss_mb"] or 0.0) for r in rs)} for c, rs in runs.items()}
    if len(configs) > 1:
        first = pooled[configs[0]]["times"]

        def name(c):
            return f"{c[0].name}{'/' + c[1] if c[1] else ''}"
        print("all rounds: " + "  ".join(
            f"{name(c)}: p50={statistics.median(v['times']):.1f} "
            f"p95={percentile(v['times'], 0.95):.1f} ms" for c, v in pooled.items()))
        print(f"ratio to {name(configs[0])} (p50 / p95): " + "  ".join(
            f"{name(c)}={statistics.median(v['times']) / statistics.median(first):.2f}/"
            f"{percentile(v['times'], 0.95) / percentile(first, 0.95):.2f}"
            for c, v in pooled.items() if c != configs[0]))
    return pooled


if __name__ == "__main__":
    main()
