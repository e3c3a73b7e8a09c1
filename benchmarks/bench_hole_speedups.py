"""Issue 30's model-side speed-ups for "Fill this hole", each switched off and on in one run.

The server's own job per held-out hole (``bench_fill_hole_server.py``'s engine row: the
selection widened by ``fim.hole_span``, then ``fim.fill_span`` with the fill contract), run
once per variant, variants interleaved hole by hole in a rotating order so load on a shared
machine hits all of them alike. ``before`` has every lever off, ``after`` every lever on, and
each ``only:<lever>`` one lever alone. Prints p50/p95 ms per variant, the ratio to ``before``,
how often a variant offers the same fill as ``before`` (its first accepted fill, or none),
and exact match / edit similarity to the span's original text and the contract's accept rate.
A measurement, not a test.

    python benchmarks/bench_hole_speedups.py [--model DIR] [--holes 30] [--threads 2]
                                             [--levers] [--repeat 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as coda-lsp runs; before torch loads
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fill_hole import held_out_holes, hole_arguments, percentile  # noqa: E402

from coda_lsp.core import engine as engine_module  # noqa: E402
from coda_lsp.core import fim  # noqa: E402
from coda_lsp.core.settings import Settings  # noqa: E402
from coda_model import forward  # noqa: E402
from training.data import heldout  # noqa: E402

# lever -> (module, flag): the flag True is the new path, False the path before issue 30's work
LEVERS = {
    "rows": (forward, "ROWS_ON_DEMAND"),   # forwards skip candidate rows that commit nothing
    "shared": (engine_module, "SHARED_HOLE_CONTEXT"),   # one row's full pass: every row's context
}


@contextlib.contextmanager
def levers(on: set[str]):
    saved = {name: getattr(mod, flag) for name, (mod, flag) in LEVERS.items()}
    try:
        for name, (mod, flag) in LEVERS.items():
            setattr(mod, flag, name in on)
        yield
    finally:
        for name, (mod, flag) in LEVERS.items():
            setattr(mod, flag, saved[name])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    hole_arguments(p, holes=30)
    p.add_argument("--levers", action="store_true", help="also each lever alone")
    p.add_argument("--repeat", type=int, default=1, help="passes over the holes")
    args = p.parse_args()
    engine, examples = held_out_holes(args)
    settings = Settings()
    variants = {"before": set(), "after": set(LEVERS)}
    if args.levers and len(LEVERS) > 1:
        variants.update({f"only:{name}": {name} for name in LEVERS})
    jobs = []
    for ex in examples:
        doc = fim.open_document(ex.prefix + ex.middle + ex.suffix, "file:///hole", ex.language)
        span = fim.hole_span(doc, len(ex.prefix), len(ex.prefix) + len(ex.middle))
        if span is not None:
            truth = doc.text[doc.offset_of_byte(span.start):doc.offset_of_byte(span.end)]
            jobs.append((doc, span, truth))
    ms: dict[str, list[float]] = {v: [] for v in variants}
    top: dict[str, list[str | None]] = {v: [] for v in variants}
    ranked: dict[str, list[list[str]]] = {v: [] for v in variants}
    names = list(variants)
    with levers(variants["after"]):   # warm-up, not timed
        fim.fill_span(engine, jobs[0][0], jobs[0][1], settings.fill_hole_steps, settings)
    load = [os.getloadavg()[0]]
    for rep in range(args.repeat):
        for n, (doc, span, _) in enumerate(jobs):
            order = names[(n + rep) % len(names):] + names[:(n + rep) % len(names)]
            for name in order:
                with levers(variants[name]):
                    t0 = time.perf_counter()
                    out = fim.fill_span(engine, doc, span, settings.fill_hole_steps, settings)
                    ms[name].append((time.perf_counter() - t0) * 1e3)
                if rep == 0:
                    top[name].append(out.fills[0].text if out.fills else None)
                    ranked[name].append([f.text for f in out.decision.ranked])
        load.append(os.getloadavg()[0])
    print(f"model={args.model} holes={len(jobs)} x{args.repeat} steps={settings.fill_hole_steps} "
          f"threads={args.threads} dtype={engine.dtype_name} "
          f"load average (1 min) {min(load):.1f}-{max(load):.1f}")
    print(f"{'variant':14} {'p50 ms':>7} {'p95 ms':>7} {'p50 x':>6} {'p95 x':>6} {'same top':>8} "
          f"{'same all':>8} {'EM':>6} {'ES':>6} {'accepted':>8}")
    base = ms["before"]
    truths = [truth for _, _, truth in jobs]
    for name in names:
        same = statistics.mean(a == b for a, b in zip(top[name], top["before"], strict=True))
        same_all = statistics.mean(a == b for a, b in zip(ranked[name], ranked["before"],
                                                          strict=True))
        pairs = [(t or "", truth) for t, truth in zip(top[name], truths, strict=True)]
        em = statistics.mean(heldout.exact_match(t, truth) for t, truth in pairs)
        es = statistics.mean(heldout.edit_similarity(t, truth) for t, truth in pairs)
        accepted = statistics.mean(t is not None for t in top[name])
        print(f"{name:14} {percentile(ms[name], 0.5):>7.0f} {percentile(ms[name], 0.95):>7.0f} "
              f"{percentile(ms[name], 0.5) / percentile(base, 0.5):>6.2f} "
              f"{percentile(ms[name], 0.95) / percentile(base, 0.95):>6.2f} {same:>8.3f} "
              f"{same_all:>8.3f} {em:>6.3f} {es:>6.3f} {accepted:>8.3f}")
    per_hole = [a / b for a, b in zip(ms["after"], base, strict=True)]
    print(f"after / before per hole: median {statistics.median(per_hole):.2f}x, "
          f"total {sum(ms['after']) / sum(base):.2f}x")


if __name__ == "__main__":
    main()
