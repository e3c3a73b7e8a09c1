"""Round-trip latency of textDocument/inlineCompletion through a real LSP client.

Starts ``coda-lsp --steps N`` as a subprocess, opens a Python file with about 1k tokens of
context around the cursor, and times sequential inline completion requests, each after typing
one more character of a line (the line is deleted when complete, and typed again). Prints
p50/p95; it is a measurement, not a test. ``--dtypes float32,bfloat16`` starts one server per
dtype, ``--rounds`` times in turn (so a busy machine slows each alike), and prints the ratio.

    python benchmarks/bench_lsp.py [--model DIR] [--steps 8] [--requests 40] [--dtypes D,D]
"""

from __future__ import annotations

import argparse
import asyncio
import os
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


async def run(args: argparse.Namespace, dtype: str | None = None) -> list[float]:
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
    await client.start_io(sys.executable, "-m", "coda_lsp", "--model", str(args.model),
                          "--steps", str(args.steps), "--device", args.device, *dtype_flag,
                          env=env)
    caps = types.ClientCapabilities(text_document=types.TextDocumentClientCapabilities(
        inline_completion=types.InlineCompletionClientCapabilities()))
    await client.initialize_async(types.InitializeParams(
        capabilities=caps,
        initialization_options={"coda": {"contextTokens": 1024, "confidenceThreshold": 0.0}}))
    client.initialized(types.InitializedParams())
    await asyncio.wait_for(ready.wait(), 600)

    text, cursor = context_source()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=URI, language_id="python", version=1, text=text)))
    times: list[float] = []
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
        if i >= args.warmup:
            times.append(elapsed)
            shown += bool(result and result.items)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    print(f"model={args.model} steps={args.steps} dtype={dtype or 'default'} context~1k tokens "
          f"requests={len(times)} threads={args.threads}")
    print(f"p50={statistics.median(times):.1f} ms  p95={percentile(times, 0.95):.1f} ms  "
          f"min={min(times):.1f} ms  max={max(times):.1f} ms  with items={shown}/{len(times)}")
    print("server stages (median ms): " + stage_medians(stage_lines[-len(times):]))
    return times


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
    p.add_argument("--model", type=Path, default=default_model_dir())
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the server")
    p.add_argument("--dtypes", default="", help="e.g. float32,bfloat16 (default: the server's)")
    p.add_argument("--rounds", type=int, default=1, help="servers per dtype, started in turn")
    p.add_argument("--device", default="auto", help="the server's --device (auto, cpu, cuda)")
    p.add_argument("-v", "--verbose", action="store_true", help="print the server's stage lines")
    args = p.parse_args()
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()] or [None]
    times: dict[str | None, list[float]] = {d: [] for d in dtypes}
    for _ in range(args.rounds):
        for dtype in dtypes:
            times[dtype] += asyncio.run(run(args, dtype))
    if len(dtypes) > 1:
        first = dtypes[0]
        print("all rounds: " + "  ".join(
            f"{d}: p50={statistics.median(t):.1f} p95={percentile(t, 0.95):.1f} ms" for d, t in
            times.items()))
        print(f"ratio to {first} (p50 / p95): " + "  ".join(
            f"{d}={statistics.median(t) / statistics.median(times[first]):.2f}/"
            f"{percentile(t, 0.95) / percentile(times[first], 0.95):.2f}"
            for d, t in times.items() if d != first))


if __name__ == "__main__":
    main()
