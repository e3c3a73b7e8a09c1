"""pygls' LSP protocol with the three changes coda-lsp needs; no handlers, no pipeline.

- ``initialize`` advertises the position encoding the server negotiated (``server.encoding``,
  chosen by the ``initialize`` handler from the client's offer).
- ``didOpen`` / ``didChange`` / ``didClose`` go only to the server's own handlers: pygls'
  workspace would keep a second copy of every document and apply edits in its own encoding.
- A request whose params do not match the schema gets an InvalidParams response; stock pygls
  logs it and never answers, so the client waits forever.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.protocol import LanguageServerProtocol, lsp_method

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _BadRequest:
    id: Any
    method: str
    reason: str


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

    def _user_only(self, method: str, params: Any):
        if (handler := self.fm.features.get(method)) is not None:
            yield handler, (params,), None

    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if isinstance(data, dict) and "id" in data and isinstance(data.get("method"), str):
                return _BadRequest(data["id"], data["method"], str(exc.__cause__ or exc))
            raise

    def handle_message(self, message):
        if isinstance(message, _BadRequest):
            log.warning("invalid params for %s: %s", message.method, message.reason)
            error = JsonRpcInvalidParams(f"invalid params for {message.method}: {message.reason}")
            self._send_response(message.id, None, error.to_response_error())
            return
        super().handle_message(message)


__all__ = ["CodaProtocol"]
