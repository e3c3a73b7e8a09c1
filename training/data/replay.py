"""General code mixed into a fine-tune's train split, against forgetting.

A few passes over one small repository pull a small model towards that repository's names and
away from everything else; mixing in files of the data the base model was trained on (the
stdlib for the shipped model) keeps the rest in place.  Files come in a seeded order of their
paths, read and filtered like the corpus, until the wanted number of tokens is reached.
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path

from training.data.packing import (
    LANGUAGES,
    DataConfig,
    Document,
    candidate_files,
    looks_generated,
)

log = logging.getLogger(__name__)


def replay_documents(cfg: DataConfig, tokenizer, want_tokens: int, *, skip: set[str] = frozenset()
                     ) -> list[tuple[Document, object]]:
    """(document, encoding) pairs from ``cfg.replay_sources`` totalling ``want_tokens``;
    files whose content hash is in ``skip`` (the repository's own) are left out."""
    files: list[tuple[Path, Path]] = []
    for root in map(Path, cfg.replay_sources):
        files += [(root, p) for p in candidate_files(root, cfg)]
    random.Random(cfg.seed).shuffle(files)
    out, have = [], 0
    for root, path in files:
        if have >= want_tokens:
            break
        if not cfg.min_bytes <= path.stat().st_size <= cfg.max_bytes:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        sha = hashlib.sha256(text.strip().encode("utf-8")).hexdigest()
        if looks_generated(text, cfg) or sha in skip:
            continue
        enc = tokenizer.backend.encode(text, add_special_tokens=False)
        rel = f"replay/{root.name}/{path.relative_to(root)}" if root.is_dir() else root.name
        out.append((Document(rel, text, LANGUAGES.get(path.suffix, "text"), False,
                             sha), enc))
        have += len(enc.ids)
    log.info("replay: %d files, %d tokens of %s (%.0f%% of the train split)", len(out), have,
             ", ".join(cfg.replay_sources), 100 * cfg.replay_mix)
    return out
