"""``GET /openapi.json``: the HTTP API as an OpenAPI 3.1 document.

The request bodies' schemas are the pydantic models' own (``wire``), so the document cannot
drift from what the server checks; the paths and answers around them are assembled here by
hand (the answers are each client's shape, described in words, not validated).
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from coda_lsp.http import wire

REF = "#/components/schemas/{model}"

ERROR: dict[str, Any] = {
    "type": "object",
    "description": "every 4xx/5xx: one line naming the field and what it must be",
    "properties": {"error": {"type": "object", "required": ["message", "type", "code"],
                             "properties": {"message": {"type": "string"},
                                            "type": {"type": "string"},
                                            "code": {"type": "integer"}}}},
    "required": ["error"],
}


def _errors(*statuses: int) -> dict[str, Any]:
    why = {400: "a malformed body or a wrong field", 401: "a missing or wrong API key",
           403: "a foreign Origin or Host", 404: "no such model", 409: "superseded by a "
           "newer request from the same client", 413: "a body over 2 MiB",
           503: "the queue is full (Retry-After says when to retry)"}
    ref = {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}
    return {str(s): {"description": why[s], "content": ref} for s in statuses}


def _fill(model: str, summary: str, answer: str) -> dict[str, Any]:
    body = {"required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}}}
    answers = {"200": {"description": answer, "content": {
        "application/json": {"schema": {"type": "object"}},
        "text/event-stream": {"schema": {"type": "string"}}}}}
    return {"post": {"summary": summary, "requestBody": body,
                     "responses": answers | _errors(400, 401, 403, 409, 413, 503)}}


def _get(summary: str, media: str = "application/json", keyed: bool = True) -> dict[str, Any]:
    """A GET route; ``keyed``: it wants the API key when the server has one."""
    return {"get": {"summary": summary, "responses": {
        "200": {"description": summary, "content": {media: {"schema": {}}}},
        **_errors(*((401, 403) if keyed else (403,)))}}}


def document(version: str) -> dict[str, Any]:
    """The whole document; ``version`` is the server's."""
    _, defs = models_json_schema(
        [(wire.InfillRequest, "validation"), (wire.CompletionsRequest, "validation")],
        ref_template=REF)
    schemas = {**defs["$defs"], "Error": ERROR}
    completions = _fill("CompletionsRequest", "OpenAI completions: prompt before the cursor, "
                        "suffix after it", "text_completion (choices[].text), or server-sent "
                        "events ending in data: [DONE] with stream")
    model = _get("one model, OpenAI's models.retrieve")
    model["get"]["responses"] |= _errors(404)
    model["get"]["parameters"] = [{"name": "model", "in": "path", "required": True,
                                   "schema": {"type": "string"}}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "coda-lsp http", "version": version,
                 "description": "Fill-in-the-middle by a masked-diffusion model behind "
                                "llama.cpp's /infill and OpenAI's /v1/completions."},
        "paths": {
            "/infill": _fill("InfillRequest", "llama.cpp infill: input_prefix + prompt before "
                             "the cursor, input_suffix after it", "llama.cpp's answer "
                             "(content, timings...), or server-sent events with stream"),
            "/v1/completions": completions,
            "/completions": completions,
            "/v1/fim/completions": _fill("CompletionsRequest", "the completions request, "
                                         "answered chat-shaped (choices[].message.content)",
                                         "chat.completion, or chat.completion.chunk events"),
            "/v1/models": _get("the one model this server serves"),
            "/models": _get("the one model this server serves"),
            "/v1/models/{model}": model,
            "/models/{model}": model,
            "/health": _get("which model serves which role; the queue's depth", keyed=False),
            "/v1/health": _get("the same as /health", keyed=False),
            "/metrics": _get("Prometheus text format", "text/plain", keyed=False),
            "/openapi.json": _get("this document", keyed=False),
        },
        "components": {"schemas": schemas},
    }
