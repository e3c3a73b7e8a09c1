"""A raw JSON-RPC client over a real ``coda-lsp``'s stdio: it can send what no typed client can.

Bodies go out exactly as given (bytes that are not even JSON included); every message the server
writes is kept: responses by id (a list, so a second answer shows), notifications in order, and
the server's stderr. Requests from the server (``workspace/applyEdit``...) get a null result.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from lsp_session import TEST_SETTINGS, server_command, server_env

NULL_ID = "<null>"  # the key of responses whose id is null (the request could not be read)
HARNESS = "harness-"  # the id prefix of this client's own requests


class RawServer:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.responses: dict[Any, list[dict]] = defaultdict(list)
        self.notifications: list[dict] = []
        self.stderr = bytearray()
        self._waiters: dict[Any, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._tasks = [asyncio.create_task(self._read_stdout()),
                       asyncio.create_task(self._read_stderr())]

    @classmethod
    async def start(cls, model_dir: Path, *extra: str) -> RawServer:
        proc = await asyncio.create_subprocess_exec(
            *server_command(model_dir, *extra), env=server_env(), limit=2**26,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def initialize(self, options: dict | None = None) -> dict:
        result = await self.request("initialize", {
            "processId": None, "rootUri": None, "capabilities": {},
            "initializationOptions": {"coda": {**TEST_SETTINGS, **(options or {})}}})
        self.notify("initialized", {})
        while not any(n.get("method") == "coda/status"
                      and n["params"].get("state") in ("ready", "error")
                      for n in self.notifications):
            await asyncio.sleep(0.05)
        return result

    # -- sending ------------------------------------------------------------------------------

    def send_body(self, body: bytes) -> None:
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def send(self, message: Any) -> None:
        self.send_body(json.dumps(message).encode())

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def send_request(self, method: str, params: Any, msg_id: Any = None) -> Any:
        msg_id = f"{HARNESS}{next(self._ids)}" if msg_id is None else msg_id
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id

    async def request(self, method: str, params: Any, timeout: float = 60) -> Any:
        """The result; a JSON-RPC error comes back as the error object under "error"."""
        answer = await self.response(self.send_request(method, params), timeout)
        return answer["result"] if "result" in answer else {"error": answer["error"]}

    async def response(self, msg_id: Any, timeout: float = 60) -> dict:
        if not self.responses.get(msg_id):
            await self.proc.stdin.drain()
            waiter = self._waiters.setdefault(msg_id, asyncio.get_running_loop().create_future())
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        return self.responses[msg_id][0]

    async def close(self) -> int:
        """shutdown, exit; the exit code."""
        if self.proc.returncode is None:
            await self.request("shutdown", None)
            self.notify("exit", None)
            await self.proc.stdin.drain()
        code = await asyncio.wait_for(self.proc.wait(), 30)
        for task in self._tasks:
            await task
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        for task in self._tasks:
            await task

    # -- receiving ----------------------------------------------------------------------------

    def log_messages(self) -> list[dict]:
        return [n["params"] for n in self.notifications if n.get("method") == "window/logMessage"]

    async def _read_stdout(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while (line := await out.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("ascii").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            if not line or length is None:
                return
            self._received(json.loads(await out.readexactly(length)))

    def _received(self, message: dict) -> None:
        if "method" in message and "id" in message:  # the server asks: answer null
            self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
        elif "method" in message:
            self.notifications.append(message)
        else:
            key = message.get("id")
            if key is None:
                key = NULL_ID
            elif not isinstance(key, str | int):  # never sent by a correct server
                key = f"<odd id {json.dumps(key)}>"
            self.responses[key].append(message)
            waiter = self._waiters.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def _read_stderr(self) -> None:
        while chunk := await self.proc.stderr.read(65536):
            self.stderr += chunk
