"""User settings: one frozen dataclass, structured once from camelCase wire payloads.

Settings arrive in ``initializationOptions`` and in ``workspace/didChangeConfiguration`` as
``{"settings": {"coda": {...}}}``. Editors rely on the camelCase names below
(``WIRE_NAMES``). A value that is missing keeps the current value; a value that is invalid
falls back to the field's default and is reported in the list of problems, which the server
shows to the user once. Unknown keys are reported too (a typo should not pass silently).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ALGORITHMS = ("maskgit_plus", "topk_margin", "entropy", "origin")
MULTILINE = ("auto", "always", "never")  # ghost text of several lines: see engine.one_line_only
DEVICES = ("auto", "cpu", "cuda", "mps")  # auto: cuda, then mps, then cpu (engine.pick_device)
DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")  # int8: CPU only


@dataclass(frozen=True)
class Settings:
    steps: int = 16
    # least uncertain positions first: on the shipped model +0.03-0.04 held-out ES and EM over
    # maskgit_plus, HumanEval single-line 0.021 -> 0.036 (benchmarks/README.md, "Unmasking order")
    alg: str = "entropy"
    alg_temp: float | None = None
    temperature: float = 0.0
    context_tokens: int = 1024
    max_middle_tokens: int = 64
    confidence_threshold: float = 0.1
    # ghost text the editor asks for by itself while you type: the stricter bar applies
    # (hides the least sure ~30 % of the shipped model's offers: benchmarks/bench_threshold.py)
    automatic_confidence_threshold: float = 0.4
    enabled_languages: tuple[str, ...] = ()  # empty: every language
    fill_hole_steps: int = 64
    fill_hole_exact: bool = False  # recompute the context every step (slower, the reference)
    multiline: str = "auto"  # ghost text of several lines: auto (not mid-statement), always, never
    enabled: bool = True
    # Which model serves what (core.models): a model reference (a folder) per role, and the
    # device and dtype each runs on. typing: ghost text while typing (None: --model, else the
    # shipped model); fill: hole fills and invoked completions (None: as the typing role).
    # Devices: auto = cuda, then mps, then cpu. dtype None / "auto": the device's default.
    # On the wire, null means "what the command line said" (--model, --fill-model, ...).
    typing_model: str | None = None
    fill_model: str | None = None
    typing_device: str | None = None
    fill_device: str | None = None
    typing_dtype: str | None = None
    fill_dtype: str | None = None
    # A role served by a ``coda-lsp http`` elsewhere (core.remote): its URL, or None (local).
    # typing: typingModel is then what typing falls back to while the remote is down; fill:
    # None takes the typing role's remote when typing has one and fillModel is unset.
    typing_remote: str | None = None
    fill_remote: str | None = None

    def inline_threshold(self, automatic: bool) -> float:
        """The confidence an inline offer needs: ghost text nobody asked for must clear the
        automatic bar too; an explicit request shows what the model has."""
        if automatic:
            return max(self.confidence_threshold, self.automatic_confidence_threshold)
        return self.confidence_threshold

    def language_enabled(self, language_id: str) -> bool:
        listed = not self.enabled_languages or language_id in self.enabled_languages
        return self.enabled and listed


WIRE_NAMES = {
    "steps": "steps",
    "alg": "alg",
    "algTemp": "alg_temp",
    "temperature": "temperature",
    "contextTokens": "context_tokens",
    "maxMiddleTokens": "max_middle_tokens",
    "confidenceThreshold": "confidence_threshold",
    "automaticConfidenceThreshold": "automatic_confidence_threshold",
    "enabledLanguages": "enabled_languages",
    "fillHoleSteps": "fill_hole_steps",
    "fillHoleExact": "fill_hole_exact",
    "multiline": "multiline",
    "enabled": "enabled",
    "typingModel": "typing_model",
    "fillModel": "fill_model",
    "typingDevice": "typing_device",
    "fillDevice": "fill_device",
    "typingDtype": "typing_dtype",
    "fillDtype": "fill_dtype",
    "typingRemote": "typing_remote",
    "fillRemote": "fill_remote",
}


def _int_in(lo: int, hi: int):
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"an integer in [{lo}, {hi}]")
        return v

    return check


def _float_in(lo: float, hi: float, optional: bool = False):
    def check(v: Any) -> float | None:
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise ValueError(f"a number in [{lo}, {hi}]" + (" or null" if optional else ""))
        return float(v)

    return check


def _alg(v: Any) -> str:
    if v == "original":  # the name the released generation_config.json uses
        v = "origin"
    if v not in ALGORITHMS:
        raise ValueError("one of " + ", ".join(ALGORITHMS))
    return v


def _one_of(choices: tuple[str, ...]):
    def check(v: Any) -> str:
        if v not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return v

    return check


class _CommandLine:
    """A null model setting: the value the server was started with (``update``'s defaults)."""


COMMAND_LINE = _CommandLine()


def _model_ref(v: Any) -> str | _CommandLine:
    if v is None or v == "":
        return COMMAND_LINE
    if not isinstance(v, str) or "\n" in v:
        raise ValueError("a model folder (a string) or null")
    if v.startswith(("http://", "https://")):
        raise ValueError("a model folder or Hub id (a coda-lsp http URL goes in typingRemote "
                         "or fillRemote)")
    return v


API_KEY_ENV = "CODA_LSP_API_KEY"  # a remote's key, and ``coda-lsp http --api-key``'s own


def remote_url(url: str) -> str:
    """A remote's URL without a trailing slash; ValueError when it is no http(s)://HOST[:PORT]
    (an optional path prefix, as behind a proxy, is kept)."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- a port that is no number raises here
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or \
            parts.fragment or url != url.strip():
        raise ValueError(f"a coda-lsp http URL (http://HOST:PORT), not {url!r}")
    return url.rstrip("/")


def _remote(v: Any) -> str | _CommandLine:
    if v is None or v == "":
        return COMMAND_LINE
    if not isinstance(v, str):
        raise ValueError("a coda-lsp http URL (http://HOST:PORT) or null")
    return remote_url(v)


def _or_command_line(check):
    def checked(v: Any):
        return COMMAND_LINE if v is None else check(v)

    return checked


def _languages(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
        raise ValueError("a list of language ids")
    return tuple(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


_CHECKS = {
    "steps": _int_in(1, 1024),
    "alg": _alg,
    "alg_temp": _float_in(0.0, 100.0, optional=True),
    "temperature": _float_in(0.0, 10.0),
    "context_tokens": _int_in(16, 32768),
    "max_middle_tokens": _int_in(1, 1024),
    "confidence_threshold": _float_in(0.0, 1.0),
    "automatic_confidence_threshold": _float_in(0.0, 1.0),
    "enabled_languages": _languages,
    "fill_hole_steps": _int_in(1, 4096),
    "fill_hole_exact": _bool,
    "multiline": _one_of(MULTILINE),
    "enabled": _bool,
    "typing_model": _model_ref,
    "fill_model": _model_ref,
    "typing_device": _or_command_line(_one_of(DEVICES)),
    "fill_device": _or_command_line(_one_of(DEVICES)),
    "typing_dtype": _or_command_line(_one_of(DTYPES)),
    "fill_dtype": _or_command_line(_one_of(DTYPES)),
    "typing_remote": _remote,
    "fill_remote": _remote,
}


def update(current: Settings, payload: Any, defaults: Settings) -> tuple[Settings, list[str]]:
    """Apply a wire payload (the ``coda`` object) to ``current``.

    Returns the new settings and human-readable problems (invalid values fell back to
    ``defaults``; unknown keys were ignored).
    """
    if payload is None:
        return current, []
    if not isinstance(payload, Mapping):
        return current, ["coda settings must be an object"]
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in payload.items():
        name = WIRE_NAMES.get(key)
        if name is None:
            problems.append(f"unknown setting coda.{key} ignored")
            continue
        try:
            changes[name] = _CHECKS[name](value)
            if changes[name] is COMMAND_LINE:
                changes[name] = getattr(defaults, name)
        except ValueError as exc:
            fallback = getattr(defaults, name)
            changes[name] = fallback
            problems.append(f"coda.{key} must be {exc}; using {fallback!r}")
    return dataclasses.replace(current, **changes), problems


def coda_section(payload: Any) -> Any:
    """The ``coda`` object inside ``initializationOptions`` or a configuration payload.

    Accepts ``{"settings": {"coda": {...}}}``, ``{"coda": {...}}`` and the bare object.
    """
    if isinstance(payload, Mapping):
        if isinstance(payload.get("settings"), Mapping):
            payload = payload["settings"]
        if "coda" in payload:
            return payload["coda"]
    return payload


def to_wire(settings: Settings) -> dict[str, Any]:
    """The camelCase form, e.g. for logs and for editors' default configuration."""
    out = {}
    for key, name in WIRE_NAMES.items():
        value = getattr(settings, name)
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
