"""Drives a headless Neovim with the Coda plugin: keys go in with `--remote-send`, checks run
through `--remote-expr` calls into CodaTest (tests/editors/nvim/init.lua), which wait on
Neovim's own event loop. Not a test by itself."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import editor_tools

INIT = Path(__file__).resolve().parent / "nvim" / "init.lua"


class Nvim:
    def __init__(self, exe: str, server_cmd: list[str], file: Path, settings: dict | None = None,
                 setup: dict | None = None):
        self.exe = exe
        self._dir = tempfile.TemporaryDirectory(prefix="coda-nvim-")
        self.socket = os.path.join(self._dir.name, "nvim.sock")
        self.log = Path(self._dir.name) / "nvim.log"
        env = dict(os.environ)
        env.update(
            CODA_PLUGIN_DIR=str(editor_tools.NEOVIM_PLUGIN),
            CODA_SERVER_CMD=json.dumps(server_cmd),
            CODA_SETTINGS=json.dumps(settings or {}),
            CODA_SETUP=json.dumps(setup or {}),  # more require("coda").setup() options
            XDG_STATE_HOME=self._dir.name,  # lsp.log goes here, away from the user's
            XDG_CONFIG_HOME=self._dir.name,
            XDG_DATA_HOME=self._dir.name,
        )
        self.process = subprocess.Popen(
            [exe, "--headless", "--clean", "-n", "-u", str(INIT), "--listen", self.socket,
             str(file)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),
            start_new_session=True,
        )
        self._wait_for_socket(timeout=30)

    def _wait_for_socket(self, timeout: float) -> None:
        # The socket file is Neovim's "ready" signal; poll for it (nothing to subscribe to).
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.process.poll() is not None:
                raise RuntimeError(f"nvim exited: {self.log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise TimeoutError("nvim did not open its socket")
            time.sleep(0.05)

    def send(self, keys: str) -> None:
        subprocess.run([self.exe, "--server", self.socket, "--remote-send", keys],
                       check=True, timeout=30, capture_output=True)

    def call(self, fn: str, *args, timeout: float = 120):
        payload = base64.b64encode(json.dumps({"fn": fn, "args": list(args)}).encode()).decode()
        done = subprocess.run(
            [self.exe, "--server", self.socket,
             "--remote-expr", f"v:lua.CodaTest.run('{payload}')"],
            check=True, timeout=timeout, capture_output=True, text=True,
        )
        answer = json.loads(done.stdout)
        if not answer["ok"]:
            raise RuntimeError(f"CodaTest.{fn} failed: {answer['result']}")
        return answer.get("result")  # a nil result is left out of the JSON

    def state(self) -> dict:
        return self.call("state")

    def close(self) -> None:
        editor_tools.kill_tree(self.process)
        self._dir.cleanup()
