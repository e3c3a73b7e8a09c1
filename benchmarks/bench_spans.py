"""Incremental reparse + spans.choose on a 5,000-line Python file after a one-character edit.

Prints the median milliseconds (goal: <= 2 ms). Run: python benchmarks/bench_spans.py
"""

from __future__ import annotations

import statistics
import time

from coda_syntax import languages, spans

FUNCTION = '''def handler_{i}(request, scale=2):
    """Handle request {i}."""
    items = [item for item in request.items if item.valid]
    total = compute(items, scale)
    if total > {i}:
        log("large", total)
    return total * scale

'''


def make_source(lines: int = 5000) -> bytes:
    per = FUNCTION.count("\n")
    return "".join(FUNCTION.format(i=i) for i in range(lines // per + 1)).encode()[: lines * 60]


def main(rounds: int = 200) -> None:
    source = make_source()
    syn = spans.Syntax(languages.resolve("python"), source)
    cursor = source.index(b"compute(items", len(source) // 2) + len(b"compute(")
    timings = []
    for n in range(rounds):
        char = b"xy"[n % 2 : n % 2 + 1]
        started = time.perf_counter()
        syn.edit(cursor, cursor + (n > 0), char)  # type, then keep retyping one character
        span = spans.choose(syn, cursor + 1)
        timings.append((time.perf_counter() - started) * 1000)
    assert span.kind == "call.inner", span
    lines = syn.source.count(b"\n")
    print(f"lines={lines} rounds={rounds} "
          f"median={statistics.median(timings):.3f} ms p90="
          f"{statistics.quantiles(timings, n=10)[-1]:.3f} ms")


if __name__ == "__main__":
    main()
