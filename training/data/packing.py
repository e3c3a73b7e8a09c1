"""Training data: source directories → de-duplicated, filtered files → packed token sequences.

Steps: read files by extension, drop duplicates (by content hash) and files that look generated
or minified, split train/eval *by file* (a stable hash of the relative path), tokenize, record
tree-sitter node spans as token ranges, and pack every split into fixed-length rows (static
shapes for XLA) with the eos token between files.  A packed split is saved as one safetensors
file: ``ids [N, L]`` plus the spans in CSR form (``span_ptr [N+1]``, ``spans [M, 2]``).

:class:`BatchStream` hands out row indices in a seeded order and can be checkpointed and resumed
exactly.  This module does not corrupt anything (see ``training.objective.masks``).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from training.data import repo_split
from training.errors import UsageError

log = logging.getLogger(__name__)

LANGUAGES = {".py": "python", ".js": "javascript", ".ts": "typescript", ".rs": "rust",
             ".go": "go", ".c": "c", ".h": "c", ".cpp": "cpp", ".java": "java", ".lua": "lua"}
# Leaf-like node types not worth regenerating on their own.
SKIP_NODE_TYPES = {"ERROR", "comment", "identifier", "escape_sequence", "string_start",
                   "string_end", "string_content", "module", "program", "source_file",
                   "translation_unit", "chunk"}
LEAF_SPANS = {"string", "integer", "float", "number", "string_literal", "true", "false",
              "none"}


@dataclass(frozen=True)
class DataConfig:
    sources: tuple[str, ...]
    extensions: tuple[str, ...] = (".py",)
    exclude_dirs: tuple[str, ...] = ("site-packages", "__pycache__", "test", "tests",
                                     "idle_test", ".git", "node_modules", ".venv")
    min_bytes: int = 64
    max_bytes: int = 200_000
    max_line_length: int = 400          # longer lines: minified or generated
    max_mean_line_length: float = 100.0
    eval_fraction: float = 0.02
    seq_len: int = 256
    max_span_tokens: int = 64
    seed: int = 0
    min_eval_files: int = 0             # small repositories: hold out at least this many files
    # > 0: hold out files by a hash of their path inside the repository up to this fraction of
    # its tokens (training.data.repo_split), instead of eval_fraction / min_eval_files.
    eval_token_cap: float = 0.0
    # General code mixed into the train split against forgetting (e.g. the stdlib the base
    # model was trained on): this fraction of the train tokens comes from replay_sources.
    replay_sources: tuple[str, ...] = ()
    replay_mix: float = 0.0
    # > 0 (with eval_token_cap): also set apart validation files, up to this fraction of the
    # tokens, neither trained on nor scored by the verdict: early stopping's (val.safetensors).
    val_token_cap: float = 0.0
    # Folders read for training only, even where exclude_dirs names them: a repository's own
    # tests are its code too (its API called the way it is meant to be), but are never held
    # out, validated on or counted in the caps above, so the verdict scores the same files.
    train_only_dirs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("DataConfig.sources is empty")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError("eval_fraction must be in [0, 1)")
        if self.seq_len < 8:
            raise ValueError("seq_len must be at least 8")
        if not 0.0 <= self.eval_token_cap < 1.0 or not 0.0 <= self.replay_mix < 1.0 \
                or not 0.0 <= self.val_token_cap < 1.0:
            raise ValueError("eval_token_cap, val_token_cap and replay_mix must be in [0, 1)")


class DataError(UsageError):
    """Sources that cannot make a data set (missing, empty, nothing usable): one line."""


@dataclass
class Document:
    path: str              # relative to its source root, prefixed by the root's name
    text: str
    language: str
    is_eval: bool
    sha256: str = field(default="", repr=False)
    is_val: bool = False   # early stopping's validation file (DataConfig.val_token_cap)
    train_only: bool = False  # in DataConfig.train_only_dirs: never held out


def eval_split(rel_path: str, fraction: float) -> bool:
    """A stable per-file decision: the same file is held out on every machine and run."""
    digest = hashlib.sha256(rel_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def looks_generated(text: str, cfg: DataConfig) -> bool:
    lines = text.splitlines() or [""]
    if max(len(line) for line in lines) > cfg.max_line_length:
        return True
    return sum(len(line) for line in lines) / len(lines) > cfg.max_mean_line_length


def candidate_files(root: Path, cfg: DataConfig) -> list[Path]:
    """The files under ``root`` with a wanted extension, outside the excluded folders (those
    in ``cfg.train_only_dirs`` included)."""
    if not root.exists():
        raise DataError(f"data source {root} does not exist")
    if root.is_file():
        return [root]
    excluded = set(cfg.exclude_dirs) - set(cfg.train_only_dirs)
    return sorted(p for p in root.rglob("*")
                  if p.suffix in cfg.extensions and p.is_file()
                  and not set(p.relative_to(root).parts[:-1]) & excluded)


def train_only(rel_path: str, cfg: DataConfig) -> bool:
    """Whether a file (its path inside the source) lies in a train-only folder."""
    return bool(set(Path(rel_path).parts[:-1]) & set(cfg.train_only_dirs))


def read_corpus(cfg: DataConfig) -> list[Document]:
    """Read, filter and de-duplicate every matching file under ``cfg.sources`` (sorted order)."""
    seen: set[str] = set()
    docs: list[Document] = []
    dropped = {"size": 0, "generated": 0, "duplicate": 0, "decode": 0}
    for root in map(Path, cfg.sources):
        files = candidate_files(root, cfg)
        if not files:
            what = "is empty" if root.is_dir() and not any(root.iterdir()) else \
                f"has no {'/'.join(cfg.extensions)} files outside {'/'.join(cfg.exclude_dirs)}"
            raise DataError(f"data source {root} {what}")
        for path in files:
            size = path.stat().st_size
            if not cfg.min_bytes <= size <= cfg.max_bytes:
                dropped["size"] += 1
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                dropped["decode"] += 1
                continue
            if looks_generated(text, cfg):
                dropped["generated"] += 1
                continue
            sha = hashlib.sha256(text.strip().encode("utf-8")).hexdigest()
            if sha in seen:
                dropped["duplicate"] += 1
                continue
            seen.add(sha)
            rel = f"{root.name}/{path.relative_to(root)}" if root.is_dir() else root.name
            only = root.is_dir() and train_only(str(path.relative_to(root)), cfg)
            docs.append(Document(rel, text, LANGUAGES.get(path.suffix, "text"),
                                 not only and eval_split(rel, cfg.eval_fraction), sha,
                                 train_only=only))
    if not docs:
        reasons = ", ".join(f"{n} {why}" for why, n in dropped.items() if n)
        raise DataError(f"no usable files in {', '.join(cfg.sources)}: all {sum(dropped.values())}"
                        f" dropped ({reasons}; sizes must be {cfg.min_bytes}-{cfg.max_bytes} "
                        f"bytes, lines under {cfg.max_line_length} characters)")
    if cfg.eval_token_cap > 0:
        repo_split.hold_out(docs, cfg.eval_token_cap)
        if cfg.val_token_cap > 0:
            repo_split.hold_out_validation(docs, cfg.val_token_cap)
    else:
        _hold_out_at_least(docs, cfg.min_eval_files)
    log.info("read %d files, %d held out, %d train-only (dropped %s)", len(docs),
             sum(d.is_eval for d in docs), sum(d.train_only for d in docs), dropped)
    return docs


def _hold_out_at_least(docs: list[Document], n: int) -> None:
    """Small repositories: move the files with the lowest path hash to eval until ``n`` are
    held out (never more than a quarter of the files), so the choice is stable across runs."""
    n = min(n, len(docs) // 4) - sum(d.is_eval for d in docs)
    if n <= 0:
        return
    train = sorted((d for d in docs if not d.is_eval and not d.train_only),
                   key=lambda d: hashlib.sha256(d.path.encode("utf-8")).digest())
    for doc in train[:n]:
        doc.is_eval = True


def source_fingerprint(cfg: DataConfig) -> dict:
    """What the packed data was built from: every candidate file's path, size and SHA-256."""
    digest = hashlib.sha256()
    count = 0
    for root in map(Path, cfg.sources):
        for path in candidate_files(root, cfg):
            data = path.read_bytes()
            digest.update(f"{path}\0{len(data)}\0".encode())
            digest.update(hashlib.sha256(data).digest())
            count += 1
    return {"files": count, "sha256": digest.hexdigest()}


# --------------------------------------------------------------------------------------------
# Syntax spans
# --------------------------------------------------------------------------------------------

_PARSERS: dict[str, object] = {}


def _parser(language: str):
    """A tree-sitter parser from the grammar wheel, or None if the grammar is not installed."""
    if language not in _PARSERS:
        try:
            import importlib

            import tree_sitter
            module = importlib.import_module(f"tree_sitter_{language}")
            lang_fn = getattr(module, "language", None) or getattr(module, f"language_{language}")
            _PARSERS[language] = tree_sitter.Parser(tree_sitter.Language(lang_fn()))
        except (ImportError, AttributeError) as exc:
            log.warning("no tree-sitter grammar for %s (%s): token masking only", language, exc)
            _PARSERS[language] = None
    return _PARSERS[language]


def node_byte_spans(text: str, language: str) -> list[tuple[int, int]]:
    """Byte ranges of the syntax nodes worth regenerating (statements, blocks, expressions...)."""
    parser = _parser(language)
    if parser is None:
        return []
    tree = parser.parse(text.encode("utf-8"))
    out: list[tuple[int, int]] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.parent is None or not node.is_named or node.type in SKIP_NODE_TYPES:
            continue
        if node.named_child_count == 0 and node.type not in LEAF_SPANS:
            continue
        if node.end_byte > node.start_byte:
            out.append((node.start_byte, node.end_byte))
    return sorted(set(out))


def token_spans(text: str, offsets: list[tuple[int, int]], byte_spans: list[tuple[int, int]],
                max_tokens: int) -> list[tuple[int, int]]:
    """Byte ranges → token ranges [start, end) over tokens whose characters they cover."""
    if not offsets or not byte_spans:
        return []
    encoded = text.encode("utf-8")
    if len(encoded) == len(text):
        to_char = None
    else:  # byte offset → character offset, only for non-ASCII files
        to_char = [0] * (len(encoded) + 1)
        pos = 0
        for i, ch in enumerate(text):
            n = len(ch.encode("utf-8"))
            for k in range(n):
                to_char[pos + k] = i
            pos += n
        to_char[pos] = len(text)
    ends = [e for _, e in offsets]
    starts = [s for s, _ in offsets]
    out = []
    for b0, b1 in byte_spans:
        c0, c1 = (b0, b1) if to_char is None else (to_char[b0], to_char[b1])
        t0 = bisect.bisect_right(ends, c0)        # first token ending after c0
        t1 = bisect.bisect_left(starts, c1)       # first token starting at/after c1
        if 0 < t1 - t0 <= max_tokens:
            out.append((t0, t1))
    return sorted(set(out))


# --------------------------------------------------------------------------------------------
# Packing and storage
# --------------------------------------------------------------------------------------------

@dataclass
class PackedSplit:
    ids: torch.Tensor        # [N, L] int32
    span_ptr: torch.Tensor   # [N + 1] int64
    spans: torch.Tensor      # [M, 2] int32, token ranges inside their row
    prompt_lengths: torch.Tensor | None = None   # [N] SFT rows: tokens before the response

    def __len__(self) -> int:
        return self.ids.shape[0]

    def spans_for(self, rows: list[int], max_spans: int = 512) -> torch.Tensor:
        """Spans of ``rows`` as [B, S, 2], zero-padded (an empty range is padding)."""
        chunks = [self.spans[self.span_ptr[r]:self.span_ptr[r + 1]][:max_spans] for r in rows]
        width = max([len(c) for c in chunks] + [1])
        out = torch.zeros(len(rows), width, 2, dtype=torch.long)
        for i, c in enumerate(chunks):
            out[i, :len(c)] = c
        return out

    def save(self, path: str | Path) -> None:
        tmp = Path(f"{path}.tmp")
        tensors = {"ids": self.ids.contiguous(), "span_ptr": self.span_ptr.contiguous(),
                   "spans": self.spans.contiguous()}
        if self.prompt_lengths is not None:
            tensors["prompt_lengths"] = self.prompt_lengths.contiguous()
        save_file(tensors, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> PackedSplit:
        t = load_file(str(path))
        return cls(t["ids"], t["span_ptr"], t["spans"], t.get("prompt_lengths"))


def pack(token_lists: list[list[int]], span_lists: list[list[tuple[int, int]]], seq_len: int,
         eos_id: int) -> PackedSplit:
    """Concatenate documents (eos after each) and cut into rows of ``seq_len``.

    A span is kept only if it lies inside one row; the last, partial row is dropped.
    """
    stream: list[int] = []
    row_spans: dict[int, list[tuple[int, int]]] = {}
    for toks, spans in zip(token_lists, span_lists, strict=True):
        base = len(stream)
        stream.extend(toks)
        stream.append(eos_id)
        for s, e in spans:
            a, b = base + s, base + e
            if a // seq_len == (b - 1) // seq_len:
                row = a // seq_len
                row_spans.setdefault(row, []).append((a - row * seq_len, b - row * seq_len))
    n = len(stream) // seq_len
    ids = torch.tensor(stream[: n * seq_len], dtype=torch.int32).view(n, seq_len)
    ptr = [0]
    flat: list[tuple[int, int]] = []
    for r in range(n):
        flat.extend(row_spans.get(r, []))
        ptr.append(len(flat))
    spans = torch.tensor(flat, dtype=torch.int32).view(-1, 2)
    return PackedSplit(ids, torch.tensor(ptr, dtype=torch.int64), spans)


def _cache_key(cfg: DataConfig, tokenizer) -> dict:
    vocab = hashlib.sha256(tokenizer.backend.to_str().encode("utf-8")).hexdigest()
    return {"config": json.loads(json.dumps(asdict(cfg))), "sources": source_fingerprint(cfg),
            "tokenizer_sha256": vocab}


def build_dataset(cfg: DataConfig, tokenizer, out_dir: str | Path) -> dict:
    """Read, tokenize, span and pack both splits into ``out_dir``; returns the manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = _cache_key(cfg, tokenizer)
    docs = read_corpus(cfg)
    random.Random(cfg.seed).shuffle(docs)   # mix files and sources across rows
    manifest = {**key, "files": {}, "splits": {}}
    (out / "val.safetensors").unlink(missing_ok=True)
    for split in ("train", "eval", "val"):
        chosen = [d for d in docs if d.is_eval == (split == "eval")
                  and d.is_val == (split == "val")]
        if split == "val" and not chosen:
            break
        encodings = tokenizer.backend.encode_batch([d.text for d in chosen],
                                                   add_special_tokens=False)
        pairs = list(zip(chosen, encodings, strict=True))
        repo_docs = {id(d) for d in chosen}
        if split == "train" and cfg.replay_mix > 0 and cfg.replay_sources:
            from training.data.replay import replay_documents
            want = int(sum(len(e.ids) for e in encodings) * cfg.replay_mix / (1 - cfg.replay_mix))
            extra = replay_documents(cfg, tokenizer, want, skip={d.sha256 for d in docs})
            manifest["splits"]["replay"] = {"files": len(extra),
                                            "tokens": sum(len(e.ids) for _, e in extra)}
            pairs += extra
            random.Random(cfg.seed + 1).shuffle(pairs)
        toks, spans = [], []
        for doc, enc in pairs:
            toks.append(enc.ids)
            spans.append(token_spans(doc.text, enc.offsets,
                                     node_byte_spans(doc.text, doc.language),
                                     cfg.max_span_tokens))
            if id(doc) in repo_docs:
                manifest["files"][doc.path] = {"split": split, "sha256": doc.sha256,
                                               "tokens": len(enc.ids)}
        packed = pack(toks, spans, cfg.seq_len, tokenizer.eos_id)
        packed.save(out / f"{split}.safetensors")
        manifest["splits"][split] = {"files": len(chosen), "rows": len(packed),
                                     "tokens": len(packed) * cfg.seq_len,
                                     "spans": int(packed.spans.shape[0])}
        log.info("%s: %d files → %d rows of %d tokens, %d spans", split, len(chosen),
                 len(packed), cfg.seq_len, packed.spans.shape[0])
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def load_or_build(cfg: DataConfig, tokenizer, out_dir: str | Path, *, rebuild: bool = False
                  ) -> tuple[PackedSplit, PackedSplit]:
    """The packed splits in ``out_dir``, built first unless they were packed from the same
    config, tokenizer and source files (paths, sizes, SHA-256), or when ``rebuild``."""
    out = Path(out_dir)
    manifest = out / "manifest.json"
    stored = json.loads(manifest.read_text()) if manifest.is_file() else None
    key = _cache_key(cfg, tokenizer)
    if rebuild or stored is None or {k: stored.get(k) for k in key} != key:
        if stored is not None:
            log.info("re-packing the data: %s", "--fresh" if rebuild else
                     "the sources, config or tokenizer changed since the last pack")
        build_dataset(cfg, tokenizer, out)
    else:
        log.info("reusing the packed data in %s (same sources, config and tokenizer)", out)
    return load_packed(out)


def load_packed(out_dir: str | Path) -> tuple[PackedSplit, PackedSplit]:
    out = Path(out_dir)
    return PackedSplit.load(out / "train.safetensors"), PackedSplit.load(out / "eval.safetensors")


def load_val(out_dir: str | Path) -> PackedSplit | None:
    """Early stopping's validation rows, when the data was packed with some (and they fill one)."""
    path = Path(out_dir) / "val.safetensors"
    split = PackedSplit.load(path) if path.is_file() else None
    return split if split is not None and len(split) > 0 else None


class BatchStream:
    """Row indices in a seeded permutation per epoch; (epoch, cursor) resumes it exactly."""

    def __init__(self, n_rows: int, batch_size: int, seed: int) -> None:
        if n_rows < batch_size:
            raise ValueError(f"{n_rows} rows cannot fill a batch of {batch_size}")
        self.n_rows, self.batch_size, self.seed = n_rows, batch_size, seed
        self.epoch, self.cursor = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_rows, generator=g).tolist()

    def next(self) -> list[int]:
        if self.cursor + self.batch_size > self.n_rows:   # drop the ragged end of an epoch
            self.epoch, self.cursor = self.epoch + 1, 0
            self._perm = self._permutation(self.epoch)
        rows = self._perm[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return rows

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed,
                "n_rows": self.n_rows, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if (state["n_rows"], state["batch_size"]) != (self.n_rows, self.batch_size):
            raise ValueError("resuming a data stream over different data or batch size")
        self.seed, self.epoch, self.cursor = state["seed"], state["epoch"], state["cursor"]
        self._perm = self._permutation(self.epoch)
