"""Run one untrusted Python program and say whether it passed: the HumanEval executor.

Each program runs as ``python -I program.py`` (isolated mode: no user site, no PYTHON* variables,
no script-directory imports) in a fresh temporary directory that is its cwd and HOME, with a
scrubbed environment, resource limits set in the child before exec (address space, CPU seconds,
file size, open files), its own process group killed whole on timeout, and — where the kernel
allows it — a private network namespace with no interfaces (``unshare --net``).  Without that
namespace, "no network" is best effort: the environment carries no proxies or credentials.

This is a guard against accidents (infinite loops, memory hogs, stray files), not a security
boundary against hostile code.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PASSED, FAILED, TIMEOUT = "passed", "failed", "timeout"


@dataclass(frozen=True)
class Outcome:
    status: str          # passed | failed | timeout
    returncode: int | None
    seconds: float
    stderr: str          # the last lines, for the report

    @property
    def passed(self) -> bool:
        return self.status == PASSED


@functools.lru_cache(maxsize=1)
def network_isolation() -> list[str]:
    """The command prefix that gives the child no network, or [] if unavailable here."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    try:
        probe = subprocess.run([unshare, "--net", "true"], capture_output=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return []
    return [unshare, "--net"] if probe.returncode == 0 else []


def _limits(memory_bytes: int, cpu_seconds: int):
    def apply() -> None:   # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run_python(source: str, *, timeout: float = 10.0, memory_mb: int = 512,
               isolate_network: bool = True) -> Outcome:
    """Execute ``source``; exit status 0 within ``timeout`` seconds is a pass."""
    with tempfile.TemporaryDirectory(prefix="coda-sandbox-") as tmp:
        program = Path(tmp) / "program.py"
        program.write_text(source, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "no_proxy": "*"}
        prefix = network_isolation() if isolate_network else []
        cmd = [*prefix, sys.executable, "-I", "-B", program.name]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True,
                                preexec_fn=_limits(memory_mb << 20, max(1, int(timeout) + 1)))
        try:
            _, err = proc.communicate(timeout=timeout)
            status = PASSED if proc.returncode == 0 else FAILED
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            _, err = proc.communicate()
            status = TIMEOUT
        seconds = time.monotonic() - start
    if proc.returncode is not None and proc.returncode < 0 and status == FAILED and \
            -proc.returncode == signal.SIGXCPU:
        status = TIMEOUT   # the CPU limit fired before the wall clock
    tail = "\n".join(err.decode("utf-8", "replace").splitlines()[-5:])
    return Outcome(status, proc.returncode, seconds, tail)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
