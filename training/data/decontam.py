"""Decontamination against HumanEval-Infilling without shipping the benchmark.

The benchmark (prompts, canonical solutions, suffixes) lives in ``../shared`` and does not
travel to the GPU machine, so the repository carries a small artifact instead:
``training/data/decontam_hashes/humaneval_infilling.json`` holds the hashes of every n-gram of
code tokens (identifiers, numbers, single punctuation characters; whitespace and layout ignored) of
the 164 reconstructed problems (prompt + canonical solution + suffix), minus generic n-grams that
would flag ordinary code: those of two or more different problems, those with no identifier
(``0 , 1 , 2 , 3 , ...``) and those that also occur in a background corpus of ordinary code (the
CPython standard library, tests included, of the machine that builds the artifact: it predates
the benchmark).  A training file sharing any remaining n-gram with the benchmark is dropped.
Hashes are one-way and the file is ~0.3 MB; nothing of the benchmark's text is committed.

    python -m training.decontam --benchmark ../shared/benchmarks/humaneval-infilling \\
        --background /usr/lib/python3.11 \\
        --out training/data/decontam_hashes/humaneval_infilling.json
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import re
import sys
from array import array
from pathlib import Path

ARTIFACT = Path(__file__).resolve().parent / "decontam_hashes" / "humaneval_infilling.json"
TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]")
N = 13
FILES = ("HumanEval-SingleLineInfilling.jsonl.gz", "HumanEval-MultiLineInfilling.jsonl.gz",
         "HumanEval-RandomSpanInfillingLight.jsonl.gz")


_TOKEN_HASH: dict[str, int] = {}
_MASK = (1 << 64) - 1
_BASE = 0x100000001B3   # FNV prime: odd, so the rolling sum mixes every position


def _token_hash(token: str) -> int:
    h = _TOKEN_HASH.get(token)
    if h is None:
        h = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(),
                           "little")
        if len(_TOKEN_HASH) < 1_000_000:
            _TOKEN_HASH[token] = h
    return h


def ngram_hashes(text: str, n: int = N) -> set[int]:
    """64-bit hashes of every run of ``n`` code tokens (stable across machines and runs):
    Σ blake2b₈(token_i)·BASEⁿ⁻¹⁻ⁱ mod 2⁶⁴, rolled along the text."""
    tokens = [_token_hash(t) for t in TOKEN.findall(text)]
    if len(tokens) < n:
        return set()
    top = pow(_BASE, n - 1, 1 << 64)
    h = 0
    for t in tokens[:n]:
        h = (h * _BASE + t) & _MASK
    out = {h}
    for i in range(n, len(tokens)):
        h = ((h - tokens[i - n] * top) * _BASE + tokens[i]) & _MASK
        out.add(h)
    return out


def problems(folder: Path) -> dict[str, set[str]]:
    """Problem id (HumanEval/N) → the full texts the infilling tasks cut it from."""
    found: dict[str, set[str]] = {}
    for name in FILES:
        path = folder / name
        if not path.is_file():
            continue
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    problem = "/".join(row["task_id"].split("/")[1:3])
                    text = row["prompt"] + row["canonical_solution"] + row["suffix"]
                    found.setdefault(problem, set()).add(text)
    if not found:
        raise FileNotFoundError(f"{folder}: none of {', '.join(FILES)}")
    return found


def _informative(text: str, n: int) -> set[int]:
    """Hashes of the n-grams of ``text`` that hold at least one identifier."""
    tokens = TOKEN.findall(text)
    out = set()
    for i in range(len(tokens) - n + 1):
        window = tokens[i:i + n]
        if any(t[0].isalpha() or t[0] == "_" for t in window):
            out |= ngram_hashes(" ".join(window), n)
    return out


def build(folder: Path, n: int = N, background: list[Path] = ()) -> dict:
    owners: dict[int, set[str]] = {}
    found = problems(folder)
    for problem, texts in found.items():
        for text in texts:
            for h in _informative(text, n):
                owners.setdefault(h, set()).add(problem)
    unique = {h for h, who in owners.items() if len(who) == 1}
    common: set[int] = set()
    files = 0
    for root in background:
        for path in sorted(Path(root).rglob("*.py")):
            if {"site-packages", "dist-packages"} & set(path.parts):
                continue
            try:
                common |= ngram_hashes(path.read_text(encoding="utf-8"), n) & unique
                files += 1
            except (UnicodeDecodeError, OSError):
                continue
    kept = sorted(unique - common)
    packed = array("Q", kept)
    if sys.byteorder != "little":
        packed.byteswap()
    return {"benchmark": "HumanEval-Infilling (prompt + canonical_solution + suffix)",
            "problems": len(found), "n": n, "token_pattern": TOKEN.pattern,
            "hash": "sum of blake2b-8 (little-endian) token hashes times "
                    "0x100000001B3^(n-1-i), mod 2^64",
            "dropped_shared": len(owners) - len(unique), "dropped_background": len(common),
            "background": f"{files} .py files under {', '.join(map(str, background))}",
            "count": len(kept),
            "hashes_u64le_base64": base64.b64encode(packed.tobytes()).decode("ascii")}


class Decontaminator:
    """``contaminated(text)``: does the text share an n-gram with the benchmark?"""

    def __init__(self, artifact: str | Path = ARTIFACT) -> None:
        data = json.loads(Path(artifact).read_text())
        if data.get("token_pattern") != TOKEN.pattern:
            raise ValueError(f"{artifact}: built with another tokenization; rebuild it")
        packed = array("Q")
        packed.frombytes(base64.b64decode(data["hashes_u64le_base64"]))
        if sys.byteorder != "little":
            packed.byteswap()
        self.n = int(data["n"])
        self.hashes = frozenset(packed)
        self.info = {k: v for k, v in data.items() if k != "hashes_u64le_base64"}

    def contaminated(self, text: str) -> bool:
        return not self.hashes.isdisjoint(ngram_hashes(text, self.n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.decontam",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", required=True, type=Path,
                        help="folder with the HumanEval-Infilling .jsonl.gz files")
    parser.add_argument("--out", type=Path, default=ARTIFACT)
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--background", nargs="*", type=Path, default=[],
                        help="folders of ordinary code whose n-grams are not evidence")
    args = parser.parse_args(argv)
    data = build(args.benchmark, args.n, args.background)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{args.out}: {data['count']} {data['n']}-gram hashes from {data['problems']} "
          f"problems ({data['dropped_shared']} shared by several problems and "
          f"{data['dropped_background']} found in the background dropped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
