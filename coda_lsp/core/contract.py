"""The fill contract: which of a target's candidates may be written, one rule for every surface.

``coda-lsp fill``, "Fill this hole" (code action and ``coda.fillHole``), an invoked inline
completion at a hole and HTTP all judge their candidates here, so one hole gets one decision
wherever it was asked for. A candidate passes when it is not empty, reaches the confidence bar
and adds no syntax error to the enclosing definition (``coda_syntax.spans.error_counter``).
Nothing that fails is written by default; a refusal carries a one-line reason and the best
rejected candidate, which the user may take explicitly ("Fill anyway", ``--accept-rejected``).

When every candidate fails, ``Attempts`` tries again within RETRY_BUDGET times the first
attempt's time: shorter and expression-sized lengths, then another unmasking order and seed
(benchmarks/bench_fill_retry.py measures how often that rescues a hole and what it costs).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from coda_lsp.core.engine import Fill, FillJob, rank

EMPTY, UNSURE, BROKEN = "empty", "unsure", "broken"  # why a candidate fails, in check order
RETRY_BUDGET = 3.0  # all attempts together: at most this many times the first attempt's time
RETRY_FLOOR_S = 0.05  # ...or this long, whichever is more (a fill that took 5 ms may retry)
EXPRESSION_LENGTHS = (3, 6)  # tokens: an expression (``a + b``, ``None``) rather than a block
RETRY_SEED = 1
RETRY_TEMPERATURE = 0.3  # some sampling noise, so a second order is not the same fill again
ANYWAY_TITLES = {
    BROKEN: "Fill anyway (adds a syntax error)",
    UNSURE: "Fill anyway (under the confidence bar)",
    EMPTY: "Fill anyway (empty)",
}

ErrorsOf = Callable[[str], int]


def rejection(fill: Fill, min_confidence: float) -> str | None:
    """Why a candidate may not be written, or None when it passes."""
    if not fill.text.strip():
        return EMPTY
    if fill.confidence < min_confidence:
        return UNSURE
    return BROKEN if fill.errors else None


@dataclass
class Decision:
    """The passing fills (best first), or a refusal: its reason and the best rejected one."""

    min_confidence: float
    fills: list[Fill] = field(default_factory=list)
    candidates: int = 0  # fills the model wrote, over every attempt
    rejected: Counter[str] = field(default_factory=Counter)  # why -> candidates
    best_rejected: Fill | None = None
    attempts: int = 0
    ranked: list[Fill] = field(default_factory=list)  # the first attempt's non-empty, ranked

    @property
    def accepted(self) -> bool:
        return bool(self.fills)

    @property
    def cause(self) -> str:
        """Why the best rejected candidate failed (EMPTY when there is none)."""
        best = self.best_rejected
        return EMPTY if best is None else rejection(best, self.min_confidence) or EMPTY

    @property
    def anyway_title(self) -> str:
        return ANYWAY_TITLES[self.cause]

    @property
    def reason(self) -> str:
        """One line: why nothing passed ("3 candidate(s): 3 added a syntax error"); "" if
        something did."""
        if self.fills:
            return ""
        total = sum(self.rejected.values())
        if not total:
            return "the model returned no candidate"
        counts = ", ".join(_count(n, why, self.min_confidence)
                           for why in (EMPTY, UNSURE, BROKEN) if (n := self.rejected[why]))
        return f"{total} candidate(s): {counts}"

    def add(self, other: Decision) -> None:
        """Fold a later attempt in: its passing fills after ours (texts once), counts summed,
        the best rejected kept from the earliest attempt that had one."""
        seen = {f.text for f in self.fills}
        self.fills += [f for f in other.fills if f.text not in seen]
        self.candidates += other.candidates
        self.rejected.update(other.rejected)
        self.best_rejected = self.best_rejected or other.best_rejected
        self.attempts += other.attempts
        self.ranked = self.ranked or other.ranked


def _count(n: int, why: str, threshold: float) -> str:
    was = "was" if n == 1 else "were"
    if why == EMPTY:
        return f"{n} {was} empty"
    if why == UNSURE:
        return f"{n} {was} below the confidence threshold {threshold:g}"
    return f"{n} added a syntax error"


def describe(fill: Fill) -> str:
    """A candidate in a few words: its confidence and whether it breaks the parse."""
    broken = ", adds a syntax error" if fill.errors else ""
    return f"confidence {fill.confidence:.2f}{broken}"


def judge(fills: list[Fill], min_confidence: float, errors_of: ErrorsOf) -> Decision:
    """One attempt's raw candidates (``Engine.fill``) judged: passing ones best first, in
    ``rank``'s order (parses, fluent, confident); the best non-empty failing one kept."""
    ranked = rank(fills, 0.0, errors_of)  # every non-empty candidate, its new errors counted
    decision = Decision(min_confidence, candidates=len(fills), attempts=1, ranked=ranked)
    decision.rejected[EMPTY] += len(fills) - len(ranked)
    for f in ranked:
        why = rejection(f, min_confidence)
        if why is None:
            decision.fills.append(f)
            continue
        decision.rejected[why] += 1
        if why != EMPTY and decision.best_rejected is None:
            decision.best_rejected = f
    return decision


def retry_jobs(job: FillJob) -> list[FillJob]:
    """What to try when every candidate of ``job`` failed, most promising first: shorter and
    expression-sized lengths (a block the model cannot close often has an expression it can),
    then another unmasking order with a seed and a little sampling noise, longer lengths."""
    lengths = tuple(job.span_lengths) or (16,)
    shorter = sorted({*EXPRESSION_LENGTHS, *(max(1, n // 2) for n in lengths)} - set(lengths))
    longer = sorted({n + max(1, n // 2) for n in lengths} | set(lengths))
    alg = "topk_margin" if job.settings.alg == "entropy" else "entropy"
    other = replace(job.settings, alg=alg, temperature=RETRY_TEMPERATURE)
    return [replace(job, span_lengths=tuple(shorter)),
            replace(job, span_lengths=tuple(longer), settings=other, seed=RETRY_SEED)]


def _longest(job: FillJob) -> int:
    return max(job.span_lengths or (16,))


class Attempts:
    """The first attempt, then retries while nothing passed and the time budget allows.

    The caller runs each job however it runs fills (synchronously, or on the server's worker)::

        attempts = Attempts(job, min_confidence, errors_of)
        while (job := attempts.next_job()) is not None:
            result = engine.fill(job)
            attempts.add(result.fills, engine_seconds(result.timings))
        decision = attempts.decision
    """

    def __init__(self, job: FillJob, min_confidence: float, errors_of: ErrorsOf,
                 retry: bool = True, budget: float = RETRY_BUDGET,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.pending = [job, *(retry_jobs(job) if retry else [])]
        self.first_longest = _longest(job)
        self.min_confidence, self.errors_of = min_confidence, errors_of
        self.budget, self.clock = budget, clock
        self.decision = Decision(min_confidence)
        self.started: float | None = None
        self.mark = 0.0  # the clock when the running attempt started
        self.spent_s = 0.0  # what the attempts so far cost
        self.first_s: float | None = None

    def next_job(self) -> FillJob | None:
        if not self.pending or self.decision.accepted:
            return None
        if self.started is None:
            self.started = self.clock()
        elif self.first_s is not None:
            # another attempt costs what the first did, scaled by its longest candidate (the
            # denoising steps a fill runs grow with it): start it only if it should end within
            # the budget
            budget = max(self.budget * self.first_s, RETRY_FLOOR_S)
            projected = self.first_s * _longest(self.pending[0]) / self.first_longest
            if self.spent_s + projected > budget:
                return None
        self.mark = self.clock()
        return self.pending.pop(0)

    def add(self, fills: list[Fill], seconds: float | None = None) -> Decision:
        """One attempt's candidates; ``seconds``: what the attempt cost (the engine's own
        timings), else the clock's time since ``next_job``."""
        took = self.clock() - self.mark if seconds is None else seconds
        self.spent_s += took
        if self.first_s is None:
            self.first_s = max(1e-6, took)
        self.decision.add(judge(fills, self.min_confidence, self.errors_of))
        return self.decision

    @property
    def elapsed_s(self) -> float:
        return 0.0 if self.started is None else self.clock() - self.started


def engine_seconds(timings: dict[str, float]) -> float:
    """An attempt's cost from ``FillResult.timings`` (milliseconds per stage)."""
    return sum(timings.values()) / 1e3


def decide(run: Callable[[FillJob], list[Fill]], job: FillJob, min_confidence: float,
           errors_of: ErrorsOf, retry: bool = True) -> Decision:
    """Run ``job`` (and retries, see ``Attempts``) synchronously and decide."""
    attempts = Attempts(job, min_confidence, errors_of, retry)
    while (next_job := attempts.next_job()) is not None:
        attempts.add(run(next_job))
    return attempts.decision


__all__ = ["ANYWAY_TITLES", "Attempts", "BROKEN", "Decision", "EMPTY", "UNSURE", "decide",
           "describe", "judge", "rejection", "retry_jobs"]
