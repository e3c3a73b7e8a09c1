"""What the HTTP clients send and read: llama.cpp's ``/infill`` and OpenAI's ``/v1/completions``.

Both request bodies are declared as pydantic models (strict: no string for a number, no number
for a flag), so their shapes read as a schema and ``/openapi.json`` serves it. A field of the
wrong type, an unknown field or an option that would change the answer's shape in a way this
server cannot honour is a ``BadRequest`` (one line, 400, naming the field and what it must be,
said from the field's own JSON schema). Fields that steer a sampler this model does not have
(``top_k``, ``samplers``, ``cache_prompt``...) are declared, accepted and ignored, so llama.vim,
llama.vscode and the ``openai`` client work unchanged; any other field is refused, so a typo
is not silently ignored. The answers are built here too, in each client's own shape; the
server module only moves them.

A span request is ``/infill`` with ``lengths``: a language server using this one as its
remote engine (``core.remote``) chose the span itself, so the answer carries every
candidate with its confidence (``candidates``) for it to rank and judge.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from coda_lsp.core import prompt
from coda_lsp.core import settings as settings_mod
from coda_lsp.core.settings import Settings

MAX_CHOICES = prompt.MAX_CANDIDATES  # distinct fills one request can return (OpenAI's n)
MAX_STOPS = 16  # OpenAI allows 4; Continue sends more for its FIM templates
MAX_TOKENS = 1 << 20


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


# -- field types -----------------------------------------------------------------------------


def _unicode(v: str) -> str:
    """JSON can carry a lone surrogate (``"\ud800"``); no tokenizer can read one."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("lone_surrogate", "a lone surrogate") from None
    return v


def _unsupported(what: str) -> AfterValidator:
    """A field whose non-default value would change the answer's shape: refused, not faked."""

    def check(v: Any) -> Any:
        if v not in (None, False, 0):
            raise PydanticCustomError("unsupported", what)
        return v

    return AfterValidator(check)


def _integer(lo: int, hi: int) -> Any:
    return Annotated[int, Field(ge=lo, le=hi)]


def _number(lo: float, hi: float) -> Any:
    return Annotated[float, Field(ge=lo, le=hi)]


Text = Annotated[str, AfterValidator(_unicode)]
NonEmpty = Annotated[Text, Field(min_length=1)]
Stops = NonEmpty | Annotated[list[NonEmpty], Field(max_length=MAX_STOPS)]
Steps = _integer(1, 1024)
Ignored = Annotated[Any, Field(description="accepted and ignored (no such knob here)")]


def _refused(what: str) -> Any:
    return Annotated[Any, _unsupported(what), WithJsonSchema(
        {"enum": [None, False, 0], "description": f"not supported ({what}): only off"})]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    # diffusion extras, the same on both endpoints
    steps: Steps | None = Field(None, description="denoising steps (default: the server's)")
    alg: Text | None = Field(None, description="the unmasking order, as the `alg` setting")
    stream_states: bool = Field(False, description="stream each denoising step's candidates "
                                                   "(needs stream: true)")
    language: Text | None = Field(None, description="an LSP languageId or grammar name: the "
                                                    "grammar that checks the fill")
    filename: Text | None = Field(None, description="else the file's name says the language; "
                                                    "else it is detected")


class ExtraChunk(BaseModel):
    """llama.vim's ring buffer of other text: accepted, not used yet."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    text: Text = ""
    filename: Any = None
    time: Any = None


# sampler knobs of an autoregressive server, caching hints, slots: llama.vim sends some
LLAMA_IGNORED = (
    "n_indent", "top_k", "top_p", "min_p", "typical_p", "cache_prompt", "t_max_prompt_ms",
    "t_max_predict_ms", "id_slot", "lora", "seed", "n_keep", "n_probs", "min_keep",
    "repeat_penalty", "repeat_last_n", "presence_penalty", "frequency_penalty",
    "dynatemp_range", "dynatemp_exponent", "mirostat", "mirostat_tau", "mirostat_eta",
    "xtc_probability", "xtc_threshold", "dry_multiplier", "dry_base", "dry_allowed_length",
    "dry_penalty_last_n", "ignore_eos", "timings_per_token", "return_tokens",
    "post_sampling_probs", "logit_bias", "model")
OPENAI_IGNORED = ("top_p", "presence_penalty", "frequency_penalty", "logit_bias", "seed")

_LlamaIgnored: Any = create_model("_LlamaIgnored", __base__=_Body,
                                  **{name: (Ignored, None) for name in LLAMA_IGNORED})
_OpenAIIgnored: Any = create_model("_OpenAIIgnored", __base__=_Body,
                                   **{name: (Ignored, None) for name in OPENAI_IGNORED})


MAX_LENGTHS = 64  # a span request's candidate lengths (the prompt keeps MAX_CANDIDATES)
SPAN_MAX_STEPS = 4096  # a span request carries a hole fill's fillHoleSteps
Lengths = Annotated[list[_integer(1, 1024)], Field(min_length=1, max_length=MAX_LENGTHS)]


class SpanSettings(BaseModel):
    """Settings a span request may steer a fill with, the language server's own names: what
    ``Engine.fill`` reads from its job's settings besides steps, alg and temperature. Their
    values are checked by ``settings.update``, as the editors' are."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    algTemp: Any = None  # noqa: N815 -- the settings' wire names
    contextTokens: Any = None  # noqa: N815
    maxMiddleTokens: Any = None  # noqa: N815
    fillHoleExact: Any = None  # noqa: N815
    multiline: Any = None


SPAN_SETTINGS = tuple(SpanSettings.model_fields)


class InfillRequest(_LlamaIgnored):
    """llama.cpp's ``POST /infill``: the text before the cursor is input_prefix + prompt."""

    input_prefix: Text = ""
    input_suffix: Text = ""
    prompt: Text = Field("", description="the cursor line up to the cursor")
    input_extra: list[ExtraChunk] = []
    n_predict: _integer(-1, MAX_TOKENS) = Field(-1, description="-1: the server's limit; "
                                                               "0: nothing to run")
    temperature: _number(0.0, 10.0) | None = None
    stream: bool = False
    stop: Stops = []
    response_fields: list[Text] = Field([], description="answer only these (a/b) fields")
    samplers: Text | list[Text] | None = Field(None, description="accepted and ignored")
    # the span request (a language server's remote engine): its lengths, job flags, settings
    # the range is checked with lengths in view (_span_request); the schema says the widest
    steps: Annotated[int, WithJsonSchema({"type": "integer", "minimum": 1,
                                          "maximum": SPAN_MAX_STEPS})] | None = Field(
        None, description=f"denoising steps, 1-1024 (a span request's: up to {SPAN_MAX_STEPS})")
    lengths: Lengths | None = Field(None, description="a span request: the caller's "
                                    f"candidate mask counts, 1 to {MAX_LENGTHS} integers")
    fast: bool | None = Field(None, description="with lengths: the typing path")
    inline: bool | None = Field(None, description="with lengths: the one-line rule applies")
    choices: _integer(1, MAX_CHOICES) | None = Field(
        None, description="with lengths: the fills the caller can show (the typing path "
                          "tries two lengths for more than one)")
    settings: SpanSettings | None = Field(None, description="with lengths")

    @model_validator(mode="after")
    def _span_request(self) -> InfillRequest:
        """A span request's fields go together; its steps may pass the setting's 1024."""
        if self.lengths is None and (self.fast, self.inline, self.choices,
                                     self.settings) != (None,) * 4:
            raise PydanticCustomError("span_only", "fast, inline, choices and settings go with "
                                                   "lengths (a span request)")
        limit = 1024 if self.lengths is None else SPAN_MAX_STEPS
        if self.steps is not None and not 1 <= self.steps <= limit:
            raise PydanticCustomError("steps_range", "steps must be an integer in [1, {limit}]",
                                      {"limit": limit})
        return self


class CompletionsRequest(_OpenAIIgnored):
    """OpenAI's ``POST /v1/completions`` (also ``/v1/fim/completions``): prompt, then suffix."""

    model: Text | None = None
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=1)] = ""
    suffix: Text | None = None
    max_tokens: _integer(0, MAX_TOKENS) | None = None
    temperature: _number(0.0, 2.0) | None = None
    n: _integer(1, MAX_CHOICES) | None = None
    best_of: _integer(1, MAX_CHOICES) | None = None
    stop: Stops | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    user: Text | None = Field(None, description="the newest-wins key if no X-Coda-Client")
    echo: _refused("echo") = None
    logprobs: _refused("log probabilities") = None


# -- one-line messages -----------------------------------------------------------------------


WHOLE_LINES = ("span_only", "steps_range")  # errors whose message is the whole line


def _validated(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise BadRequest(_message(model, exc.errors(include_url=False))) from None


def _message(model: type[BaseModel], errors: list[Any]) -> str:
    """The first problem in one line; unknown fields first, as a typo is the likeliest."""
    schema = _schema(model)
    unknown = sorted(e["loc"] for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        *parent, key = unknown[0]
        if not parent:
            return f"unknown field {key!r}"
        name, node = _field(schema, tuple(parent))
        known = ", ".join(_resolve(schema, node).get("properties", {}))
        return f"{name}: unknown field {key!r} (one of {known})"
    error = errors[0]
    if error["type"] == "model_type" and not error["loc"]:
        return "the body must be a JSON object"
    if error["type"] in WHOLE_LINES:
        return error["msg"]
    name, node = _field(schema, error["loc"])
    if error["type"] == "lone_surrogate":
        return f"{name} is not valid Unicode (a lone surrogate)"
    if error["type"] == "unsupported":
        return f"{name} is not supported by this server ({error['msg']})"
    what = _must_be(schema, node)
    return f"{name} must be {what}" if what else f"{name}: {error['msg']}"


@functools.cache
def _schema(model: type[BaseModel]) -> dict:
    return model.model_json_schema()


def _field(schema: dict, loc: tuple) -> tuple[str, dict]:
    """The field's name as the client wrote it (``input_extra[0].text``) and its schema; the
    walk stops at a union's branch tag, so a union field is named whole."""
    name, node = "", schema
    for part in loc:
        node = _resolve(schema, node)
        if isinstance(part, int) and "items" in node:
            name, node = f"{name}[{part}]", node["items"]
        elif isinstance(part, str) and part in node.get("properties", {}):
            name, node = f"{name}.{part}" if name else part, node["properties"][part]
        else:
            break
    return name, node


def _resolve(schema: dict, node: dict) -> dict:
    if "$ref" in node:
        return schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    branches = [b for b in node.get("anyOf", []) if b.get("type") != "null"]
    return _resolve(schema, branches[0]) if len(branches) == 1 else node


def _must_be(schema: dict, node: dict) -> str | None:
    """What a value of this JSON schema is, in words: "an integer in [1, 1024]"."""
    node = _resolve(schema, node)
    if "anyOf" in node:
        parts = [_must_be(schema, b) for b in node["anyOf"] if b.get("type") != "null"]
        return " or ".join(parts) if all(parts) else None  # type: ignore[arg-type]
    kind = node.get("type")
    if kind == "string":
        return "a non-empty string" if node.get("minLength") else "a string"
    if kind in ("integer", "number"):
        word = "an integer" if kind == "integer" else "a number"
        if "minimum" in node and "maximum" in node:
            return f"{word} in [{node['minimum']}, {node['maximum']}]"
        return word
    if kind == "boolean":
        return "true or false"
    if kind == "object":
        fields = ", ".join(node.get("properties", {}))
        return f"a {{{fields}}} object" if fields else "an object"
    if kind == "array":
        item = _must_be(schema, node.get("items", {}))
        if item is None:
            return "a list"
        noun, _, rest = item.split(" ", 1)[1].partition(" ")
        items = f"{noun}s {rest}".rstrip()  # "an integer in [1, 9]" -> "integers in [1, 9]"
        if node.get("maxItems") == 1:
            return f"a list of one {item.split(' ', 1)[1]}"
        if "minItems" in node and "maxItems" in node:
            return f"a list of {node['minItems']} to {node['maxItems']} {items}"
        if "maxItems" in node:
            return f"a list of at most {node['maxItems']} {items}"
        return f"a list of {items}"
    return None


# -- the requests ----------------------------------------------------------------------------


def _options(v: Any) -> dict[str, Any]:
    return {name: getattr(v, name) for name in ("steps", "alg", "temperature")
            if getattr(v, name) is not None}


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    return (stop,) if isinstance(stop, str) else tuple(stop or ())


def parse_infill(body: Any, client: str | None = None) -> FimRequest:
    """llama.cpp: the text before the cursor is input_prefix + prompt (the cursor line)."""
    v: InfillRequest = _validated(InfillRequest, body)
    lengths = None if v.lengths is None else tuple(v.lengths)
    options = _options(v)
    steps = None if lengths is None else options.pop("steps", None)
    return FimRequest(
        prefix=v.input_prefix + v.prompt,
        suffix=v.input_suffix,
        options={**options, **(v.settings.model_dump(exclude_unset=True) if v.settings
                               else {})},
        lengths=lengths,
        n=v.choices or 1,
        fast=bool(v.fast),
        inline=bool(v.inline),
        seed=v.seed if lengths is not None and _is_seed(v.seed) else None,
        steps=steps,
        max_tokens=None if v.n_predict < 0 else v.n_predict,
        stop=_stops(v.stop),
        stream=v.stream,
        stream_states=v.stream_states,
        response_fields=tuple(v.response_fields),
        client=client,
        language=v.language,
        filename=v.filename,
    )


def _is_seed(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 63


def parse_completions(body: Any, client: str | None = None) -> FimRequest:
    """OpenAI: prompt is the text before the cursor, suffix the text after it."""
    v: CompletionsRequest = _validated(CompletionsRequest, body)
    text = v.prompt if isinstance(v.prompt, str) else v.prompt[0]
    return FimRequest(
        prefix=text,
        suffix=v.suffix or "",
        options=_options(v),
        max_tokens=v.max_tokens,
        n=v.n or 1,
        stop=_stops(v.stop),
        stream=bool(v.stream),
        stream_states=v.stream_states,
        include_usage=(v.stream_options or {}).get("include_usage") is True,
        client=client or v.user,
        language=v.language,
        filename=v.filename,
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
