"""Which model serves what: the typing model and the fill model, each with its own worker.

Two roles: TYPING (ghost text the editor asks for while you type) and FILL ("Fill this hole",
``coda.fillHole``, an inline completion the user invoked, ``coda-lsp fill``, HTTP without
``--fast``). A slow fill model must never hold a keystroke back, so every loaded model runs
on its own ``scheduling.Scheduler``; two roles that name the same model, device and dtype
share one load and one worker. A swap loads the new model beside the old one and then
points the role at it: work already queued on the old worker finishes there (nothing is
dropped), and the old worker ends once its queue is empty. A load that fails leaves the role
on the model it had.

A model reference is a string; ``resolve`` is the one place that turns it into a folder.
A role may instead be served by a ``coda-lsp http`` elsewhere (``typingRemote`` /
``fillRemote``, ``core.remote``): its spec's reference is the URL, and a typing spec keeps
the local model it falls back to while the remote is down.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from coda_lsp.core.scheduling import Scheduler
from coda_lsp.core.settings import Settings

if TYPE_CHECKING:  # the engine imports torch
    from coda_lsp.core.engine import Engine

log = logging.getLogger(__name__)


# bytes done, bytes in all (None while unknown); called from huggingface_hub's download threads
Download = Callable[[int, int | None], None]


class Role(StrEnum):
    TYPING = "typing"
    FILL = "fill"


class ModelError(Exception):
    """A model reference that cannot be served, in one line that says why."""


class NotAModel(ModelError):
    """The reference names no model folder at all: the caller adds where to set the right one."""


def shipped_model_dir() -> Path:
    """The shipped model: package data when installed, else the repository's ``model/``."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "model", package.parent / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    return package.parent / "model"


def is_hub_id(ref: str) -> bool:
    """``owner/name[@revision]`` that is not an existing folder (``coda_model.hub.parse``)."""
    from coda_model.hub import HubId, parse

    return isinstance(parse(ref), HubId)


def resolve(ref: str, progress: Download | None = None) -> Path:
    """The folder a model reference names, checked cheaply (a wrong path fails at once, not
    minutes later in the editor): a folder as it is, a Hub id from the HF cache (downloaded
    there first when missing; ``coda_model.hub``; ``progress(done, total)`` gets the bytes
    from the download threads). The one place references become folders."""
    from coda_model.hub import HubError, HubId, parse
    from coda_model.hub import resolve as fetch

    target = parse(ref)
    if isinstance(target, HubId):
        try:
            path = fetch(ref, progress=progress)
        except HubError as exc:
            raise ModelError(str(exc)) from exc
    else:
        path = target
    if not path.is_dir():
        raise NotAModel(f"model folder not found: {path}")
    config = path / "config.json"
    if not config.is_file():
        raise NotAModel(f"{path} is not a model folder: no config.json")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{config}: unreadable ({exc})") from exc
    if not any(path.glob("*.safetensors")):
        raise NotAModel(f"{path}: no .safetensors weights")
    from coda_model.checkpoint import CheckpointError, read_config, require_diffusion

    try:  # an autoregressive checkpoint would load fine and fill with nonsense
        require_diffusion(path, read_config(path))
    except CheckpointError as exc:
        raise ModelError(str(exc)) from exc
    return path


@dataclass(frozen=True)
class ModelSpec:
    """What to load: a reference, a device (``auto`` picks per model) and a dtype (None:
    the device's default, ``engine.pick_dtype``). Equal specs share one loaded model."""

    ref: str  # a folder, a Hub id, or a remote's URL
    device: str = "auto"
    dtype: str | None = None
    fallback: str | None = None  # a remote typing model's local stand-in while it is down

    @property
    def remote(self) -> bool:
        return self.ref.startswith(("http://", "https://"))

    @property
    def label(self) -> str:
        """A short name for status lines: a folder's name, or "remote URL"."""
        if self.remote:
            return f"remote {self.ref}"
        return Path(self.ref).name or self.ref


def spec_for(settings: Settings, role: Role) -> ModelSpec:
    """The model a role asks for. The fill role takes whatever the typing role has where its
    own setting is unset, so by default one model serves both."""
    local = settings.typing_model or str(shipped_model_dir())
    remote = settings.typing_remote
    typing = ModelSpec(remote or local, settings.typing_device or "auto",
                       _dtype(settings.typing_dtype), fallback=local if remote else None)
    if role is Role.TYPING:
        return typing
    device = settings.fill_device or typing.device
    # an unset fill dtype follows the typing one only onto the same device (int8 is CPU-only,
    # a GPU's default is bf16): elsewhere the fill device's own default
    inherited = typing.dtype if device == typing.device else None
    dtype = _dtype(settings.fill_dtype) if settings.fill_dtype else inherited
    ref = settings.fill_remote or settings.fill_model or typing.ref
    # the typing role's remote, taken as it is (fills never fall back: only typing jobs do)
    fallback = typing.fallback if ref == typing.ref else None
    return ModelSpec(ref, device, dtype, fallback)


def _dtype(name: str | None) -> str | None:
    return None if name in (None, "auto") else name


@dataclass(eq=False)
class Served:
    """One loaded model and the worker that runs it."""

    spec: ModelSpec
    engine: Engine
    scheduler: Scheduler = field(default_factory=Scheduler)

    def describe(self) -> dict[str, str]:
        """Model, device and dtype as they ended up (``auto`` resolved)."""
        engine = self.engine
        return {"model": getattr(engine, "model_name", None) or self.spec.label,
                "ref": self.spec.ref,
                "device": str(getattr(engine, "device", self.spec.device)),
                "dtype": str(getattr(engine, "dtype_name", None) or self.spec.dtype or "auto")}


Loader = Callable[[ModelSpec], "Engine"]


def load_engine(spec: ModelSpec, compile: bool = False, api_key: str | None = None) -> Engine:
    """The default loader: resolve the reference, load weights and tokenizer; for a remote,
    connect (``api_key`` goes with each request) with the local fallback loaded on demand."""
    if spec.remote:
        from coda_lsp.core.remote import RemoteEngine, RemoteError

        local = None if spec.fallback is None else ModelSpec(spec.fallback, spec.device,
                                                             spec.dtype)
        try:
            return RemoteEngine.connect(spec.ref, api_key, local and (
                lambda: load_engine(local, compile)))
        except RemoteError as exc:  # a malformed URL
            raise ModelError(str(exc)) from exc
    from coda_lsp.core.engine import Engine

    return Engine.load(resolve(spec.ref), spec.device, spec.dtype, compile)


def download_message(name: str, done: int, total: int | None) -> tuple[str, int | None]:
    """"downloading owner/name: 42 % (12.3 / 29.1 MB)" and the percentage (None: no total),
    what the language server's progress and the HTTP server's ``/health`` say."""
    if not total:
        return f"downloading {name}: {done / 1e6:.1f} MB", None
    percentage = min(100, 100 * done // total)
    return (f"downloading {name}: {percentage} % ({done / 1e6:.1f} / {total / 1e6:.1f} MB)",
            percentage)


def model_name(spec: ModelSpec) -> str:
    """What a user calls the model: a Hub id as given, a folder by its name."""
    return spec.ref if is_hub_id(spec.ref) else spec.label


def first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


@dataclass
class Change:
    """What one ``Models.apply`` did to a role: loaded, or kept the old model (error)."""

    role: Role
    spec: ModelSpec
    error: str | None = None

    @property
    def message(self) -> str:
        if self.error is None:
            return f"{self.role.value} model {self.spec.label} ready"
        return f"cannot load the model {self.spec.ref} ({self.role.value}): {self.error}"


class Models:
    """The models each role is served by. ``get`` and ``install`` belong to the event loop
    thread; loads run on a thread of their own so the loop and the workers keep going."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self.roles: dict[Role, Served] = {}
        self.failed: dict[Role, ModelSpec] = {}  # not tried again until the setting changes
        self._swap: asyncio.Lock | None = None

    def get(self, role: Role) -> Served | None:
        return self.roles.get(role)

    def engine(self, role: Role) -> Engine | None:
        served = self.roles.get(role)
        return None if served is None else served.engine

    def find(self, spec: ModelSpec) -> Served | None:
        """A model already loaded with this spec (by either role)."""
        return next((s for s in self.roles.values() if s.spec == spec), None)

    def install(self, role: Role, served: Served) -> None:
        """Point ``role`` at ``served``; a model no role uses any more finishes its queue and
        its worker ends."""
        old = self.roles.get(role)
        self.roles[role] = served
        if old is not None and old is not served and old not in self.roles.values():
            old.scheduler.retire()
            log.info("%s model %s retired (its queued work finishes first)", role.value,
                     old.spec.label)

    def load(self, spec: ModelSpec, progress: Download | None = None) -> Served:
        """Load (blocking), or share the model another role already has with this spec.
        A Hub id is downloaded first (``progress`` sees the bytes), then the loader gets
        the cached folder; the served model keeps the spec it was asked for."""
        found = self.find(spec)
        if found is not None:
            return found
        local = spec
        if is_hub_id(spec.ref):
            local = replace(spec, ref=str(resolve(spec.ref, progress)))
        return Served(spec, self.loader(local))

    def pending(self, settings: Settings) -> list[tuple[Role, ModelSpec]]:
        """The roles ``apply(settings)`` would load a model for (none loaded with that spec,
        and not a spec that failed already)."""
        out = []
        for role in (Role.TYPING, Role.FILL):
            spec = spec_for(settings, role)
            current = self.roles.get(role)
            if current is not None and current.spec == spec or self.failed.get(role) == spec:
                continue
            if self.find(spec) is None and spec not in [s for _, s in out]:
                out.append((role, spec))
        return out

    async def apply(self, settings: Settings,
                    on_loading: Callable[[Role, ModelSpec], None] | None = None,
                    on_download: Callable[[ModelSpec, int, int | None], None] | None = None,
                    ) -> list[Change]:
        """Bring both roles to what ``settings`` ask for, one swap at a time. A role whose
        model fails to load keeps the model it had; with none (at start), the fill role falls
        back to the typing model. ``on_download(spec, done, total)`` sees a Hub id's bytes
        while it downloads (from the download threads: the caller hops to its own loop)."""
        if self._swap is None:
            self._swap = asyncio.Lock()
        changes: list[Change] = []
        async with self._swap:
            for role in (Role.TYPING, Role.FILL):
                spec = spec_for(settings, role)
                current = self.roles.get(role)
                if current is not None and current.spec == spec:
                    self.failed.pop(role, None)
                    continue
                if self.failed.get(role) == spec:
                    continue
                served = self.find(spec)
                if served is None:
                    if on_loading is not None:
                        on_loading(role, spec)
                    try:
                        progress = None if on_download is None else partial(on_download, spec)
                        served = await asyncio.to_thread(self.load, spec, progress)
                    except Exception as exc:  # CheckpointError, ModelError, torch errors
                        self.failed[role] = spec
                        changes.append(Change(role, spec, first_line(exc)))
                        typing = self.roles.get(Role.TYPING)
                        if role is Role.FILL and current is None and typing is not None:
                            self.roles[Role.FILL] = typing
                        continue
                self.failed.pop(role, None)
                self.install(role, served)
                changes.append(Change(role, spec))
        return changes

    def describe(self, with_ref: bool = True) -> dict[str, dict[str, str]]:
        """Per role: which model, on which device and dtype (what status lines show).
        with_ref=False leaves out the reference (a local path: not for unauthenticated HTTP)."""
        out = {role.value: served.describe() for role, served in self.roles.items()}
        if not with_ref:
            for described in out.values():
                described.pop("ref")
        return out

    def forget(self, key: str) -> None:
        """A closed document's state in every model serving it (its context carry)."""
        for served in {id(s): s for s in self.roles.values()}.values():
            served.engine.forget(key)

    def close(self) -> None:
        for served in {id(s): s for s in self.roles.values()}.values():
            served.scheduler.close()


__all__ = ["Change", "Download", "ModelError", "ModelSpec", "Models", "Role", "Served",
           "download_message", "first_line", "load_engine", "model_name", "resolve",
           "shipped_model_dir", "spec_for"]
