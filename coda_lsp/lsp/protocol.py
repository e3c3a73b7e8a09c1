"""pygls' LSP protocol with the changes coda-lsp needs; no handlers, no pipeline.

- ``initialize`` advertises the position encoding the server negotiated (``server.encoding``,
  chosen by the ``initialize`` handler from the client's offer).
- ``didOpen`` / ``didChange`` / ``didClose`` go only to the server's own handlers: pygls'
  workspace would keep a second copy of every document and apply edits in its own encoding.
- Every request gets exactly one response, whatever it holds. Stock pygls structures every
  JSON object it reads as if it were a message (``json.loads``' object hook sees nested
  objects too), never answers a request it cannot structure, and drops requests after
  ``shutdown``; here a message is structured once, whole, and what cannot be is answered with
  InvalidRequest or InvalidParams.
- Params are checked strictly (``strict_converter``): a number where a string belongs is
  InvalidParams, not a string made up from it.
- A handler's future is forgotten when it is done. pygls keeps each future of a handler run
  as a task, a thread or a generator under its message id, for ``$/cancelRequest``, and drops
  it only when it answers a request; a notification's id and a generator step's are made up
  (uuid4) and nothing answers them, so every ``didChange`` kept one for good (the language
  server's memory grew ~1.3 MiB a minute while typing; benchmarks/README.md, "Soak").
"""

from __future__ import annotations

import asyncio
import collections.abc
import logging
from typing import Any, get_origin

import cattrs
from cattrs import Converter
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInternalError,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcParseError,
)
from pygls.protocol import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    LanguageServerProtocol,
    default_converter,
    lsp_method,
)

log = logging.getLogger(__name__)

_MESSAGE_KEYS = ("jsonrpc", "id", "method", "params")


def strict_converter() -> Converter:
    """pygls' converter, minus cattrs' coercions (``str(5)``, ``int("1")``, ``int(True)``)."""
    converter = default_converter()
    for kind in (str, int, bool):
        converter.register_structure_hook(kind, _exactly(kind))
    converter.register_structure_hook(float, _number)
    converter.register_structure_hook_factory(_is_sequence, _array_only)
    converter.register_structure_hook(types.CodeActionKind | str, _code_action_kind)
    converter.register_structure_hook(types.CodeActionKind | str | None, _optional_kind)
    return converter


def _exactly(kind: type):
    def structure(value: Any, _: type) -> Any:
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


def _number(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _is_sequence(kind: Any) -> bool:
    return get_origin(kind) in (collections.abc.Sequence, list)


def _array_only(kind: Any, converter: Converter):
    """cattrs reads any iterable as a sequence: "quickfix" would become eight kinds."""
    factory = list_structure_factory if get_origin(kind) is list else \
        homogenous_tuple_structure_factory
    structure_items = factory(kind, converter)

    def structure(value: Any, _: type) -> Any:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected an array, got {type(value).__name__}")
        return structure_items(value, kind)

    return structure


def _code_action_kind(value: Any, _: type) -> str:
    """A kind is any string (lsprotocol keeps non-standard kinds as plain strings)."""
    if isinstance(value, str):
        return value
    raise TypeError(f"a code action kind is a string, got {type(value).__name__}")


def _optional_kind(value: Any, kind: type) -> str | None:
    return None if value is None else _code_action_kind(value, kind)


def explain(error: Exception) -> str:
    """cattrs' errors as one line that says where: "expected int @ $.params.position.line"."""
    if isinstance(error, KeyError):
        return f"missing {error}"
    if not isinstance(error, cattrs.BaseValidationError):
        return str(error) or type(error).__name__
    return "; ".join(cattrs.transform_error(error)[:3])


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


class CodaProtocol(LanguageServerProtocol):
    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        result = yield from super().lsp_initialize(params)
        result.capabilities.position_encoding = self._server.encoding
        return result

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params):
        yield from self._user_only(types.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params):
        yield from self._user_only(types.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params):
        yield from self._user_only(types.TEXT_DOCUMENT_DID_CLOSE, params)

    def _execute_handler(self, msg_id, handler, callback, args=None, kwargs=None):
        def forget_then(future) -> None:
            # not a cancelled one: shutdown cancels them while it iterates over the dict (and
            # $/cancelRequest forgets its own); the server runs no handler on another thread
            if not future.cancelled() and self._request_futures.get(msg_id) is future:
                del self._request_futures[msg_id]
            callback(future)

        super()._execute_handler(msg_id, handler, forget_then, args=args, kwargs=kwargs)

    def _user_only(self, method: str, params: Any):
        if (handler := self.fm.features.get(method)) is not None:
            yield handler, (params,), None

    def structure_message(self, data: Any) -> Any:
        """Keep every JSON object as it is: ``json.loads`` calls this for nested objects too,
        innermost first, and an object in params with a "jsonrpc" key is a value, not a
        message. ``handle_message`` structures the whole message, once."""
        return data

    def handle_message(self, message: Any) -> None:
        if not isinstance(message, dict):
            self._refuse(None, JsonRpcInvalidRequest("a message is a JSON object"))
            return
        if "method" not in message or "id" not in message:
            self._handle_other(message)
            return
        msg_id, method = message["id"], message["method"]
        if not _valid_id(msg_id):
            self._refuse(None, JsonRpcInvalidRequest("a request id is an integer or a string"))
        elif message.get("jsonrpc") != self.VERSION or not isinstance(method, str):
            self._refuse(msg_id, JsonRpcInvalidRequest('expected "jsonrpc": "2.0" and a method'))
        elif self._shutdown:
            self._refuse(msg_id, JsonRpcInvalidRequest(f"{method}: the server is shut down"))
        else:
            request = self._structure(message, JsonRPCRequestMessage)
            if isinstance(request, str):
                self._refuse(msg_id, JsonRpcInvalidParams(f"{method}: {request}"))
            elif not hasattr(request, "id"):  # read as a notification, it would go unanswered
                self._refuse(msg_id, JsonRpcInvalidRequest(f"{method} is a notification"))
            else:
                super().handle_message(request)

    def _handle_other(self, message: dict[str, Any]) -> None:
        """A notification or a response: it gets no answer, so a bad one is logged, dropped."""
        method = message.get("method")
        if message.get("jsonrpc") != self.VERSION or not isinstance(method, str | None):
            log.warning("dropped a message that is not JSON-RPC 2.0: %.200r", message)
            return
        if method is None and "id" not in message:
            log.warning("dropped a message that is neither a notification nor a response")
            return
        if method is None:  # a response to one of our requests: pygls knows its type
            try:
                structured = super().structure_message(message)
            except JsonRpcException as exc:
                reason = f"unreadable response: {exc.__cause__ or exc}"
                log.warning("%s", reason)
                if _valid_id(message["id"]):  # the request waiting for it fails, not hangs
                    error = JsonRpcInternalError(reason).to_response_error()
                    self._handle_response(message["id"], None, error)
                return
        else:
            structured = self._structure(message, JsonRPCNotification)
            if isinstance(structured, str):
                log.warning("dropped %s: %s", method, structured)
                return
        super().handle_message(structured)

    def _structure(self, message: dict[str, Any], fallback: type) -> Any:
        """The typed request or notification, or why its params do not fit (a string)."""
        kind = self.get_message_type(message["method"]) or fallback
        fields = {key: message[key] for key in _MESSAGE_KEYS if key in message}
        if kind is fallback:  # a method without a schema: no params is fine (and unknown
            fields.setdefault("params", None)  # methods get MethodNotFound, not InvalidParams)
        try:
            return self._converter.structure(fields, kind)
        except Exception as exc:
            return f"invalid params: {explain(exc)}"

    def _refuse(self, msg_id: Any, error: JsonRpcException) -> None:
        log.warning("request %r refused: %s", msg_id, error.message)
        self._send_response(msg_id, None, error.to_response_error())

    def follow_cancel(self) -> None:
        """Called in a command handler: ``$/cancelRequest`` for its request cancels the task
        running it. pygls runs ``workspace/executeCommand`` through a generator, so the cancel
        marks only the request's future; the command's own task went on (a hole fill ran to
        its end and applied its edit after the user pressed Cancel)."""
        request = self._request_futures.get(self.msg_id)
        task = asyncio.current_task()
        if request is None or task is None:
            return
        loop = asyncio.get_running_loop()

        def cancelled(future) -> None:
            if future.cancelled():
                loop.call_soon_threadsafe(task.cancel)

        request.add_done_callback(cancelled)

    def refuse_unreadable(self, error: Exception) -> None:
        """A body that is not JSON cannot say which request it was: answered with id null."""
        self._refuse(None, JsonRpcParseError(f"cannot read the message: {error}"))


__all__ = ["CodaProtocol", "explain", "strict_converter"]
