"""Hole fills on whole repositories no training data came from, scored per repository.

The figure that transfers to a user's code (``training.data.unseen``): seeded line and block
holes from pinned PyPI sdists, each filled as "Fill this hole" does it (the ``<FILL>`` marker,
the server's hole sizing, candidates, ranking, fill contract and retries). Training may not
import the server, so the fill comes from the caller: ``benchmarks/eval_unseen.py`` supplies
one built on ``coda_lsp.core.fim``. Scores per repository and overall, for line and block
holes: exact match, edit similarity, fills that parse (non-empty and adding no syntax error),
how often the contract offered a fill at all, the best candidate's similarity when it did not
(what ``--accept-rejected`` would write), and the copy-previous-line floor.

    python -m training.unseen fetch [--cache DIR]      # network: the pinned sdists, sha256-checked
    python benchmarks/eval_unseen.py --model model     # or a Hub id: owner/name[@rev]
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from training.data import heldout, unseen
from training.data.heldout import Example
from training.eval.evaluate import previous_line, resolve_model_dir

log = logging.getLogger(__name__)

# hole_fill(model_folder) -> fill(prefix, suffix) -> (offered text, best candidate's text);
# the document is prefix + "<FILL>" + suffix, offered is "" when the contract refused.
HoleFill = Callable[[Path], Callable[[str, str], tuple[str, str]]]
KINDS = ("line", "block")
ALL = "all"


@dataclass(frozen=True)
class Row:
    id: str
    repo: str
    kind: str
    truth: str
    offered: str
    best: str
    ms: float
    exact: bool
    similarity: float
    parses: bool
    best_similarity: float
    floor: str           # the copy-previous-line floor's text
    floor_exact: bool
    floor_similarity: float


def score(ex: Example, offered: str, best: str, ms: float) -> Row:
    floor = previous_line(ex.prefix)
    return Row(ex.id, unseen.repo_of(ex), ex.kind, ex.middle, offered, best, ms,
               heldout.exact_match(offered, ex.middle),
               heldout.edit_similarity(offered, ex.middle),
               bool(offered.strip()) and heldout.parses(ex, offered),
               heldout.edit_similarity(best, ex.middle), floor,
               heldout.exact_match(floor, ex.middle), heldout.edit_similarity(floor, ex.middle))


def fill_all(fill: Callable[[str, str], tuple[str, str]], examples: list[Example],
             every: int = 10, sink: Path | None = None) -> list[Row]:
    """Every hole filled and scored; each row is appended to ``sink`` (JSON lines) as it comes,
    so a run cut short still leaves what it filled."""
    rows, t0 = [], time.monotonic()
    for i, ex in enumerate(examples, 1):
        start = time.perf_counter()
        offered, best = fill(ex.prefix, ex.suffix)
        rows.append(score(ex, offered, best, 1000 * (time.perf_counter() - start)))
        if sink is not None:
            with sink.open("a") as f:
                f.write(json.dumps(asdict(rows[-1])) + "\n")
        if i % every == 0 or i == len(examples):
            log.info("%d/%d holes in %.0fs", i, len(examples), time.monotonic() - t0)
    return rows


def interleave(examples: list[Example]) -> list[Example]:
    """Round robin over (repository, kind), so any prefix of the run, or a shard, is spread
    over every repository and both kinds."""
    groups: dict[tuple[str, str], list[Example]] = {}
    for ex in examples:
        groups.setdefault((unseen.repo_of(ex), ex.kind), []).append(ex)
    out, queues = [], list(groups.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def summarize(rows: list[Row]) -> list[dict]:
    """One record per (repository, kind), per repository, per kind overall, and overall."""
    repos = list(dict.fromkeys(r.repo for r in rows))
    out = []
    for repo in [*repos, ALL]:
        for kind in [*KINDS, ALL]:
            group = [r for r in rows if repo in (ALL, r.repo) and kind in (ALL, r.kind)]
            if not group:
                continue
            def mean(f, group=group) -> float:
                return statistics.fmean(f(r) for r in group)
            out.append({"repo": repo, "kind": kind, "spans": len(group),
                        "exact_match": mean(lambda r: r.exact),
                        "edit_similarity": mean(lambda r: r.similarity),
                        "parses": mean(lambda r: r.parses),
                        "offered": mean(lambda r: bool(r.offered)),
                        "best_similarity": mean(lambda r: r.best_similarity),
                        "floor_exact": mean(lambda r: r.floor_exact),
                        "floor_similarity": mean(lambda r: r.floor_similarity),
                        "ms_p50": statistics.median(r.ms for r in group)})
    return out


def table(summary: list[dict]) -> str:
    lines = ["| repository | holes | spans | exact match | edit similarity | fill parses | "
             "offered | best candidate ES | previous line EM / ES | p50 ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['repo']} | {s['kind']} | {s['spans']} | {s['exact_match']:.3f} | "
                     f"{s['edit_similarity']:.3f} | {s['parses']:.3f} | {s['offered']:.3f} | "
                     f"{s['best_similarity']:.3f} | {s['floor_exact']:.3f} / "
                     f"{s['floor_similarity']:.3f} | {s['ms_p50']:.0f} |")
    return "\n".join(lines)


def evaluate(model_ref: str | Path, hole_fill: HoleFill, *, cache: Path, lines: int = 15,
             blocks: int = 10, seed: int = 0, out: Path | None = None,
             manifest: Path = unseen.MANIFEST, shard: tuple[int, int] = (0, 1)) -> dict:
    """Fill every hole (of shard ``i`` of ``n``: every n-th from the i-th); returns {"model",
    "repos", "summary", "table", "rows"} and writes ``unseen.json``, ``unseen.md`` and
    ``fills.jsonl`` (row by row, as they come) into ``out``."""
    repos, exclude = unseen.manifest(manifest)
    examples = unseen.examples(cache, repos, exclude, lines=lines, blocks=blocks, seed=seed)
    examples = interleave(examples)[shard[0]::shard[1]]
    folder = resolve_model_dir(model_ref)
    sink = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        sink = out / "fills.jsonl"
        sink.write_text("")
    t0 = time.monotonic()
    rows = fill_all(hole_fill(folder), examples, sink=sink)
    summary = summarize(rows)
    result = {"model": str(model_ref), "folder": str(folder), "seed": seed,
              "repos": [f"{r.name}=={r.version}" for r in repos],
              "seconds": round(time.monotonic() - t0, 1), "summary": summary,
              "table": table(summary), "rows": [asdict(r) for r in rows]}
    if out is not None:
        meta = {k: v for k, v in result.items() if k not in ("rows", "table")}
        (out / "unseen.json").write_text(json.dumps(meta, indent=1) + "\n")
        (out / "unseen.md").write_text(f"{model_ref}, seed {seed}, "
                                       f"{', '.join(result['repos'])}\n\n{result['table']}\n")
    return result


def main(argv: list[str] | None = None, hole_fill: HoleFill | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.unseen",
                                description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download the pinned sdists (the only network step)")
    r = sub.add_parser("run", help="fill the holes (benchmarks/eval_unseen.py supplies the "
                                   "server's fill path)")
    for q in (f, r):
        q.add_argument("--cache", type=Path, default=unseen.default_cache())
        q.add_argument("--manifest", type=Path, default=unseen.MANIFEST)
    f.add_argument("--pip-args", default="", help="more `pip download` arguments, e.g. "
                   "'--index-url URL' (quoted, one string)")
    r.add_argument("--model", default="model", help="a model folder, run folder or Hub id")
    r.add_argument("--lines", type=int, default=15, help="line holes per repository")
    r.add_argument("--blocks", type=int, default=10, help="block holes per repository")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--out", type=Path, default=Path("runs/unseen"))
    r.add_argument("--shard", default="0/1", help="i/n: every n-th hole from the i-th (run "
                   "shards side by side, then `report` their folders together)")
    m = sub.add_parser("report", help="one table from the fills.jsonl of runs or shards")
    m.add_argument("folders", type=Path, nargs="+")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        if args.command == "fetch":
            repos, _ = unseen.manifest(args.manifest)
            for folder in unseen.fetch(args.cache, repos, shlex.split(args.pip_args)):
                print(folder)
            return 0
        if args.command == "report":
            rows = [Row(**json.loads(line)) for folder in args.folders
                    for line in (folder / "fills.jsonl").read_text().splitlines() if line]
            print(table(summarize(sorted(rows, key=lambda r: r.id))))
            return 0
        if hole_fill is None:
            p.error("run needs the server's fill path: use benchmarks/eval_unseen.py")
        torch.set_num_threads(args.threads)
        result = evaluate(args.model, hole_fill, cache=args.cache, lines=args.lines,
                          blocks=args.blocks, seed=args.seed, out=args.out,
                          manifest=args.manifest,
                          shard=tuple(int(v) for v in args.shard.split("/")))
    except unseen.UnseenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result["table"])
    print(f"\n{result['seconds']} s; written to {args.out}/ (unseen.md, unseen.json, fills.jsonl)")
    return 0
