"""Progress for every stage that takes seconds: a tqdm bar on a terminal, plain log lines
(one every ``every`` seconds) when stderr is a file or a pipe, so bars never glue onto logs."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("training.progress")


class LogLines:
    """tqdm's update / set_postfix / close, written as periodic log lines."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0,
                 every: float = 10.0) -> None:
        self.total, self.desc, self.unit, self.n, self.every = total, desc, unit, initial, every
        self.postfix: dict = {}
        self._start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.every:
            self._line()

    def set_postfix(self, **kw) -> None:
        self.postfix = kw

    def close(self) -> None:
        self._line()

    def _line(self) -> None:
        self._last = time.monotonic()
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        log.info("%s: %d/%d %s (%.0f s)%s", self.desc, self.n, self.total, self.unit,
                 self._last - self._start, extra)


class _Silent:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kw) -> None: ...
    def close(self) -> None: ...


def progress(total: int, desc: str, *, unit: str = "it", initial: int = 0,
             enabled: bool = True):
    if not enabled:
        return _Silent()
    try:
        from tqdm import tqdm
    except ImportError:   # tqdm is a train extra
        tqdm = None
    if tqdm is None or not sys.stderr.isatty():
        return LogLines(total, desc, unit, initial)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, mininterval=1.0,
                dynamic_ncols=True)
