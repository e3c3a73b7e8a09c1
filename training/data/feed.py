"""The corpus as it grows, packed for the training loop without stalling a step.

``pack_files`` packs token arrays (files joined by eos, cut into rows, spans kept when they lie
inside one row); ``CorpusFeed`` runs a ``CorpusBuilder`` in a background thread and hands the
loop a larger packed split as the corpus grows.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from training.data import corpus
from training.data.packing import PackedSplit

log = logging.getLogger(__name__)


def pack_files(files: list[corpus.CorpusFile], seq_len: int, eos_id: int) -> PackedSplit:
    """:func:`training.data.pack` on token arrays: files joined by eos, cut into rows, spans
    kept when they lie inside one row (tensor ops; the corpus is ~10⁸ tokens)."""
    if not files:
        return PackedSplit(torch.zeros(0, seq_len, dtype=torch.int32),
                           torch.zeros(1, dtype=torch.int64), torch.zeros(0, 2, dtype=torch.int32))
    ids, spans, base = [], [], 0
    for f in files:
        t = torch.frombuffer(bytearray(f.ids), dtype=torch.int16).to(torch.int32) & 0xFFFF
        s = torch.frombuffer(bytearray(f.spans), dtype=torch.int32).view(-1, 2) if f.spans \
            else torch.zeros(0, 2, dtype=torch.int32)
        ids += [t, torch.tensor([eos_id], dtype=torch.int32)]
        spans.append(s.long() + base)
        base += len(t) + 1
    stream = torch.cat(ids)
    n = len(stream) // seq_len
    all_spans = torch.cat(spans)
    row = all_spans[:, 0] // seq_len
    keep = (row == (all_spans[:, 1] - 1) // seq_len) & (row < n)
    all_spans, row = all_spans[keep], row[keep]
    order = torch.argsort(row, stable=True)
    all_spans, row = all_spans[order], row[order]
    local = (all_spans - row[:, None] * seq_len).to(torch.int32)
    ptr = torch.zeros(n + 1, dtype=torch.int64)
    ptr[1:] = torch.bincount(row, minlength=n).cumsum(0)
    return PackedSplit(stream[:n * seq_len].view(n, seq_len).clone(), ptr, local)


def write_manifest(out: Path, manifest: dict) -> None:
    tmp = out / "corpus_manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / "corpus_manifest.json")


class CorpusFeed:
    """Hands the training loop a larger packed train split as the corpus grows.

    The builder's thread packs a snapshot every ``refresh_s`` seconds (and once when the
    corpus is done); the loop takes the newest one between steps (:meth:`take`), so packing
    never stalls a step.  The manifest travels with its split: the one written is always that
    of the data trained on."""

    def __init__(self, builder: corpus.CorpusBuilder, seq_len: int, eos_id: int,
                 refresh_s: float) -> None:
        self.builder, self.seq_len, self.eos_id = builder, seq_len, eos_id
        self.refresh_s = refresh_s
        self.closed = False
        self.done_s: float | None = None
        self.error: str | None = None   # why the corpus stopped early, if it did
        self._files = 0
        self._last = time.monotonic()
        self._started = False
        self._pending: tuple[PackedSplit, dict] | None = None
        self._lock, self._packing = threading.Lock(), threading.Lock()
        self.thread: threading.Thread | None = None

    def launch(self, stop_at: float) -> None:
        """Build the corpus in a background thread until it is done, ``time.monotonic()``
        passes ``stop_at`` or the feed is closed."""
        def build() -> None:
            try:
                self.builder.run(stop=lambda: self.closed or time.monotonic() > stop_at,
                                 on_chunk=self.on_chunk)
            except Exception as exc:   # a broken pool ends the corpus, not the run
                log.exception("the corpus stopped early; training goes on with what it has")
                self.error = f"{type(exc).__name__}: {exc}"
        self.thread = threading.Thread(target=build, name="corpus", daemon=True)
        self.thread.start()

    def first(self, ready: Callable[[], bool]) -> tuple[list[corpus.CorpusFile], dict]:
        """The corpus to start training on: once ``ready()``, or all of it if it ends first."""
        b = self.builder
        while self.thread.is_alive() and not b.done and not ready():
            time.sleep(0.2)
        files, manifest = b.snapshot()
        manifest["corpus_done"] = b.done
        return files, manifest

    def start(self, files: int) -> None:
        """The loop trains on the first ``files`` files from now."""
        self._files, self._last, self._started = files, time.monotonic(), True

    def close(self, wait_s: float = 0.0) -> None:
        """Stop the corpus after its current chunk (and wait for that up to ``wait_s``)."""
        self.closed = True
        if wait_s and self.thread is not None:
            self.thread.join(timeout=wait_s)

    def on_chunk(self) -> None:
        """The builder's thread, after each chunk."""
        with self._packing:
            self._refresh()

    def _refresh(self) -> None:
        b = self.builder
        if b.done and self.done_s is None:
            self.done_s = round(time.monotonic() - b.t0, 1)
        if not self._started or self.closed or not (
                b.done or time.monotonic() - self._last >= self.refresh_s):
            return
        self._last = time.monotonic()
        files, manifest = b.snapshot()
        manifest["corpus_done"] = b.done
        if len(files) > self._files:
            split = pack_files([f for f in files if not f.is_eval], self.seq_len, self.eos_id)
            self._files = len(files)
        elif b.done:   # nothing new to train on; the final counts still belong in the manifest
            split = None
        else:
            return
        with self._lock:
            if split is None and self._pending is not None:
                split = self._pending[0]
            self._pending = (split, manifest)

    def take(self) -> tuple[PackedSplit | None, dict] | None:
        """The newest packed split not yet taken (None: the same files as before), with its
        manifest; None when nothing changed."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending
