"""Fills from several requests as rows of one batch: the runner the scheduler calls, and the
start-up probe that decides how many requests a batch may hold.

A batched work is a fill as steps (``fim.FillSteps``): ``work.steps(should_stop)`` yields the
``FillJob``s the model must run. The runner advances every member to its next job, runs the
jobs together (``Engine.fill_many``: one ``infill_many`` per sampler config) and sends each
member its result, until every member has its outcome. A typing fill has one job, so one
batch; a retried hole fill would take a second round.

How many requests may share a batch is measured, not guessed (``probe``): a step of a small
model is mostly fixed cost on a CPU, so B requests can cost little more than one; on another
machine or model they may cost B times one, and batching would only make everyone wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from coda_lsp.core.engine import Engine, FillJob, FillResult
from coda_lsp.core.fim import FillSteps
from coda_lsp.core.settings import Settings

log = logging.getLogger(__name__)

ShouldStop = Callable[[], bool]
PROBE_SIZES = (1, 2, 4, 8, 16, 32)  # batch sizes the probe times
PROBE_KEY = "batching-probe:"  # the probe's carry keys, removed after it
NEAR_BEST = 0.95  # the smallest batch with this share of the best fills per second is kept
PROBE_TEXT = '''import json
from pathlib import Path


def load_rows(path):
    """Rows of a JSON-lines file, skipping blank lines."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            rows.append(json.loads(line))
    return rows


def totals(rows, key):
    out = {}
    for row in rows:
        out[row[key]] = out.get(row[key], 0) + row["amount"]
    return out


def main(folder):
    for path in sorted(Path(folder).glob("*.jsonl")):
        rows = load_rows(path)
        summary = totals(rows, "name")
        for name, amount in sorted(summary.items()):
            print(f"{path.name}: {name} {amount}")
'''


class Batchable(Protocol):
    def steps(self, should_stop: ShouldStop) -> FillSteps: ...


def run_batch(engine: Engine, works: Sequence[Batchable],
              stops: Sequence[ShouldStop]) -> list[tuple[Any, BaseException | None]]:
    """Each work's outcome (result, None) or (None, error), its model jobs run as rows of
    one batch with the other works' (a scheduler's ``BatchRunner`` once bound to an engine)."""
    outcomes: list[tuple[Any, BaseException | None]] = [(None, None)] * len(works)
    steps = [work.steps(stop) for work, stop in zip(works, stops, strict=True)]
    waiting: dict[int, FillJob] = {}
    for i, member in enumerate(steps):
        _advance(i, member, lambda m: next(m), waiting, outcomes)
    while waiting:
        order = list(waiting)
        results = engine.fill_many([waiting[i] for i in order], [stops[i] for i in order])
        waiting = {}
        for i, result in zip(order, results, strict=True):
            _advance(i, steps[i], (lambda m, r=result: m.throw(r))
                     if isinstance(result, BaseException) else
                     (lambda m, r=result: m.send(r)), waiting, outcomes)
    return outcomes


def _advance(i: int, member: FillSteps, move: Callable[[FillSteps], FillJob],
             waiting: dict[int, FillJob], outcomes: list) -> None:
    """One step of member i: its next job into ``waiting``, or its outcome."""
    try:
        waiting[i] = move(member)
    except StopIteration as end:
        outcomes[i] = (end.value, None)
    except BaseException as error:  # noqa: BLE001 -- handed to that member's awaiter
        outcomes[i] = (None, error)


@dataclass(frozen=True)
class Probe:
    max_batch: int
    seconds: dict[int, float]  # batch size -> seconds for that many requests as one batch

    def describe(self) -> str:
        one = self.seconds[1]
        rates = ", ".join(f"B={b}: {b * one / s:.1f}x" for b, s in sorted(self.seconds.items()))
        return f"max batch {self.max_batch} (fills/s against one at a time: {rates})"


def probe(engine: Engine, settings: Settings, limit: int = PROBE_SIZES[-1],
          fast: bool = True, repeats: int = 2) -> Probe:
    """Time B typing fills as one batch for B = 1, 2, 4, ..., limit (best of ``repeats``;
    the sweep ends early once fills per second fall well below the best) and keep the
    smallest B with nearly the best fills per second (``near_best``): what batching pays on
    this machine, model and dtype. Some 60 single fills' time at most."""
    lines = PROBE_TEXT.splitlines(keepends=True)
    cut = len(lines) * 2 // 3
    job = FillJob("".join(lines[:cut]) + "        ", "".join(lines[cut:]), (8, 16, 32),
                  settings.steps, settings, fast=fast)
    engine.fill_many([job], [lambda: False])  # warm-up: allocations, weight packing
    seconds: dict[int, float] = {}
    for size in PROBE_SIZES:
        if size > limit:
            break
        # B typing clients, each with its own carried context (a first, untimed, fill
        # leaves it): a keystroke's fill, not a new document's, is what typing waits for
        jobs = [replace(job, carry_key=f"{PROBE_KEY}{i}") for i in range(size)]
        _timed(engine, jobs)
        seconds[size] = min(_timed(engine, jobs) for _ in range(repeats))
        rates = {b: b / s for b, s in seconds.items()}
        if rates[size] < 0.8 * max(rates.values()):  # past the knee: larger only waits longer
            break
    for key in [k for k in engine.carries if k.startswith(PROBE_KEY)]:
        engine.forget(key)
    result = Probe(near_best(seconds), seconds)
    log.info("batching: %s", result.describe())
    return result


def near_best(seconds: dict[int, float]) -> int:
    """The smallest batch size whose fills per second are within NEAR_BEST of the best.

    Typing clients wait for each other's fills: a cap below the number waiting splits them
    into cohorts that take turns, so every answer waits for the cohorts' batches in turn,
    and the clients' wait is set by fills per second, not by one batch's time. So nearly the
    best rate wins; the tolerance only keeps a noisy sweep from doubling the batch for a
    few per cent (16 lockstep clients: a cap of 8, chosen within 85 %, served 59.5-60.7
    fills/s against 64.8-70.1 with 16, at the same p95)."""
    rates = {b: b / s for b, s in seconds.items()}
    best = max(rates.values())
    return min(b for b, rate in rates.items() if rate >= NEAR_BEST * best)


def _timed(engine: Engine, jobs: list[FillJob]) -> float:
    start = time.perf_counter()
    results = engine.fill_many(jobs, [lambda: False] * len(jobs))
    for result in results:
        if isinstance(result, BaseException):
            raise result
    assert all(isinstance(r, FillResult) for r in results)
    return time.perf_counter() - start
