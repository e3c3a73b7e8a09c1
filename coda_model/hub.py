"""A model reference is a folder or a Hugging Face Hub id (``owner/name``, ``owner/name@rev``).

``resolve`` turns either into a local folder the loader can read. A folder is used as it is and
never touches the network. A Hub id goes through ``huggingface_hub.snapshot_download`` into
the standard HF cache (``HF_HOME``), fetching only the files the loader reads; once cached it
loads with no network at all (``HF_HUB_OFFLINE=1`` included). Every failure the user can fix
is a ``HubError`` whose message is one line naming the cause and the fix.

What a cut download keeps (huggingface_hub 2.x): within one call the library resumes a broken
transfer where it stopped (HTTP Range, a few retries); the partial ``.incomplete`` file of a
call that gives up is deleted, so the next run starts that file again from zero, while every
file already complete stays in the cache and is not fetched again.

A snapshot (or a folder with weights) is checked before it is returned (``verify``): every
weight file's safetensors header is read and its size must match what the header promises,
and a shard index must name only shards that are there. A partial or corrupt download is
therefore never loaded.
"""

from __future__ import annotations

import errno
import json
import os
import re
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import INDEX, TOKENIZER_FILES, WEIGHTS

# (bytes done, bytes to fetch in this call or None while unknown); called from download threads
Progress = Callable[[int, int | None], None]

ALLOW_PATTERNS = ["config.json", *TOKENIZER_FILES, "*.safetensors", INDEX]
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


class HubError(RuntimeError):
    """A model reference that cannot be resolved; ``str()`` is one line with cause and fix."""


@dataclass(frozen=True)
class HubId:
    repo: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo + (f"@{self.revision}" if self.revision else "")


def parse(ref: str | os.PathLike) -> Path | HubId:
    """A folder that exists is a folder; ``owner/name[@revision]`` otherwise is a Hub id."""
    path = Path(ref).expanduser()
    if path.exists() or not isinstance(ref, str):
        return path
    m = _HUB_ID.match(ref)
    if m is None or ref.startswith((".", "~")):
        return path
    return HubId(m["repo"], m["revision"])


def resolve(ref: str | os.PathLike, *, progress: Progress | None = None,
            force: bool = False) -> Path:
    """The local folder for a model reference; downloads a Hub id's files if not cached.

    ``progress`` receives byte counts while downloading (tqdm bars are drawn too when stderr
    is a terminal); without it huggingface_hub's own tqdm bars go to stderr. ``force``
    fetches again files that are already cached (the fix for a corrupt cache).
    """
    target = parse(ref)
    if isinstance(target, Path):
        if not target.is_dir():
            raise HubError(f"model folder not found: {target} (give a folder, or a Hub id "
                           "like Salesforce/CoDA-v0-Instruct)")
        if any(target.glob("*.safetensors")):  # a half-copied folder is refused here too
            verify(target)
        return target
    folder = Path(_download(target, progress, force))
    verify(folder, str(target))
    return folder


def _snapshot(hub_id: HubId, **kwargs) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(hub_id.repo, revision=hub_id.revision, repo_type="model",
                             allow_patterns=ALLOW_PATTERNS, **kwargs)


def _download(hub_id: HubId, progress: Progress | None, force: bool) -> str:
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    kwargs = {"force_download": force}
    if progress is not None:
        kwargs["tqdm_class"] = reporting_bar(progress, total=_bytes_to_fetch(hub_id, force),
                                             show=sys.stderr.isatty())
    pull = f"`coda-lsp pull {hub_id}`"
    try:
        return _snapshot(hub_id, **kwargs)
    except GatedRepoError:  # before RepositoryNotFoundError: it is a subclass
        raise HubError(f"{hub_id} is gated: accept its terms on the Hub page, then log in "
                       "(`hf auth login`) or set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise HubError(f"{hub_id}: no revision {hub_id.revision!r} in {hub_id.repo}: give an "
                       "existing branch, tag or commit after '@'") from None
    except RepositoryNotFoundError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            raise HubError(f"{hub_id}: the Hub answered 401 (private, or no such repository): "
                           "log in (`hf auth login`) or set HF_TOKEN") from None
        raise HubError(f"{hub_id}: no such model on the Hub (404) and no folder of that name "
                       "here: check the id") from None
    except LocalEntryNotFoundError as exc:  # IncompleteSnapshotError is one too
        if constants.HF_HUB_OFFLINE:
            raise HubError(f"{hub_id} is not in the cache and HF_HUB_OFFLINE=1: fetch it once "
                           f"online with {pull}") from None
        raise HubError(f"{hub_id}: cannot reach the Hub and it is not cached ({_cause(exc)}): "
                       f"check the network, then {pull}") from None
    except HfHubHTTPError as exc:
        if getattr(getattr(exc, "response", None), "status_code", None) == 401:
            raise HubError(f"{hub_id}: the Hub refused the token (401): set a valid HF_TOKEN "
                           "or log in again (`hf auth login`)") from None
        raise HubError(f"{hub_id}: the Hub refused ({_cause(exc)}): try again later, or "
                       "check HF_TOKEN") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise HubError(f"{hub_id}: no space left on the disk of the HF cache "
                           f"({constants.HF_HUB_CACHE}): free space or point HF_HOME at a "
                           "larger disk, then run it again") from None
        raise HubError(f"{hub_id}: download interrupted ({_cause(exc)}): run it again; "
                       "complete files are kept, the cut file starts over") from None
    except Exception as exc:  # httpx errors after the library's retries: the link went away
        raise HubError(f"{hub_id}: download interrupted ({_cause(exc)}): run it again; "
                       "complete files are kept, the cut file starts over") from None


def _bytes_to_fetch(hub_id: HubId, force: bool) -> int | None:
    """The bytes a download will fetch (a dry run: the file list and sizes, nothing written),
    so the percent is of the whole and never goes back; None offline or on any failure
    (the download itself then says what is wrong)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        plan = _snapshot(hub_id, dry_run=True, force_download=force,
                         tqdm_class=reporting_bar(lambda done, total: None))
    except Exception:  # the real call raises it again, with its one line
        return None
    return sum(f.file_size or 0 for f in plan if f.will_download)


def _cause(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__


def verify(folder: Path, name: str | None = None) -> None:
    """Refuse a folder whose config or weights are missing, truncated or not safetensors."""
    label = name or str(folder)
    fix = f"run `coda-lsp pull {name} --force`" if name else "copy the folder again"
    if not (folder / "config.json").is_file():
        raise HubError(f"{label}: no config.json, not a CoDA model: {fix}")
    if (folder / INDEX).is_file():
        try:
            index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise HubError(f"{label}: {INDEX} is unreadable: {fix}") from None
    elif (folder / WEIGHTS).is_file():
        shards = [WEIGHTS]
    else:
        raise HubError(f"{label}: no {WEIGHTS} or {INDEX} (only safetensors are loaded): {fix}")
    for shard in shards:
        problem = _safetensors_problem(folder / shard)
        if problem:
            raise HubError(f"{label}: {shard} {problem}: {fix}")


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be whole, from its header alone (no tensor is read)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "is truncated (no header)"
            (length,) = struct.unpack("<Q", head)
            if length > min(size - 8, 100 << 20):
                return "is truncated or not safetensors (bad header length)"
            header = json.loads(f.read(length))
    except FileNotFoundError:
        return "is missing"
    except (OSError, ValueError):
        return "is corrupt (unreadable header)"
    if not isinstance(header, dict):
        return "is corrupt (header is not a table)"
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(entry["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            return f"is corrupt (tensor {key} has no data offsets)"
    expected = 8 + length + end
    if size != expected:
        return f"is incomplete ({size} of {expected} bytes)"
    return None


def reporting_bar(progress: Progress, total: int | None = None, show: bool = False) -> type:
    """A tqdm class for ``snapshot_download`` that hands byte counts to ``progress``.

    snapshot_download feeds its byte bars (``unit="B"``) from every file's download thread
    (in 10 MB pieces); the largest count seen is reported against ``total``, else against the
    largest bar total seen (which grows as files start). ``show``: draw the bars too.
    """
    from tqdm.auto import tqdm

    state = {"done": 0, "total": 0}
    fixed = total
    lock = threading.Lock()

    class ReportingBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            if not show:
                kwargs["disable"] = True
            self._bytes = kwargs.get("unit") == "B"
            self._count = int(kwargs.get("initial") or 0)
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            shown = super().update(n)
            if self._bytes and n:
                with lock:
                    self._count += int(n)
                    total = int(self.total or 0)
                    state["done"] = max(state["done"], self._count)
                    state["total"] = max(state["total"], total)
                    done, known = state["done"], fixed or state["total"] or None
                progress(done, known)
            return shown

    return ReportingBar
