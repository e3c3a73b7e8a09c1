"""A training corpus from the Python packages installed on this machine, with its manifest.

Sources: every distribution under the given site-packages folders whose *metadata* licence is
MIT, BSD, Apache, PSF or ISC (nothing copyleft: GPL, LGPL, AGPL, MPL, EPL, EUPL, CDDL, ...),
plus the standard library (PSF).  A package's files come from its RECORD; test folders and
files, vendored folders and anything outside the package are skipped.  Then, in order:
exact duplicates (content hash) and near duplicates (MinHash over pairs of adjacent normalised
lines, Jaccard ≥ 0.8) are dropped, keeping the first processed (a seeded random order);
files sharing a 13-gram with HumanEval-Infilling are dropped (``training.data.decontam``); the rest
are tokenized with the shipped tokenizer, given syntax spans from Python's own ``ast`` (the
GPU machine has no tree-sitter) and split train/eval by a hash of the path, as ``data.py`` does.

Per-file work runs in a process pool, a chunk of files at a time, and a trainer may take the
corpus so far while the rest is processed (:class:`CorpusBuilder`).  The manifest lists each
package with its version, licence, the licence's source (expression, classifier or text),
files, bytes and a sha256 over its kept files' hashes, plus every excluded package and why.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata as md
import logging
import os
import platform
import random
import re
import sysconfig
import threading
import time
import zlib
from array import array
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from training.data.licences import licence_of

log = logging.getLogger(__name__)

SKIP_DIRS = {"test", "tests", "testing", "idle_test", "__pycache__", "_vendor", "vendor",
             "vendored", "_vendored", "third_party", "thirdparty", "site-packages",
             "dist-packages", "ensurepip"}
TEST_FILE = re.compile(r"^(test_.*|.*_test|conftest)\.py$")


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------

@dataclass
class Package:
    name: str
    version: str
    licence: str | None
    licence_source: str
    files: list[tuple[Path, str]] = field(default_factory=list)   # (path, corpus-relative)


def skipped(rel_parts: tuple[str, ...]) -> bool:
    return bool(set(p.lower() for p in rel_parts[:-1]) & SKIP_DIRS) or \
        bool(TEST_FILE.match(rel_parts[-1]))


def site_packages(folder: Path) -> list[Package]:
    """Every distribution installed in ``folder``, with its licence and its .py files."""
    out = []
    seen: set[str] = set()
    for dist in sorted(md.distributions(path=[str(folder)]),
                       key=lambda d: (d.metadata.get("Name") or "").lower()):
        name = dist.metadata.get("Name") or "?"
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        family, source = licence_of(dist.metadata)
        pkg = Package(name, dist.version or "?", family, source)
        if family is not None:
            for entry in dist.files or []:
                if entry.suffix != ".py" or ".." in entry.parts:
                    continue
                if skipped(tuple(entry.parts)):
                    continue
                path = Path(dist.locate_file(entry))
                pkg.files.append((path, f"{key}/{entry.as_posix()}"))
            if not dist.files:
                pkg.licence_source += "; no RECORD (files unknown)"
        out.append(pkg)
    return out


STDLIB_PACKAGE = "python-stdlib"
# The stdlib files the shipped model held out when it was first trained (``training.data.packing``
# keyed them "python3.11/<path>" at fraction 0.03) stay held out on every machine and Python
# version, so ``training.eval.evaluate``'s held-out spans stay unseen after every warm start.
SHIPPED_HELDOUT_KEY = "python3.11/{}"
SHIPPED_HELDOUT_FRACTION = 0.03


def held_out(package: str, rel: str, fraction: float) -> bool:
    """The run's own per-file split, plus the shipped model's held-out stdlib files."""
    from training.data.packing import eval_split
    if eval_split(rel, fraction):
        return True
    return package == STDLIB_PACKAGE and eval_split(
        SHIPPED_HELDOUT_KEY.format(rel.removeprefix("stdlib/")), SHIPPED_HELDOUT_FRACTION)


def stdlib(folder: Path) -> Package:
    pkg = Package(STDLIB_PACKAGE, platform.python_version(), "PSF",
                  "CPython standard library (PSF-2.0)")
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder)
        if not skipped(rel.parts):
            pkg.files.append((path, f"stdlib/{rel.as_posix()}"))
    return pkg


def default_sources() -> tuple[list[Path], Path]:
    paths = sysconfig.get_paths()
    sites = sorted({Path(paths["purelib"]), Path(paths["platlib"])})
    return [p for p in sites if p.is_dir()], Path(paths["stdlib"])


# --------------------------------------------------------------------------------------------
# Per-file work (in worker processes)
# --------------------------------------------------------------------------------------------

SIG_PERMS = 32
BANDS = 8
NEAR = 0.8
_P = (1 << 31) - 1
_A = [(zlib.crc32(f"a{i}".encode()) % (_P - 1)) + 1 for i in range(SIG_PERMS)]
_B = [zlib.crc32(f"b{i}".encode()) % _P for i in range(SIG_PERMS)]
_STATE: dict = {}


def _init_worker(tokenizer_dir: str, artifact: str | None, limits: dict, nice: int = 0) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if nice:
        os.nice(nice)   # a pool process: never the trainer sharing the machine
    import torch

    # One thread per worker: the pool already gives every core a process (a thread team per
    # worker only competes with the others; ~5 % slower on the 2-core dev box).
    torch.set_num_threads(1)
    from coda_model import load_tokenizer
    from training.data.decontam import Decontaminator
    _STATE["tok"] = load_tokenizer(tokenizer_dir)
    _STATE["decontam"] = Decontaminator(artifact) if artifact else None
    _STATE["limits"] = limits


def minhash(text: str) -> list[int] | None:
    """MinHash of the set of adjacent normalised-line pairs (None: too few lines to judge)."""
    import torch
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if len(lines) < 4:
        return None
    pairs = {zlib.crc32(f"{a}\n{b}".encode()) for a, b in zip(lines, lines[1:], strict=False)}
    h = torch.tensor(sorted(pairs), dtype=torch.int64)[:, None]
    sig = (h * torch.tensor(_A)[None, :] + torch.tensor(_B)[None, :]) % _P
    return sig.min(0).values.tolist()


def python_byte_spans(text: str) -> list[tuple[int, int]]:
    """Byte ranges of statements, expressions (not bare names), handlers and keywords."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    raw = text.encode("utf-8")
    starts = [0]
    for line in raw.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    out = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt | ast.expr | ast.excepthandler | ast.keyword) \
                or isinstance(node, ast.Name) or getattr(node, "end_lineno", None) is None:
            continue
        try:
            a = starts[node.lineno - 1] + node.col_offset
            b = starts[node.end_lineno - 1] + node.end_col_offset
        except IndexError:
            continue
        if len(raw) >= b > a:
            out.add((a, b))
    return sorted(out)


def _process_many(items: list[tuple[int, str]]) -> list[dict]:
    return [_process_safely(item) for item in items]


def _process_timed(items: list[tuple[int, str]]) -> tuple[list[dict], float]:
    """A chunk's rows and the seconds its worker spent on them. The log compares their sum
    with workers × wall time: the first GPU run's 16 workers read files at a sixth of the dev
    box's rate per worker, and this tells slow cores (busy) from starved ones (idle)."""
    t = time.monotonic()
    return _process_many(items), time.monotonic() - t


def _process_safely(item: tuple[int, str]) -> dict:
    """One odd file is dropped with its reason, never the end of a one-shot run."""
    try:
        return _process(item)
    except Exception as exc:
        log.warning("%s: %s: %s", item[1], type(exc).__name__, exc)
        return {"i": item[0], "drop": "error"}


def _process(item: tuple[int, str]) -> dict:
    from training.data.packing import looks_generated, token_spans
    index, path = item
    lim = _STATE["limits"]
    try:
        size = os.path.getsize(path)
        if not lim["min_bytes"] <= size <= lim["max_bytes"]:
            return {"i": index, "drop": "size"}
        text = Path(path).read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return {"i": index, "drop": "decode"}
    if looks_generated(text, lim["cfg"]):
        return {"i": index, "drop": "generated"}
    row = {"i": index, "drop": None, "bytes": len(text.encode("utf-8")),
           "sha": hashlib.sha256(text.strip().encode("utf-8")).hexdigest(),
           "sig": minhash(text)}
    decontam = _STATE["decontam"]
    if decontam is not None and decontam.contaminated(text):
        row["drop"] = "benchmark"
        return row
    enc = _STATE["tok"].backend.encode(text, add_special_tokens=False)
    spans = token_spans(text, enc.offsets, python_byte_spans(text), lim["max_span_tokens"])
    row["ids"] = array("H", enc.ids).tobytes()
    row["spans"] = array("i", [x for s in spans for x in s]).tobytes()
    return row


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------

@dataclass
class CorpusFile:
    package: str
    rel: str
    sha256: str
    nbytes: int
    ids: bytes            # uint16 token ids
    spans: bytes          # int32 (start, end) token ranges
    is_eval: bool


class NearDuplicates:
    """Files whose MinHash agrees with an earlier one's on ≥ NEAR of the permutations
    (candidates from LSH banding; the earlier file is kept), judged one file at a time."""

    def __init__(self) -> None:
        self.rows = SIG_PERMS // BANDS
        self.buckets: dict[tuple, list[list[int]]] = {}

    def seen(self, sig: list[int] | None) -> bool:
        """True if ``sig`` is a near duplicate of one added before; else it is added."""
        if sig is None:
            return False
        keys = [(band, *sig[band * self.rows:(band + 1) * self.rows]) for band in range(BANDS)]
        for key in keys:
            for other in self.buckets.get(key, ()):
                if sum(x == y for x, y in zip(sig, other, strict=True)) >= NEAR * SIG_PERMS:
                    return True
        for key in keys:
            self.buckets.setdefault(key, []).append(sig)
        return False


class CorpusBuilder:
    """Gathers, filters, de-duplicates, decontaminates and tokenizes, a chunk of files at a time,
    so a caller can train on the corpus so far (:meth:`snapshot`) while :meth:`run` goes on in
    another thread: on a lent GPU the corpus stage no longer leaves the GPU idle.

    Files are processed in a seeded random order (what is done when time runs out is a random
    sample) and judged in that order, the first of two duplicates kept, so every snapshot's
    files are all in every later one.  ``cfg`` is the run's ``DataConfig`` (size and
    generated-code filters, eval fraction, span length).  ``workers`` 0 means one per CPU; 1
    runs in the calling thread; ``nice`` lowers the pool's priority below a training process.
    """

    def __init__(self, site_dirs: list[Path], stdlib_dir: Path | None, tokenizer_dir: Path,
                 cfg, *, artifact: Path | None, workers: int = 0,
                 max_files: int | None = None, nice: int = 0) -> None:
        self.t0 = time.monotonic()
        self.packages = ([stdlib(stdlib_dir)] if stdlib_dir else []) + \
            [p for d in site_dirs for p in site_packages(d)]
        self.items: list[tuple[Package, Path, str]] = [
            (p, path, rel) for p in self.packages if p.licence for path, rel in p.files]
        if max_files is not None:
            self.items = self.items[:max_files]
        self.cfg, self.artifact = cfg, artifact
        limits = {"min_bytes": cfg.min_bytes, "max_bytes": cfg.max_bytes, "cfg": cfg,
                  "max_span_tokens": cfg.max_span_tokens}
        self.init = (str(tokenizer_dir), str(artifact) if artifact else None, limits)
        jobs = [(i, str(path)) for i, (_, path, _) in enumerate(self.items)]
        random.Random(cfg.seed).shuffle(jobs)
        self.workers = workers or os.cpu_count() or 1
        # Small corpora (a rehearsal) still spread over the workers; 32 files amortise the
        # round trip on a real one.
        size = max(1, min(32, len(jobs) // (8 * self.workers)))
        self.chunks = [jobs[k:k + size] for k in range(0, len(jobs), size)]
        self.nice = nice
        self.processed = 0
        self.busy = 0.0
        self.done = False
        self.train_tokens = self.eval_tokens = 0
        self._lock = threading.Lock()
        self._files: list[CorpusFile] = []
        self._seen: set[str] = set()
        self._near = NearDuplicates()
        self.dropped = {"size": 0, "decode": 0, "generated": 0, "error": 0, "duplicate": 0,
                        "near_duplicate": 0, "benchmark": 0}

    def run(self, stop: Callable[[], bool] = lambda: False,
            on_chunk: Callable[[], None] | None = None) -> None:
        """Process chunks until all are done or ``stop()`` (asked after each chunk);
        ``on_chunk()`` runs after each chunk is added."""
        t = time.monotonic()
        if self.workers == 1:
            _init_worker(*self.init)
            for chunk in self.chunks:
                if stop():
                    break
                self._add(_process_many(chunk), 0.0, on_chunk)
        else:
            pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                       initializer=_init_worker, initargs=(*self.init, self.nice))
            try:
                for rows, seconds in pool.map(_process_timed, self.chunks):
                    self._add(rows, seconds, on_chunk)
                    if stop():
                        break
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        wall = time.monotonic() - t
        left = len(self.items) - self.processed
        log.info("processed %d files in %.1fs with %d workers%s%s", self.processed, wall,
                 self.workers, f" (workers busy {self.busy:.0f} s, "
                 f"{self.busy / (self.workers * max(wall, 1e-9)):.0%} of their time)"
                 if self.workers > 1 else "", f" ({left} left out: time limit)" if left else "")
        self.done = True
        if on_chunk is not None:
            on_chunk()

    def _add(self, rows: list[dict], seconds: float, on_chunk) -> None:
        with self._lock:
            self.busy += seconds
            self.processed += len(rows)
            for r in rows:
                if r["drop"] in ("size", "decode", "generated", "error"):
                    self.dropped[r["drop"]] += 1
                elif r["sha"] in self._seen:
                    self.dropped["duplicate"] += 1
                else:
                    self._seen.add(r["sha"])
                    self._keep(r)
        if on_chunk is not None:
            on_chunk()

    def _keep(self, r: dict) -> None:
        if self._near.seen(r["sig"]):
            self.dropped["near_duplicate"] += 1
        elif r["drop"] == "benchmark":
            self.dropped["benchmark"] += 1
        else:
            pkg, _, rel = self.items[r["i"]]
            f = CorpusFile(pkg.name, rel, r["sha"], r["bytes"], r["ids"], r["spans"],
                           held_out(pkg.name, rel, self.cfg.eval_fraction))
            self._files.append(f)
            if f.is_eval:
                self.eval_tokens += len(f.ids) // 2
            else:
                self.train_tokens += len(f.ids) // 2

    def snapshot(self) -> tuple[list[CorpusFile], dict]:
        """The files kept so far and their manifest."""
        with self._lock:
            files, dropped = list(self._files), dict(self.dropped)
            processed = self.processed
        manifest = manifest_of(self.packages, files, dropped, self.artifact)
        manifest["seconds"] = round(time.monotonic() - self.t0, 1)
        manifest["unprocessed_files"] = len(self.items) - processed
        return files, manifest


def build_corpus(site_dirs: list[Path], stdlib_dir: Path | None, tokenizer_dir: Path, cfg,
                 *, artifact: Path | None, workers: int = 0, max_files: int | None = None,
                 time_limit_s: float | None = None) -> tuple[list[CorpusFile], dict]:
    """The whole corpus at once (:class:`CorpusBuilder` run to the end or the time limit);
    returns (files, manifest)."""
    builder = CorpusBuilder(site_dirs, stdlib_dir, tokenizer_dir, cfg, artifact=artifact,
                            workers=workers, max_files=max_files)
    builder.run(stop=lambda: time_limit_s is not None
                and time.monotonic() - builder.t0 > time_limit_s)
    files, manifest = builder.snapshot()
    log.info("corpus: %d files, %.1f MB, %d tokens; dropped %s", len(files),
             sum(f.nbytes for f in files) / 1e6, manifest["tokens"], manifest["dropped_files"])
    return files, manifest


def manifest_of(packages: list[Package], files: list[CorpusFile], dropped: dict,
                artifact: Path | None) -> dict:
    by_pkg: dict[str, list[CorpusFile]] = {}
    for f in files:
        by_pkg.setdefault(f.package, []).append(f)
    included, excluded = [], []
    for p in packages:
        mine = by_pkg.get(p.name, [])
        if p.licence is None:
            excluded.append({"package": p.name, "version": p.version,
                             "reason": p.licence_source})
            continue
        if not mine:
            continue
        digest = hashlib.sha256("".join(sorted(f.sha256 for f in mine)).encode()).hexdigest()
        included.append({"package": p.name, "version": p.version, "licence": p.licence,
                         "licence_source": p.licence_source, "files": len(mine),
                         "eval_files": sum(f.is_eval for f in mine),
                         "bytes": sum(f.nbytes for f in mine),
                         "tokens": sum(len(f.ids) // 2 for f in mine), "sha256": digest})
    return {"files": len(files), "bytes": sum(f.nbytes for f in files),
            "tokens": sum(len(f.ids) // 2 for f in files),
            "licences": sorted({p["licence"] for p in included}),
            "dropped_files": dropped,
            "decontamination": None if artifact is None else str(Path(artifact).name),
            "packages": included, "excluded_packages": excluded}
