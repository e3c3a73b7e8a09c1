"""Where log lines go: stderr until the client is connected, then the client's log."""

import asyncio
import logging

import pytest
from lsprotocol import types

from coda_lsp.core import logs


@pytest.fixture
def clean_loggers():
    names = (*logs.LOGGERS, "pygls")
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level) for n in names}
    yield
    for name, (handlers, level) in saved.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).setLevel(level)


def test_bridge_replaces_stderr_keeps_the_log_file_and_maps_levels(clean_loggers, tmp_path):
    logs.setup(0, None)
    logs.setup(0, str(tmp_path / "coda.log"))
    sent: list[types.LogMessageParams] = []

    async def connect():
        logs.bridge(sent.append, asyncio.get_running_loop())
        logs.bridge(sent.append, asyncio.get_running_loop())  # a second initialize: no doubles

    asyncio.run(connect())
    log = logging.getLogger("coda_lsp.test")
    for handler in logging.getLogger("coda_lsp").handlers:
        assert not isinstance(handler, logs.Console)
    log.info("ready")
    log.warning("careful")
    log.error("broken")
    logging.getLogger("pygls.protocol").warning("odd message")
    logging.getLogger("pygls.protocol").info("Sending data: ...")  # tracing stays out
    assert [(p.type, p.message) for p in sent] == [
        (types.MessageType.Info, "coda_lsp.test: ready"),
        (types.MessageType.Warning, "coda_lsp.test: careful"),
        (types.MessageType.Error, "coda_lsp.test: broken"),
        (types.MessageType.Warning, "pygls.protocol: odd message")]
    assert "ready" in (tmp_path / "coda.log").read_text()


def test_a_send_that_logs_does_not_recurse(clean_loggers):
    sent = []

    def send(params):  # pygls logs an error when it cannot write: that must not loop
        sent.append(params)
        logging.getLogger("pygls.protocol").error("Error sending data")

    async def connect():
        logs.bridge(send, asyncio.get_running_loop())

    asyncio.run(connect())
    logging.getLogger("coda_lsp.test").warning("once")
    assert len(sent) == 1


def test_what_the_client_was_answered_with_is_one_warning_not_a_traceback(clean_loggers):
    from pygls.exceptions import JsonRpcInternalError, JsonRpcInvalidParams

    sent = []

    async def connect():
        logs.bridge(sent.append, asyncio.get_running_loop())

    asyncio.run(connect())
    pygls_log = logging.getLogger("pygls.protocol.json_rpc")
    for error in (JsonRpcInvalidParams("coda/documentText takes {uri}"),
                  JsonRpcInternalError("boom")):
        try:
            raise error
        except Exception:
            pygls_log.exception('Exception occurred for message "%s"', 7)
    answered, failed = sent
    assert answered.type == types.MessageType.Warning and "Traceback" not in answered.message
    assert answered.message.endswith('message "7": coda/documentText takes {uri}')
    assert failed.type == types.MessageType.Error and "Traceback" in failed.message


def test_warnings_remember_a_bounded_number_of_keys():
    warnings = logs.Warnings(interval=3600, max_keys=8)
    assert warnings.allow("load:typing")
    for i in range(100):  # a client sending ever new bad settings
        assert warnings.allow(f"settings:coda.steps must be ... {i}")
    assert len(warnings._shown) == 8
    assert not warnings.allow("settings:coda.steps must be ... 99")  # the recent are still quiet
    assert warnings.allow("load:typing")  # the oldest was forgotten, so it may speak again
