"""Which mask counts a keystroke should try: typing fills on unseen repositories.

A typing fill (``--fast``, the language server's ghost text, HTTP ``/infill``) denoises one
canvas row per candidate length and offers the best ranked. Each row costs a keystroke's
compute, and under load the rows of every client share two cores, so a row must earn its
place. This types at cursors in the middle of real lines of the unseen repositories
(``python -m training.unseen fetch`` puts them in its cache; none was trained on): the text
before the cursor is the prefix, everything after the line the suffix (writing new code),
the rest of the line the truth. Each way of choosing the lengths fills the same cursors
through ``fim.fill_between`` (the server's span, sampler, one-line rule, ranking and
confidence bar) and prints its edit similarity to the truth, exact matches, seconds, and the
paired difference against the engine's choice with its standard error.

    python benchmarks/bench_typing_lengths.py                 # 100 cursors per repository
    python benchmarks/bench_typing_lengths.py --per-repo 40 --seed 11
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from coda_lsp.core import engine as engine_module  # noqa: E402
from coda_lsp.core import fim  # noqa: E402
from coda_lsp.core.settings import Settings  # noqa: E402
from training.data.heldout import edit_similarity  # noqa: E402
from training.data.unseen import default_cache, python_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOW = engine_module.typing_lengths
CHOICES = {  # name -> the lengths a keystroke tries, from its span's (shortest first)
    "engine": NOW,
    "two shortest": lambda lengths, choices=1: list(lengths[:2]),
    "shortest": lambda lengths, choices=1: list(lengths[:1]),
    "longest": lambda lengths, choices=1: list(lengths[-1:]),
}


def code_lines(folder: Path, shortest: int, longest: int) -> list[tuple[str, int, int]]:
    """(file text, line start, line end) of the repository's code lines past a file's first
    500 characters, ``shortest``-``longest`` characters stripped, comments left out."""
    lines = []
    for _, text in python_files(folder):
        start = 0
        while (end := text.find("\n", start)) >= 0:
            body = text[start:end].strip()
            if start > 500 and shortest <= len(body) <= longest and not body.startswith("#"):
                lines.append((text, start, end))
            start = end + 1
    return lines


def cursors(cache: Path, per_repo: int, seed: int) -> list[tuple[str, str, str, str]]:
    """(repository, text before the cursor, text after its line, rest of the line)."""
    rng = random.Random(seed)
    out = []
    for folder in sorted(p for p in cache.iterdir() if p.is_dir()):
        lines = code_lines(folder, 12, 60)
        for text, start, end in rng.sample(lines, min(per_repo, len(lines))):
            body = text[start:end]
            indent = len(body) - len(body.lstrip())
            at = rng.randint(indent + 2, indent + max(2, (len(body) - indent) * 2 // 3))
            out.append((folder.name, text[: start + at], text[end:], body[at:]))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "model"))
    p.add_argument("--cache", type=Path, default=default_cache())
    p.add_argument("--per-repo", type=int, default=100)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--ways", nargs="+", default=list(CHOICES), choices=list(CHOICES))
    args = p.parse_args()
    if not args.cache.is_dir():
        raise SystemExit(f"no unseen repositories in {args.cache}: run `python -m "
                         "training.unseen fetch` first (it downloads the pinned sdists)")
    engine = engine_module.Engine.load(args.model)
    settings = Settings()
    cases = cursors(args.cache, args.per_repo, args.seed)
    repos = sorted({c[0] for c in cases})
    print(f"{len(cases)} cursors in {len(repos)} repositories ({', '.join(repos)}), "
          f"seed {args.seed}, {settings.steps} steps")
    scores: dict[str, list[float]] = {}
    try:
        for way in args.ways:
            engine_module.typing_lengths = CHOICES[way]
            sims, exact, start = [], 0, time.perf_counter()
            for _, prefix, suffix, truth in cases:
                outcome = fim.fill_between(engine, prefix, suffix, settings, settings.steps,
                                           uri="file:///unseen/typing.py", fast=True,
                                           retry=False)
                shown = [f for f in outcome.decision.ranked
                         if f.confidence >= settings.confidence_threshold]
                text = shown[0].text.strip() if shown else ""
                sims.append(edit_similarity(text, truth.strip()))
                exact += text == truth.strip()
            scores[way] = sims
            print(f"{way:>13}: ES {statistics.mean(sims):.4f}, exact {exact}/{len(sims)}, "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
    finally:
        engine_module.typing_lengths = NOW
    base = scores.get("engine")
    for way, sims in scores.items():
        if base is not None and way != "engine":
            diffs = [a - b for a, b in zip(sims, base, strict=True)]
            print(f"{way} - engine: {statistics.mean(diffs):+.4f} ± "
                  f"{statistics.stdev(diffs) / len(diffs) ** 0.5:.4f} (paired s.e.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
