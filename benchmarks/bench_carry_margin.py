"""What the typing carry's margin costs in quality: keystrokes typed on unseen repositories.

A keystroke's fill takes the previous keystroke's context keys/values (``ContextCarry``) and
recomputes only the last ``margin`` prefix tokens before the first change, the new text and
the hole. A smaller margin is less to compute in every keystroke's first pass (a batch of
16 typing clients spends about a third of its time there) and a coarser approximation. This
types real lines of the unseen repositories (``python -m training.unseen fetch``; none was
trained on) one character at a time through the engine's typing path (``fim.fill_between
--fast`` with the document's carry key, as the servers call it): each line from two
characters past its indent for ``--keys`` keystrokes, everything after the line the suffix.
Every way fills the same keystrokes; it prints edit similarity of the shown fill to the
rest of the line, exact matches, how often it shows what the margin of the engine's default
shows, ms per keystroke, and paired differences against that default with standard errors.

    python benchmarks/bench_carry_margin.py                       # margins 16 8 4, no carry
    python benchmarks/bench_carry_margin.py --lines 10 --margins 16 8
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_typing_lengths import code_lines  # noqa: E402

from coda_lsp.core import fim  # noqa: E402
from coda_lsp.core.engine import Engine  # noqa: E402
from coda_lsp.core.settings import Settings  # noqa: E402
from training.data.heldout import edit_similarity  # noqa: E402
from training.data.unseen import default_cache  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def typed_lines(cache: Path, per_repo: int, keys: int, seed: int):
    """(repository, text before the line's typed part, the part typed, text after the line)."""
    rng = random.Random(seed)
    out = []
    for folder in sorted(p for p in cache.iterdir() if p.is_dir()):
        lines = code_lines(folder, keys + 6, 70)
        for text, start, end in rng.sample(lines, min(per_repo, len(lines))):
            body = text[start:end]
            at = start + len(body) - len(body.lstrip()) + 2
            out.append((folder.name, text[:at], text[at:end], text[end:]))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "model"))
    p.add_argument("--cache", type=Path, default=default_cache())
    p.add_argument("--lines", type=int, default=20, help="lines per repository")
    p.add_argument("--keys", type=int, default=12, help="keystrokes typed per line")
    p.add_argument("--margins", type=int, nargs="+", default=[16, 8, 4])
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    if not args.cache.is_dir():
        raise SystemExit(f"no unseen repositories in {args.cache}: run `python -m "
                         "training.unseen fetch` first (it downloads the pinned sdists)")
    engine = Engine.load(args.model)
    default = engine.carry_margin
    settings = Settings()
    cases = typed_lines(args.cache, args.lines, args.keys, args.seed)
    repos = sorted({c[0] for c in cases})
    print(f"{len(cases)} lines x {args.keys} keystrokes in {len(repos)} repositories "
          f"({', '.join(repos)}), seed {args.seed}, {settings.steps} steps, default margin "
          f"{default}")
    ways = {f"margin {m}": m for m in args.margins} | {"no carry": None}
    sims: dict[str, list[float]] = {}
    shown: dict[str, list[str]] = {}
    for way, margin in ways.items():
        engine.carry_margin = margin or default
        sims[way], shown[way], exact, spent = [], [], 0, 0.0
        for n, (_, before, typed, after) in enumerate(cases):
            key = None if margin is None else f"file:///unseen/{way}/{n}.py"
            for k in range(args.keys):
                start = time.perf_counter()
                outcome = fim.fill_between(engine, before + typed[:k], after, settings,
                                           settings.steps, uri="file:///unseen/typing.py",
                                           fast=True, retry=False, carry_key=key)
                spent += time.perf_counter() - start
                ranked = [f for f in outcome.decision.ranked
                          if f.confidence >= settings.confidence_threshold]
                text = ranked[0].text.strip() if ranked else ""
                truth = typed[k:].strip()
                sims[way].append(edit_similarity(text, truth))
                shown[way].append(text)
                exact += text == truth
            if key is not None:
                engine.forget(key)
        count = len(sims[way])
        print(f"{way:>10}: ES {statistics.mean(sims[way]):.4f}, exact {exact}/{count}, "
              f"{1e3 * spent / count:.1f} ms a keystroke", flush=True)
    base = f"margin {default}"
    if base in sims:
        for way in ways:
            if way == base:
                continue
            diffs = [a - b for a, b in zip(sims[way], sims[base], strict=True)]
            same = sum(a == b for a, b in zip(shown[way], shown[base], strict=True))
            print(f"{way} - {base}: {statistics.mean(diffs):+.4f} ± "
                  f"{statistics.stdev(diffs) / len(diffs) ** 0.5:.4f} (paired s.e.), "
                  f"the same fill {same / len(diffs):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
