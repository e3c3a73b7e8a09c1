"""Whole repositories no training data came from: their provenance, their fetch, their holes.

The stdlib held-out files (``training.data.heldout``) share the corpus's style and names, so
their scores flatter a model; these repositories are held out as a whole. ``unseen_repos.json``
(beside this module) pins each one as a PyPI sdist: name, version, file name, sha256, licence
and why it is permissive. :func:`fetch` is the only step that touches the network: it runs pip
(the ordinary client), checks the sha256 before anything is unpacked, and keeps the Python
files under ``CACHE/<name>-<version>/``; sources are never committed.

:func:`sample_holes` cuts holes the way a user would for "Fill this hole": a ``line`` hole is
one whole simple statement, a ``block`` hole the statements of a short body (2 to 8 lines),
each replaced by nothing here (the caller puts the ``<FILL>`` marker or masks there). Nothing
here runs a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from coda_syntax import languages, spans
from training.data.heldout import Example

MANIFEST = Path(__file__).with_name("unseen_repos.json")
PERMISSIVE = ("MIT", "BSD", "Apache", "PSF", "ISC")
TASK = "unseen"
BLOCK_LINES = (2, 8)   # a body a user would hand to "Fill this hole"
MAX_CHARS = {"line": 160, "block": 480}


class UnseenError(RuntimeError):
    """A repository that cannot be fetched or read; ``str()`` is one line with the fix."""


@dataclass(frozen=True)
class Repo:
    name: str
    version: str
    sdist: str
    sha256: str
    licence: str
    why: str

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.version}"


def manifest(path: Path = MANIFEST) -> tuple[list[Repo], tuple[str, ...]]:
    """The pinned repositories and the path parts left out of each (tests, docs, setup.py)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Repo(**r) for r in data["repos"]], tuple(data.get("exclude", ()))


def default_cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "coda-lsp" / "unseen-repos"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(cache: Path, repos: Sequence[Repo], pip_args: Sequence[str] = (),
          log=print) -> list[Path]:
    """Each repository's folder in ``cache``, downloading (pip) and unpacking what is missing.

    A download whose sha256 differs from the manifest's is deleted and raises: nothing of it
    is unpacked. ``pip_args`` go to ``pip download`` (an index URL, ``--find-links``...)."""
    cache.mkdir(parents=True, exist_ok=True)
    folders = []
    for repo in repos:
        folder = cache / repo.folder
        stamp = folder / ".sha256"
        if stamp.is_file() and stamp.read_text().strip() == repo.sha256:
            folders.append(folder)
            continue
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            log(f"fetching {repo.name}=={repo.version} ({repo.sdist})")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--disable-pip-version-check", "-q", f"{repo.name}=={repo.version}",
                   "-d", tmp, *pip_args]
            done = subprocess.run(cmd, capture_output=True, text=True)
            sdist = Path(tmp) / repo.sdist
            if done.returncode != 0 or not sdist.is_file():
                last = (done.stderr.strip().splitlines() or ["no file"])[-1]
                raise UnseenError(f"{repo.name}=={repo.version}: pip download gave no "
                                  f"{repo.sdist} ({last}); check the network or --pip-args")
            got = sha256_of(sdist)
            if got != repo.sha256:
                raise UnseenError(f"{repo.sdist}: sha256 {got} is not the manifest's "
                                  f"{repo.sha256}: not unpacked (a changed or wrong file)")
            _unpack(sdist, folder)
        stamp.write_text(repo.sha256 + "\n")
        folders.append(folder)
    return folders


def _unpack(sdist: Path, folder: Path) -> None:
    """The sdist's Python files and licence texts, paths relative to its top folder."""
    if folder.exists():
        shutil.rmtree(folder)
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts[1:]
            if not member.isfile() or not parts or ".." in parts:
                continue
            if not (parts[-1].endswith(".py") or parts[-1].upper().startswith(("LICEN",
                                                                                 "COPYING"))):
                continue
            target = folder.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src:
                target.write_bytes(src.read())


def python_files(folder: Path, exclude: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(path relative to the folder, text) of each Python file not excluded, sorted."""
    out = []
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder).as_posix()
        if any(rel == e or rel.startswith(e) or f"/{e}" in f"/{rel}" for e in exclude):
            continue
        try:
            out.append((rel, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue
    return out


def candidate_holes(text: str) -> dict[str, list[tuple[int, int]]]:
    """Byte ranges a user might make a hole of: whole simple statements on one line, and short
    bodies from their first statement to the end of their last."""
    source = text.encode("utf-8")
    syn = spans.Syntax(languages.resolve(language_id="python"), source)
    found: dict[str, list[tuple[int, int]]] = {"line": [], "block": []}
    if syn.tree is None:
        return found
    stack = [syn.tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.named_children)
        if node.type == "block" and node.named_children:
            start, end = node.named_children[0].start_byte, node.end_byte
            lines = source[start:end].count(b"\n") + 1
            if BLOCK_LINES[0] <= lines <= BLOCK_LINES[1] and end - start <= MAX_CHARS["block"] \
                    and _starts_line(source, start):
                found["block"].append((start, end))
        elif node.type.endswith("statement") and node.parent is not None and \
                node.parent.type in ("block", "module") and b"\n" not in \
                source[node.start_byte:node.end_byte] and \
                node.end_byte - node.start_byte <= MAX_CHARS["line"] and \
                _starts_line(source, node.start_byte) and _ends_line(source, node.end_byte):
            found["line"].append((node.start_byte, node.end_byte))
    return {k: sorted(v) for k, v in found.items()}


def _starts_line(source: bytes, at: int) -> bool:
    return not source[source.rfind(b"\n", 0, at) + 1:at].strip()


def _ends_line(source: bytes, at: int) -> bool:
    end = source.find(b"\n", at)
    rest = source[at:end if end >= 0 else len(source)]
    return not rest.strip()


def sample_holes(files: Sequence[tuple[str, str]], repo: str, *, lines: int = 15,
                 blocks: int = 10, seed: int = 0) -> list[Example]:
    """Seeded line and block holes from one repository's (path, text) files
    (``Example.kind`` is ``line`` or ``block``; ``id`` is ``repo/path#byte``)."""
    pool: dict[str, list[tuple[str, str, int, int]]] = {"line": [], "block": []}
    for rel, text in files:
        for kind, ranges in candidate_holes(text).items():
            pool[kind] += [(rel, text, s, e) for s, e in ranges]
    out = []
    for kind, want in (("line", lines), ("block", blocks)):
        rng = random.Random(f"{seed}:{repo}:{kind}")
        for rel, text, s, e in sorted(rng.sample(pool[kind], min(want, len(pool[kind]))),
                                      key=lambda c: (c[0], c[2])):
            source = text.encode("utf-8")
            out.append(Example(TASK, f"{repo}/{rel}#{s}", source[:s].decode("utf-8"),
                               source[s:e].decode("utf-8"), source[e:].decode("utf-8"),
                               kind=kind))
    return out


def examples(cache: Path, repos: Sequence[Repo], exclude: Sequence[str] = (), *,
             lines: int = 15, blocks: int = 10, seed: int = 0) -> list[Example]:
    """Every repository's holes, from folders :func:`fetch` made (one line if one is missing)."""
    out = []
    for repo in repos:
        folder = cache / repo.folder
        if not (folder / ".sha256").is_file():
            raise UnseenError(f"{folder} is missing: run `python -m training.unseen fetch "
                              f"--cache {cache}` first (it downloads the pinned sdists)")
        out += sample_holes(python_files(folder, exclude), repo.name, lines=lines,
                            blocks=blocks, seed=seed)
    return out


def repo_of(example: Example) -> str:
    return example.id.split("/", 1)[0]


__all__ = ["MANIFEST", "PERMISSIVE", "Repo", "UnseenError", "manifest", "fetch", "examples",
           "sample_holes", "candidate_holes", "python_files", "default_cache", "repo_of",
           "sha256_of"]
