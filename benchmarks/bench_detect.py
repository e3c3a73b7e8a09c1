"""How often HTTP's language detection names a real file's language, and what it costs.

An HTTP request with no ``language`` or ``filename`` (llama.vim's ``/infill``) has its
language detected from the text around the cursor (``coda_syntax.detect``); a wrong grammar
is worse than none, since the fill contract then refuses candidates for "syntax errors" of
another language. This walks the given folders for files of the languages the server has
grammars for, puts cursors at seeded places in the middle half of each (a few characters
into a line, the rest of the line not written yet) and prints, per language, how many
cursors were detected right, wrong (and as what) or not at all, and the milliseconds of a
line's first keystroke and of the next one on the same line.

    python benchmarks/bench_detect.py ~/src/some-repo /usr/include --files 25
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from coda_syntax import detect as detection  # noqa: E402
from coda_syntax.languages import resolve  # noqa: E402


def sources(folders: list[Path], per_language: int, rng: random.Random,
            min_bytes: int, max_bytes: int) -> list[tuple[Path, str]]:
    """Up to ``per_language`` files of each language, drawn at random from the folders."""
    found: dict[str, list[Path]] = collections.defaultdict(list)
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            try:
                if not path.is_file() or not min_bytes <= path.stat().st_size <= max_bytes:
                    continue
            except OSError:
                continue
            lang = resolve(uri=path.name)
            if lang is not None:
                found[lang.name].append(path)
    picked = []
    for name, paths in sorted(found.items()):
        rng.shuffle(paths)
        picked += [(path, name) for path in paths[:per_language]]
    return picked


def cursors(text: str, count: int, rng: random.Random) -> list[tuple[str, str]]:
    """(prefix, suffix) pairs: a few characters typed into a line of the middle half."""
    lines = text.splitlines(keepends=True)
    out = []
    for _ in range(count):
        i = rng.randrange(len(lines) // 4, len(lines) * 3 // 4)
        start = sum(map(len, lines[:i]))
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        typed = max(0, min(len(line.rstrip()) - indent, 5))
        end = start + len(line.rstrip("\r\n"))
        out.append((text[: start + indent + typed], text[end:]))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--files", type=int, default=25, help="files per language")
    p.add_argument("--cursors", type=int, default=3, help="cursors per file")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--min-bytes", type=int, default=10_000)
    p.add_argument("--max-bytes", type=int, default=60_000)
    args = p.parse_args()

    rng = random.Random(args.seed)
    tally: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    first_ms, next_ms = [], []
    for path, want in sources(args.folders, args.files, rng, args.min_bytes, args.max_bytes):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if text.count("\n") < 20:
            continue
        for prefix, suffix in cursors(text, args.cursors, rng):
            start = time.perf_counter()
            lang = detection.detect(prefix, suffix)
            first_ms.append(1e3 * (time.perf_counter() - start))
            start = time.perf_counter()
            detection.detect(prefix + "x", suffix)  # the next keystroke on the same line
            next_ms.append(1e3 * (time.perf_counter() - start))
            got = lang.name if lang else None
            tally[want]["right" if got == want else f"as {got}" if got else "none"] += 1
    if not first_ms:
        raise SystemExit("no files of a known language in those folders")
    print("| language | cursors | right | none | wrong (as) |\n|---|---|---|---|---|")
    for name, counts in sorted(tally.items()):
        wrong = {k[3:]: n for k, n in counts.items() if k.startswith("as ")}
        print(f"| {name} | {sum(counts.values())} | {counts['right']} | {counts['none']} | "
              f"{sum(wrong.values())} {dict(sorted(wrong.items()))} |")
    totals = sum(tally.values(), collections.Counter())
    print(f"\nall: {sum(totals.values())} cursors, right {totals['right']}, none "
          f"{totals['none']}, wrong {sum(n for k, n in totals.items() if k.startswith('as '))}")
    print(f"a line's first keystroke: median {statistics.median(first_ms):.1f} ms, max "
          f"{max(first_ms):.0f}; the next one on the line: median "
          f"{statistics.median(next_ms):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
