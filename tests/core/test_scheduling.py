"""Newest request per document wins; the worker never blocks the loop; cancellation stops work."""

import asyncio
import threading

import pytest

from coda_lsp.core.scheduling import Scheduler, Superseded


class FakeEngine:
    """Work that takes ``steps`` ticks and polls should_stop between them, like the sampler."""

    def __init__(self, step_seconds=0.002, steps=5):
        self.step_seconds = step_seconds
        self.steps = steps
        self.computed = []
        self.stopped = []
        self.gate = threading.Event()
        self.gate.set()

    def job(self, name):
        def work(should_stop):
            self.gate.wait()
            for _ in range(self.steps):
                if should_stop():
                    self.stopped.append(name)
                    raise RuntimeError("cancelled")
                threading.Event().wait(self.step_seconds)
            self.computed.append(name)
            return name

        return work


async def gather_outcomes(futures):
    out = []
    for f in futures:
        try:
            out.append(await f)
        except Superseded:
            out.append(None)
    return out


def test_fifty_rapid_requests_compute_only_the_newest():
    async def main():
        sched, engine = Scheduler(), FakeEngine()
        engine.gate.clear()  # hold the worker so that all fifty arrive while it is busy
        futures = [sched.submit("doc", engine.job(i)) for i in range(50)]
        engine.gate.set()
        outcomes = await gather_outcomes(futures)
        sched.close()
        return engine, outcomes

    engine, outcomes = asyncio.run(main())
    assert outcomes[-1] == 49
    assert outcomes[:-1] == [None] * 49
    assert engine.computed == [49]


def test_newer_request_stops_the_running_one():
    async def main():
        sched, engine = Scheduler(), FakeEngine(step_seconds=0.05, steps=100)
        first = sched.submit("doc", engine.job("old"))
        while sched.started == 0:
            await asyncio.sleep(0.001)
        engine.steps = 1
        second = sched.submit("doc", engine.job("new"))
        outcomes = await gather_outcomes([first, second])
        sched.close()
        return engine, outcomes

    engine, outcomes = asyncio.run(main())
    assert outcomes == [None, "new"]
    assert engine.stopped == ["old"] and engine.computed == ["new"]


def test_other_documents_are_not_replaced():
    async def main():
        sched, engine = Scheduler(), FakeEngine()
        futures = [sched.submit(f"doc{i}", engine.job(i)) for i in range(3)]
        outcomes = await gather_outcomes(futures)
        sched.close()
        return outcomes

    assert asyncio.run(main()) == [0, 1, 2]


def test_cancelling_the_awaiting_task_raises_the_stop_flag():
    async def main():
        sched, engine = Scheduler(), FakeEngine(step_seconds=0.05, steps=100)
        task = asyncio.ensure_future(sched.submit("doc", engine.job("x")))
        while sched.started == 0:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        while not engine.stopped:
            await asyncio.sleep(0.005)
        sched.close()
        return engine

    assert asyncio.run(main()).stopped == ["x"]


def test_the_loop_stays_responsive_while_the_worker_runs():
    async def main():
        sched, engine = Scheduler(), FakeEngine(step_seconds=0.02, steps=10)
        fut = sched.submit("doc", engine.job("slow"))
        ticks = 0
        while not fut.done():
            await asyncio.sleep(0.001)
            ticks += 1
        sched.close()
        return ticks

    assert asyncio.run(main()) > 20


def test_errors_reach_the_awaiter_and_closed_scheduler_refuses():
    async def main():
        sched = Scheduler()

        def boom(should_stop):
            raise ValueError("bad")

        with pytest.raises(ValueError):
            await sched.submit(None, boom)
        sched.close()
        with pytest.raises(Superseded):
            await sched.submit("doc", boom)

    asyncio.run(main())
