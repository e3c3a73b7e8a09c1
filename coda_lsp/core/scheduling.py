"""One model worker thread; the newest request per key (document) wins.

The event loop submits work and awaits an asyncio future; the model runs on a single worker
thread so the loop stays free for ``didChange`` and ``$/cancelRequest``. A newer submission
with the same key drops the older one if it has not started and raises its stop flag if it
has; the sampler polls that flag between denoising steps (``should_stop``). Cancelling the
awaiting task (what pygls does on ``$/cancelRequest``) raises the flag too.

``submit`` and ``close`` must be called on the event loop thread.

Batching (``batching``): jobs submitted with a ``group`` may run together. When the worker
takes such a job it also takes the waiting jobs of the same group, up to ``max_batch``, and
hands them to the batch runner as one call (rows of one forward pass). Each keeps its own
stop flag: newest-wins and hang-ups stop a member's answer, the others' go on. A group of
one runs ``job.work`` exactly as without batching.

Before a batch starts, the worker waits a little (``gather_wait``) for the clients the last
batch just answered: a typing client sends its next request a moment after its answer, so
without the wait the one or two that were already waiting run as a batch of their own while
the others come back, and the clients split into cohorts that each wait for the other's batch
(16 clients: batches of 14 and 2, every answer waiting two batches). The wait is at most a
share of the batch it would make (the last run's time per fill, times the fills waiting and
expected), not of the last run: after a small cohort's run that would be too short for its
clients to come back, and the cohorts would stay split. A client with nobody else recently
answered never waits.

After each run the worker tells ``on_run`` how many fills it ran together, for how long, and
how long it waited for them: what an operator reads batching by (``/metrics``).

Between jobs, at most every ``TRIM_EVERY_S``, the worker hands the heap's free pages back to
the system: glibc keeps freed tensors' pages, and fills of ever-changing sizes leave them
scattered (an HTTP server under 8 minutes of client churn held 668 MiB, 491 after a trim).
A trim takes 45-60 ms there, so it waits for an empty queue, unless the queue has not been
empty for four times as long (a server that is never idle).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from coda_model.memory import return_freed_memory

log = logging.getLogger(__name__)

ShouldStop = Callable[[], bool]
Work = Callable[[ShouldStop], Any]
Outcome = tuple[Any, BaseException | None]  # a batched job's result, or why it has none
BatchRunner = Callable[[list[Work], list[ShouldStop]], list[Outcome]]
MAX_GATHER_S = 0.04  # the longest a batch waits for the last batch's clients to come back
GATHER_SHARE = 0.25  # ... and at most this share of the batch it would make
TRIM_EVERY_S = 30.0  # free heap pages go back to the system at most this often


class Superseded(Exception):
    """The request was replaced by a newer one for the same document, or cancelled."""


@dataclass(eq=False)
class Job:
    key: str | None
    work: Work
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    id: int
    group: Hashable | None = None  # jobs of one group may share a batch
    stop: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> bool:
        return self.stop.is_set()


class Scheduler:
    def __init__(self) -> None:
        self._queue: deque[Job] = deque()
        self._pending: dict[str, Job] = {}
        self._running: list[Job] = []
        self._runner: BatchRunner | None = None
        self.max_batch = 1
        self._cond = threading.Condition()
        self._closed = False
        self._retiring = False  # finish what is queued, then end: a swapped-out model
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self.started = 0  # jobs whose work actually ran (tests and logs read it)
        self.batches = 0  # batches of two or more jobs run
        self.max_gather_s = MAX_GATHER_S
        self.gathered_s = 0.0  # time batches waited for their clients (tests and logs read it)
        self._answered: set[str] = set()  # keys the last grouped run answered
        self._gather_until = 0.0  # monotonic time: wait for them until then at most
        self.release_memory: Callable[[], None] = return_freed_memory
        self.trim_every_s = TRIM_EVERY_S
        self._trimmed = time.monotonic()
        self.trims = 0  # times the worker handed free pages back (tests read it)
        # after each run: (fills it ran, its seconds, seconds it waited for them to gather)
        self.on_run: Callable[[int, float, float], None] | None = None

    def batching(self, runner: BatchRunner, max_batch: int) -> None:
        """Run up to ``max_batch`` waiting jobs of one group as one ``runner(works, stops)``
        call (one outcome per work, in order); 1 turns batching off."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        with self._cond:
            self._runner, self.max_batch = runner, max_batch

    def submit(self, key: str | None, work: Work, group: Hashable | None = None
               ) -> asyncio.Future:
        """Queue ``work(should_stop)``; keyed work replaces older work with the same key.
        ``group``: work that may run batched with the group's other waiting work."""
        loop = asyncio.get_running_loop()
        job = Job(key, work, loop.create_future(), loop, next(self._ids), group)
        job.future.add_done_callback(lambda fut: fut.cancelled() and job.stop.set())
        with self._cond:
            if self._closed or self._retiring:
                job.future.set_exception(Superseded("the model worker is closed"))
                return job.future
            if key is not None:
                older = self._pending.pop(key, None)
                if older is not None:
                    older.stop.set()
                    self._resolve(older, exc=Superseded(f"replaced by job {job.id}"))
                for running in self._running:
                    if running.key == key:
                        running.stop.set()
                self._pending[key] = job
            self._queue.append(job)
            self._ensure_thread()
            self._cond.notify()
        return job.future

    def depth(self) -> int:
        """Jobs still to answer: waiting (not dropped) plus the one running."""
        with self._cond:
            waiting = sum(not job.stop.is_set() for job in self._queue)
            return waiting + len(self._running)

    def has_pending(self, key: str | None) -> bool:
        """Whether a submission with this key would replace a waiting job (not add one)."""
        with self._cond:
            return key is not None and key in self._pending

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for running in self._running:
                running.stop.set()
            for job in self._queue:
                job.stop.set()
                self._resolve(job, exc=Superseded("server shutting down"))
            self._queue.clear()
            self._pending.clear()
            self._cond.notify_all()

    def retire(self) -> None:
        """Refuse new work, let the queued and running work finish, then end the thread
        (a model swapped out: its requests are answered by it, none dropped)."""
        with self._cond:
            self._retiring = True
            self._cond.notify_all()

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        with self._cond:
            return not self._queue and not self._running

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="coda-model", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed and not self._retiring:
                    self._cond.wait()
                if self._closed or not self._queue:
                    return
                gathered = self.gathered_s
                self._gather(self._queue[0])
                gathered = self.gathered_s - gathered
                if self._closed or not self._queue:
                    return
                job = self._take(self._queue.popleft())
                if job.stop.is_set():
                    continue
                jobs = [job, *self._companions(job)]
                self._running = jobs
            started = time.monotonic()
            if len(jobs) == 1:
                self._run(job)
            else:
                self._run_batch(jobs)
            ran = time.monotonic() - started
            with self._cond:
                self._running = []
                if job.group is not None:
                    self._answered = {j.key for j in jobs if j.key is not None
                                      and not j.stop.is_set()}
                    waiting = sum(j.group == job.group and not j.stop.is_set()
                                  for j in self._queue)
                    rows = min(self.max_batch, waiting + len(self._answered))
                    self._gather_until = time.monotonic() + min(
                        self.max_gather_s, GATHER_SHARE * ran / len(jobs) * rows)
            self._report(len(jobs), ran, gathered)
            self._trim()

    def _report(self, rows: int, ran_s: float, gathered_s: float) -> None:
        """Tell ``on_run`` (metrics) about a run; its failure is logged, never the worker's."""
        if self.on_run is None:
            return
        try:
            self.on_run(rows, ran_s, gathered_s)
        except Exception:  # noqa: BLE001 -- a metrics bug must not stop the fills
            log.exception("scheduler: on_run failed")

    def _trim(self) -> None:
        """Free heap pages back to the system, at most every ``trim_every_s``, after an
        answer went out and while nothing waits (or once four times that passed)."""
        since = time.monotonic() - self._trimmed
        if since < self.trim_every_s or (self._queue and since < 4 * self.trim_every_s):
            return
        self.release_memory()
        self.trims += 1
        self._trimmed = time.monotonic()

    def _gather(self, first: Job) -> None:
        """Wait (lock held, woken by each submission) until the clients the last grouped run
        answered have sent their next request, the batch is full, or the short while after
        that run is over; at once when nobody else was answered (one client never waits)."""
        if first.group is None or self._runner is None or self.max_batch < 2:
            return
        while not self._closed and not self._retiring:
            waiting = [j for j in self._queue if j.group == first.group and not j.stop.is_set()]
            expected = self._answered - {j.key for j in waiting}
            left = self._gather_until - time.monotonic()
            if not expected or len(waiting) >= self.max_batch or left <= 0:
                return
            start = time.monotonic()
            self._cond.wait(left)
            self.gathered_s += time.monotonic() - start

    def _take(self, job: Job) -> Job:
        """A job leaving the queue is no longer the one its key's next submission replaces."""
        if job.key is not None and self._pending.get(job.key) is job:
            del self._pending[job.key]
        return job

    def _companions(self, first: Job) -> list[Job]:
        """Waiting jobs of ``first``'s group (queue order, up to max_batch in all), taken out
        of the queue; dropped jobs are cleared out of it on the way (lock held)."""
        if first.group is None or self._runner is None or self.max_batch < 2:
            return []
        taken: list[Job] = []
        kept: deque[Job] = deque()
        for job in self._queue:
            if job.stop.is_set():
                self._take(job)
            elif job.group == first.group and len(taken) + 1 < self.max_batch:
                taken.append(self._take(job))
            else:
                kept.append(job)
        self._queue = kept
        return taken

    def _run_batch(self, jobs: list[Job]) -> None:
        self.started += len(jobs)
        self.batches += 1
        try:
            outcomes = self._runner([job.work for job in jobs], [job.should_stop for job in jobs])
        except BaseException as error:  # the runner itself failed: every member hears why
            outcomes = [(None, error)] * len(jobs)
        for job, (result, error) in zip(jobs, outcomes, strict=True):
            if job.stop.is_set():
                self._resolve(job, exc=Superseded(f"job {job.id} stopped"))
            elif error is not None:
                self._resolve(job, exc=error)
            else:
                self._resolve(job, result=result)

    def _run(self, job: Job) -> None:
        self.started += 1
        try:
            result = job.work(job.should_stop)
        except BaseException as error:  # every failure goes back to the awaiter
            stopped = Superseded(f"job {job.id} stopped")
            self._resolve(job, exc=stopped if job.stop.is_set() else error)
            return
        if job.stop.is_set():
            self._resolve(job, exc=Superseded(f"job {job.id} stopped"))
        else:
            self._resolve(job, result=result)

    @staticmethod
    def _resolve(job: Job, result: Any = None, exc: BaseException | None = None) -> None:
        def settle() -> None:
            if job.future.done():
                return
            if exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass
