"""What the HTTP clients send and read: llama.cpp's ``/infill`` and OpenAI's ``/v1/completions``.

Both request shapes are checked field by field into one ``FimRequest``; a field of the wrong
type, an unknown field or an option that would change the answer's shape in a way this
server cannot honour is a ``BadRequest`` (one line, 400). Fields that steer a sampler this
model does not have (``top_k``, ``samplers``, ``cache_prompt``...) are accepted and ignored,
so llama.vim and llama.vscode work unchanged. The answers are built here too, in each
client's own shape; the server module only moves them.

A span request is ``/infill`` with ``lengths``: a language server using this one as its
remote engine (``core.remote``) chose the span itself, so the answer carries every
candidate with its confidence (``candidates``) for it to rank and judge.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from coda_lsp.core import prompt
from coda_lsp.core import settings as settings_mod
from coda_lsp.core.settings import Settings

MAX_CHOICES = prompt.MAX_CANDIDATES  # distinct fills one request can return (OpenAI's n)
MAX_STOPS = 16  # OpenAI allows 4; Continue sends more for its FIM templates


class BadRequest(Exception):
    """The request cannot be served as sent; the message is one line for the client."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FimRequest:
    prefix: str
    suffix: str
    options: Mapping[str, Any]  # per-request settings, wire (camelCase) names: steps, alg...
    max_tokens: int | None = None  # None: the settings' maxMiddleTokens
    n: int = 1
    stop: tuple[str, ...] = ()
    stream: bool = False
    stream_states: bool = False  # diffusion extra: stream each denoising step's partial fill
    include_usage: bool = False  # OpenAI stream_options.include_usage
    response_fields: tuple[str, ...] = ()  # llama.cpp: answer only these (flattened) fields
    client: str | None = None  # newest-wins key: requests from one client replace each other
    language: str | None = None  # an LSP languageId or grammar name: the grammar that ranks
    filename: str | None = None  # else the file's name says the language; else it is detected
    # The caller chose the span (a language server using this one as its remote engine):
    # one fill per candidate length, answered unranked as ``candidates`` with confidences.
    lengths: tuple[int, ...] | None = None
    fast: bool = False  # with lengths: the typing path (shortest lengths, context carried)
    inline: bool = False  # with lengths: an inline span (the one-line rule applies)
    seed: int | None = None  # with lengths: the sampling noise's seed (a contract retry)
    steps: int | None = None  # with lengths: the job's steps (a hole fill's may pass 1024)

    def settings(self, current: Settings) -> Settings:
        """The server's settings with this request's options; the confidence bar is the
        fill contract's, ``confidenceThreshold`` as in ``coda-lsp fill`` and the editors."""
        merged, problems = settings_mod.update(current, dict(self.options), current)
        if problems:  # "coda.alg must be ...; using ..." -> "alg must be ..."
            raise BadRequest(problems[0].removeprefix("coda.").split("; using")[0])
        if self.max_tokens is not None:
            merged = replace(merged, max_middle_tokens=min(merged.max_middle_tokens,
                                                           self.max_tokens))
        return merged

    @property
    def nothing_to_predict(self) -> bool:
        """llama.vim and llama.vscode send n_predict 0 to warm a cache; nothing to run."""
        return self.max_tokens == 0


# -- field checks ----------------------------------------------------------------------------

Check = Callable[[str, Any], Any]


def _text(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise BadRequest(f"{name} must be a string")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{name} is not valid Unicode (a lone surrogate)") from None
    return v


def _optional(check: Check) -> Check:
    return lambda name, v: None if v is None else check(name, v)


def _integer(lo: int, hi: int) -> Check:
    def check(name: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise BadRequest(f"{name} must be an integer in [{lo}, {hi}]")
        return v

    return check


def _number(lo: float, hi: float) -> Check:
    def check(name: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise BadRequest(f"{name} must be a number in [{lo}, {hi}]")
        return float(v)

    return check


def _flag(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise BadRequest(f"{name} must be true or false")
    return v


def _texts(name: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise BadRequest(f"{name} must be a list of strings")
    return tuple(_text(f"{name}[{i}]", x) for i, x in enumerate(v))


def _stops(name: str, v: Any) -> tuple[str, ...]:
    stops = (_text(name, v),) if isinstance(v, str) else _texts(name, v)
    if len(stops) > MAX_STOPS or any(not s for s in stops):
        raise BadRequest(f"{name} must be at most {MAX_STOPS} non-empty strings")
    return stops


def _chunks(name: str, v: Any) -> list:
    """input_extra: [{"text", "filename", "time"}], accepted and not used yet."""
    if not isinstance(v, list) or not all(isinstance(c, dict) for c in v):
        raise BadRequest(f"{name} must be a list of {{filename, text}} objects")
    for i, chunk in enumerate(v):
        _text(f"{name}[{i}].text", chunk.get("text", ""))
    return v


def _any(name: str, v: Any) -> Any:
    return v


MAX_LENGTHS = 64  # a span request's candidate lengths (the prompt keeps MAX_CANDIDATES)


def _lengths(name: str, v: Any) -> tuple[int, ...]:
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_LENGTHS:
        raise BadRequest(f"{name} must be a list of 1 to {MAX_LENGTHS} integers")
    return tuple(_integer(1, 1024)(f"{name}[{i}]", n) for i, n in enumerate(v))


# Settings a span request may steer a fill with, the language server's own names: what
# ``Engine.fill`` reads from its job's settings besides steps, alg and temperature.
SPAN_SETTINGS = ("algTemp", "contextTokens", "maxMiddleTokens", "fillHoleExact", "multiline")


def _span_settings(name: str, v: Any) -> Mapping[str, Any]:
    v = _object(name, v)
    unknown = sorted(set(v) - set(SPAN_SETTINGS))
    if unknown:
        raise BadRequest(f"{name}: unknown setting {unknown[0]!r} (one of "
                         + ", ".join(SPAN_SETTINGS) + ")")
    return v


def _samplers(name: str, v: Any) -> Any:
    if isinstance(v, str):
        return v
    return _texts(name, v)


def _object(name: str, v: Any) -> Mapping[str, Any]:
    if not isinstance(v, dict):
        raise BadRequest(f"{name} must be an object")
    return v


def _unsupported(what: str) -> Check:
    """A field whose non-default value would change the answer's shape: refused, not faked."""

    def check(name: str, v: Any) -> Any:
        if v not in (None, False, 0):
            raise BadRequest(f"{name} is not supported by this server ({what})")
        return v

    return check


def _steps(name: str, v: Any) -> int:
    """1-1024 as the steps setting; a span request's hole fill (``fillHoleSteps``) up to 4096
    (past 1024 without ``lengths``, the settings refuse it with the same line)."""
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4096:
        raise BadRequest(f"{name} must be an integer in [1, 1024] (a span request's: 4096)")
    return v


STEPS = _steps
# Diffusion extras, the same on both endpoints.
EXTRAS: dict[str, Check] = {
    "steps": STEPS,
    "alg": _text,
    "stream_states": _flag,
    "language": _optional(_text),
    "filename": _optional(_text),
}

INFILL_FIELDS: dict[str, Check] = {
    "input_prefix": _text,
    "input_suffix": _text,
    "input_extra": _chunks,
    "prompt": _text,
    "n_predict": _integer(-1, 1 << 20),
    "temperature": _number(0.0, 10.0),
    "stream": _flag,
    "stop": _stops,
    "response_fields": _texts,
    # accepted and ignored: sampler knobs of an autoregressive server, caching hints, slots
    **{name: _any for name in (
        "n_indent", "top_k", "top_p", "min_p", "typical_p", "cache_prompt", "t_max_prompt_ms",
        "t_max_predict_ms", "id_slot", "lora", "seed", "n_keep", "n_probs", "min_keep",
        "repeat_penalty", "repeat_last_n", "presence_penalty", "frequency_penalty",
        "dynatemp_range", "dynatemp_exponent", "mirostat", "mirostat_tau", "mirostat_eta",
        "xtc_probability", "xtc_threshold", "dry_multiplier", "dry_base", "dry_allowed_length",
        "dry_penalty_last_n", "ignore_eos", "timings_per_token", "return_tokens",
        "post_sampling_probs", "logit_bias", "model")},
    "samplers": _samplers,
    **EXTRAS,
    # the span request (a remote engine): the caller's lengths, job flags and settings
    "lengths": _lengths,
    "fast": _flag,
    "inline": _flag,
    "settings": _span_settings,
}

COMPLETIONS_FIELDS: dict[str, Check] = {
    "model": _optional(_text),
    "prompt": _any,  # a string or a list of one string: checked below
    "suffix": _optional(_text),
    "max_tokens": _optional(_integer(0, 1 << 20)),
    "temperature": _optional(_number(0.0, 2.0)),
    "n": _optional(_integer(1, MAX_CHOICES)),
    "stop": _optional(_stops),
    "stream": _optional(_flag),
    "stream_options": _optional(_object),
    "user": _optional(_text),
    "echo": _unsupported("echo"),
    "logprobs": _unsupported("log probabilities"),
    "best_of": _optional(_integer(1, MAX_CHOICES)),
    **{name: _any for name in ("top_p", "presence_penalty", "frequency_penalty", "logit_bias",
                               "seed")},
    **EXTRAS,
}


def _checked(body: Any, fields: Mapping[str, Check]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}")
    return {name: fields[name](name, value) for name, value in body.items()}


def _options(v: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name in ("steps", "alg", "temperature"):
        if v.get(name) is not None:
            out[name] = v[name]
    return out


def parse_infill(body: Any, client: str | None = None) -> FimRequest:
    """llama.cpp: the text before the cursor is input_prefix + prompt (the cursor line).

    With ``lengths`` (a span request), ``fast``, ``inline``, ``settings`` and a ``seed`` of
    0 or more steer the one fill; without it they are refused (``seed`` ignored, as before).
    """
    v = _checked(body, INFILL_FIELDS)
    lengths = v.get("lengths")
    if lengths is None and any(k in v for k in ("fast", "inline", "settings")):
        raise BadRequest("fast, inline and settings go with lengths (a span request)")
    seed, options = v.get("seed"), _options(v)
    steps = None if lengths is None else options.pop("steps", None)
    n_predict = v.get("n_predict", -1)
    return FimRequest(
        prefix=v.get("input_prefix", "") + v.get("prompt", ""),
        suffix=v.get("input_suffix", ""),
        options={**options, **v.get("settings", {})},
        max_tokens=None if n_predict < 0 else n_predict,
        stop=v.get("stop", ()),
        stream=v.get("stream", False),
        stream_states=v.get("stream_states", False),
        response_fields=v.get("response_fields", ()),
        client=client,
        language=v.get("language"),
        filename=v.get("filename"),
        lengths=lengths,
        fast=v.get("fast", False),
        inline=v.get("inline", False),
        seed=seed if lengths is not None and _is_seed(seed) else None,
        steps=steps,
    )


def _is_seed(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 63


def parse_completions(body: Any, client: str | None = None) -> FimRequest:
    """OpenAI: prompt is the text before the cursor, suffix the text after it."""
    v = _checked(body, COMPLETIONS_FIELDS)
    text = v.get("prompt", "")
    if isinstance(text, list) and len(text) == 1:
        text = text[0]
    text = _text("prompt", text) if isinstance(text, str) else None
    if text is None:
        raise BadRequest("prompt must be a string (or a list of one string)")
    stream_options = v.get("stream_options") or {}
    return FimRequest(
        prefix=text,
        suffix=v.get("suffix") or "",
        options=_options(v),
        max_tokens=v.get("max_tokens"),
        n=v.get("n") or 1,
        stop=v.get("stop") or (),
        stream=bool(v.get("stream")),
        stream_states=v.get("stream_states", False),
        include_usage=stream_options.get("include_usage") is True,
        client=client or v.get("user"),
        language=v.get("language"),
        filename=v.get("filename"),
    )


# -- answers ---------------------------------------------------------------------------------


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(cuts)] if cuts else text


def choices(fills: list[str], n: int, stops: tuple[str, ...]) -> list[str]:
    """Up to n distinct texts, best first; one empty text when there is nothing to offer."""
    out: list[str] = []
    for text in fills:
        text = cut_at_stop(text, stops)
        if text not in out:
            out.append(text)
        if len(out) == n:
            break
    return out or [""]


@dataclass(frozen=True)
class Answer:
    """One finished fill request, whichever endpoint asked."""

    texts: list[str]
    prompt_tokens: int
    completion_tokens: list[int]  # per text
    prompt_ms: float
    model_ms: float
    steps: int
    model: str
    candidates: list[dict[str, Any]] | None = None  # a span request's fills, unranked


def timings(a: Answer) -> dict[str, float | int]:
    """llama.cpp's timings object; "predicted" is the whole denoising run."""
    prompt_n, predicted_n = a.prompt_tokens, a.completion_tokens[0]
    return {
        "prompt_n": prompt_n,
        "prompt_ms": a.prompt_ms,
        "prompt_per_token_ms": a.prompt_ms / max(prompt_n, 1),
        "prompt_per_second": 1e3 * prompt_n / max(a.prompt_ms, 1e-6),
        "predicted_n": predicted_n,
        "predicted_ms": a.model_ms,
        "predicted_per_token_ms": a.model_ms / max(predicted_n, 1),
        "predicted_per_second": 1e3 * predicted_n / max(a.model_ms, 1e-6),
        "steps": a.steps,
    }


def infill_body(a: Answer, fields: tuple[str, ...] = ()) -> dict[str, Any]:
    body = {
        "index": 0,
        "content": a.texts[0],
        "stop": True,
        "stop_type": "eos",
        "stopping_word": "",
        "model": a.model,
        "tokens_predicted": a.completion_tokens[0],
        "tokens_evaluated": a.prompt_tokens,
        "tokens_cached": 0,
        "truncated": False,
        "timings": timings(a),
    }
    if a.candidates is not None:
        body["candidates"] = a.candidates
    return select(body, fields) if fields else body


def select(body: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """llama.cpp's response_fields: each "a/b" path that exists, under its path as key."""
    out = {}
    for path in fields:
        node: Any = body
        for part in path.split("/"):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            out[path] = node
    return out


def infill_chunk(content: str, state: dict | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {"index": 0, "content": content, "stop": False}
    if state is not None:
        chunk["state"] = state
    return chunk


def completion_id() -> str:
    return "cmpl-" + uuid.uuid4().hex[:24]


def usage(a: Answer) -> dict[str, int]:
    completion = sum(a.completion_tokens)
    return {"prompt_tokens": a.prompt_tokens, "completion_tokens": completion,
            "total_tokens": a.prompt_tokens + completion}


def completion_body(a: Answer, cid: str) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": a.model,
        "choices": [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None}
                    for i, t in enumerate(a.texts)],
        "usage": usage(a),
    }


def completion_chunk(cid: str, model: str, index: int, text: str,
                     finish_reason: str | None = None, state: dict | None = None) -> dict:
    chunk: dict[str, Any] = {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": index, "text": text, "finish_reason": finish_reason,
                     "logprobs": None}],
    }
    if state is not None:
        chunk["state"] = state
    return chunk


def fim_body(a: Answer, cid: str) -> dict[str, Any]:
    """Mistral-style ``/v1/fim/completions`` (what Continue calls for FIM): chat-shaped."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": a.model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": t},
                     "finish_reason": "stop"} for i, t in enumerate(a.texts)],
        "usage": usage(a),
    }


def fim_chunk(cid: str, model: str, index: int, text: str, finish_reason: str | None = None,
              state: dict | None = None) -> dict:
    chunk: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": index, "delta": {"role": "assistant", "content": text},
                     "finish_reason": finish_reason}],
    }
    if state is not None:
        chunk["state"] = state
    return chunk


def error_body(message: str, status: int) -> dict[str, Any]:
    """The error shape both llama.cpp and OpenAI clients read."""
    kind = {401: "authentication_error", 404: "not_found_error", 409: "superseded",
            413: "invalid_request_error", 503: "unavailable_error"}.get(status,
                                                                        "invalid_request_error")
    return {"error": {"message": message, "type": kind, "code": status}}
