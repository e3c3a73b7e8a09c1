"""What typing's fast paths cost in quality: exact vs context cache vs cache + carry.

Types held-out lines one character at a time (the line's rest and everything after it is the
suffix, as when writing new code) and, at every keystroke, fills a 2-candidate canvas three
ways: the exact sampler (every step recomputes everything), the per-request context cache
(what typing used before), and the cache plus ContextCarry (keys/values carried across
keystrokes, what the server does now). Prints how often each fast path picks the same text
as the exact one, its edit similarity to the line actually written, and ms per keystroke, all
measured in this one run. A measurement, not a test.

    python benchmarks/bench_typing.py [--model DIR] [--files 4] [--lines 3] [--steps 8]
    python benchmarks/bench_typing.py --margins 16 8 4   # the carry's recomputed margin
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch

from coda_lsp.cli import default_model_dir
from coda_lsp.core import prompt
from coda_model import ContextCarry, SamplerConfig, infill, load_model, load_tokenizer
from training.data.heldout import edit_similarity, heldout_documents
from training.run import recipes

LENGTHS = [8, 16]


def typing_cases(files: int, lines: int, seed: int) -> list[tuple[str, str, str]]:
    """(text before the line, the line as written, text after it) from held-out files."""
    rng = random.Random(seed)
    docs = heldout_documents(recipes.get("default_model_cpu").data)
    cases = []
    for doc in rng.sample(docs, min(files, len(docs))):
        text = doc.text
        starts = [i + 1 for i, ch in enumerate(text) if ch == "\n"]
        good = [s for s in starts if 12 <= len(text[s:].split("\n", 1)[0].strip()) <= 48
                and s > 2000]
        for start in rng.sample(good, min(lines, len(good))):
            end = text.index("\n", start)
            body = text[start:end]
            indent = len(body) - len(body.lstrip())
            cases.append((text[: start + indent], body[indent:], text[end:]))
    return cases


def best(cands) -> str:
    return max(cands, key=lambda c: c.mean_confidence).text.split("\n", 1)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=default_model_dir())
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--lines", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--margins", type=int, nargs="+", default=[ContextCarry().margin],
                   help="carry modes, one per margin (prefix tokens before the first change "
                        "recomputed rather than carried)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model), load_tokenizer(args.model)
    modes = {"exact": SamplerConfig(steps=args.steps),
             "cache": SamplerConfig(steps=args.steps, context_cache=True)}
    margins = {f"carry-{m}" if len(args.margins) > 1 else "carry": m for m in args.margins}
    modes.update({mode: SamplerConfig(steps=args.steps, context_cache=True) for mode in margins})
    ms = {m: [] for m in modes}
    same = {m: 0 for m in modes}
    sim = {m: [] for m in modes}
    keystrokes = 0
    for before, line, after in typing_cases(args.files, args.lines, args.seed):
        carries = {mode: ContextCarry(margin=m) for mode, m in margins.items()}  # one per doc
        for k in range(len(line)):
            typed = before + line[:k]
            pr = prompt.build(tok, typed, after, LENGTHS, args.context, 64)
            texts = {}
            for mode, config in modes.items():
                ids, carry = pr.prefix_ids, carries.get(mode)
                if carry is not None:
                    ids = ids[carry.overhang(ids):]
                t0 = time.perf_counter()
                cands = infill(model, tok, ids, pr.suffix_ids, LENGTHS, config, carry=carry)
                ms[mode].append((time.perf_counter() - t0) * 1e3)
                texts[mode] = best(cands)
                sim[mode].append(edit_similarity(texts[mode].strip(), line[k:].strip()))
            for mode in modes:
                same[mode] += texts[mode] == texts["exact"]
            keystrokes += 1
    print(f"model={args.model} steps={args.steps} context={args.context} "
          f"keystrokes={keystrokes} threads={args.threads}")
    print(f"{'mode':8} {'same as exact':>14} {'ES vs written':>14} {'ms p50':>8} {'ms mean':>8}")
    for mode in modes:
        print(f"{mode:8} {same[mode] / keystrokes:>14.3f} {statistics.mean(sim[mode]):>14.3f} "
              f"{statistics.median(ms[mode]):>8.1f} {statistics.mean(ms[mode]):>8.1f}")
    exact = statistics.median(ms["exact"])
    print("speed-up vs exact (p50): " + "  ".join(
        f"{m}={exact / statistics.median(ms[m]):.2f}x" for m in modes if m != "exact"))


if __name__ == "__main__":
    main()
