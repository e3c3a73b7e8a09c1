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


class BatchRecorder:
    """A batch runner over FakeEngine works: records each batch's size, polls each member's
    stop flag between ticks as the sampler does for a batch (every member's rows run until
    all are stopped), answers each member or the error that stopped it."""

    def __init__(self, engine):
        self.engine = engine
        self.sizes = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, works, stops):
        self.sizes.append(len(works))
        self.started.set()
        self.release.wait()
        return [(work(lambda: False), None) for work in works]


async def held_batching(step_seconds: float = 0.002, max_gather_s: float | None = 2.0):
    """(scheduler, engine, batch recorder, blocker): batching up to 8, the worker held by an
    ungrouped job "x" until ``engine.gate`` is set, so what is submitted meanwhile queues."""
    sched, engine = Scheduler(), FakeEngine(step_seconds=step_seconds)
    runner = BatchRecorder(engine)
    sched.batching(runner, max_batch=8)
    if max_gather_s is not None:
        sched.max_gather_s = max_gather_s
    engine.gate.clear()
    blocker = sched.submit("x", engine.job("x"))
    await asyncio.sleep(0.05)
    return sched, engine, runner, blocker


def test_waiting_jobs_of_one_group_run_as_one_batch_and_each_gets_its_own_answer():
    async def main():
        sched, engine = Scheduler(), FakeEngine()
        runner = BatchRecorder(engine)
        sched.batching(runner, max_batch=3)
        engine.gate.clear()  # the first job holds the worker while five more arrive
        first = sched.submit("a", engine.job("a"), group="typing")
        await asyncio.sleep(0.05)
        rest = [sched.submit(k, engine.job(k), group="typing") for k in "bcde"]
        other = sched.submit("f", engine.job("f"))  # no group: never batched
        engine.gate.set()
        outcomes = await gather_outcomes([first, *rest, other])
        sched.close()
        return runner.sizes, outcomes, sched.batches

    sizes, outcomes, batches = asyncio.run(main())
    assert outcomes == ["a", "b", "c", "d", "e", "f"]
    assert sizes == [3] and batches == 1  # b, c, d together (max 3), then e alone, f alone


def test_a_cancelled_member_of_a_batch_is_answered_superseded_and_the_others_complete():
    async def main():
        sched, engine, runner, blocker = await held_batching(max_gather_s=None)
        members = {k: sched.submit(k, engine.job(k), group="typing") for k in "abc"}
        runner.release.clear()
        engine.gate.set()
        await asyncio.get_running_loop().run_in_executor(None, runner.started.wait)
        assert sched.depth() == 3  # the batch is running: three jobs
        members["b"].cancel()  # the client hung up mid-batch
        newer = sched.submit("c", engine.job("c2"), group="typing")  # newest wins for c
        runner.release.set()
        await blocker
        outcomes = {}
        for k, f in members.items():
            try:
                outcomes[k] = await f
            except (Superseded, asyncio.CancelledError) as exc:
                outcomes[k] = type(exc).__name__
        outcomes["c2"] = await newer
        sched.close()
        return outcomes, runner.sizes

    outcomes, sizes = asyncio.run(main())
    assert outcomes == {"a": "a", "b": "CancelledError", "c": "Superseded", "c2": "c2"}
    assert sizes == [3]  # c2 arrived while the batch ran: it ran after it, alone


def test_a_batch_waits_briefly_for_the_clients_the_last_batch_answered():
    """Typing clients send their next request a moment after their answer: the next batch
    takes them together instead of running the one already back alone (which splits the
    clients into cohorts that wait for each other's batches)."""
    async def main():
        sched, engine, runner, blocker = await held_batching(0.04)  # a batch: ~0.6 s
        first = [sched.submit(k, engine.job(k), group="typing") for k in "abc"]
        engine.gate.set()
        await gather_outcomes([blocker, *first])
        back = [sched.submit("c", engine.job("c2"), group="typing")]  # c comes back at once
        await asyncio.sleep(0.05)  # a and b a moment later
        back += [sched.submit(k, engine.job(k + "2"), group="typing") for k in "ab"]
        outcomes = await gather_outcomes(back)
        sched.close()
        return outcomes, runner.sizes, sched.gathered_s

    outcomes, sizes, gathered = asyncio.run(main())
    assert outcomes == ["c2", "a2", "b2"]
    assert sizes == [3, 3]  # not c2 alone, then a2 and b2
    assert 0 < gathered < 1.0  # it waited for a and b, not for the whole while


def test_split_cohorts_merge_the_wait_is_a_share_of_the_batch_it_would_make():
    """One client's fill ran alone while three others queued: the next batch waits for that
    client as a share of the four-fill batch it would make, not of the one-fill run just
    done (too short for a typing client to come back: the cohorts would stay split, each
    waiting for the other's batch)."""
    async def main():
        sched, engine, runner, blocker = await held_batching(0.08)  # a fill: ~0.4 s
        alone = sched.submit("a", engine.job("a"), group="typing")
        engine.gate.set()
        await blocker
        await asyncio.sleep(0.05)  # a is running alone; the other cohort arrives
        others = [sched.submit(k, engine.job(k), group="typing") for k in "bcd"]
        await alone
        await asyncio.sleep(0.2)  # a comes back after half its own run's time
        back = sched.submit("a", engine.job("a2"), group="typing")
        outcomes = await gather_outcomes([*others, back])
        sched.close()
        return outcomes, runner.sizes

    outcomes, sizes = asyncio.run(main())
    assert outcomes == ["b", "c", "d", "a2"]
    assert sizes == [4]  # not b, c, d while a is away, then a2 alone


def test_each_run_is_reported_with_its_fills_time_and_gather_wait():
    """What /metrics shows of batching comes from here: fills per run, the run's seconds and
    the wait for its clients; a failing report is logged and the fills go on."""
    reports = []

    def on_run(rows, ran_s, gathered_s):
        reports.append((rows, ran_s, gathered_s))
        raise RuntimeError("a broken metrics hook")

    async def main():
        sched, engine, _, blocker = await held_batching(0.04)  # a fill: ~0.2 s
        sched.on_run = on_run
        first = [sched.submit(k, engine.job(k), group="typing") for k in "ab"]
        engine.gate.set()
        await gather_outcomes([blocker, *first])
        back = [sched.submit("a", engine.job("a2"), group="typing")]
        await asyncio.sleep(0.05)  # b comes back later: the batch waits for it
        back.append(sched.submit("b", engine.job("b2"), group="typing"))
        outcomes = await gather_outcomes(back)
        for _ in range(200):  # the report follows the answers
            if len(reports) == 3:
                break
            await asyncio.sleep(0.01)
        sched.close()
        return outcomes, sched.gathered_s

    outcomes, gathered = asyncio.run(main())
    assert outcomes == ["a2", "b2"]  # the hook's failure stopped nothing
    assert [rows for rows, _, _ in reports] == [1, 2, 2]
    assert all(ran_s >= 0.19 * rows for rows, ran_s, _ in reports)  # five 0.04 s steps a fill
    assert reports[1][2] == 0 and 0.03 < reports[2][2] == pytest.approx(gathered)


def test_a_lone_client_never_waits_for_others():
    async def main():
        sched, engine = Scheduler(), FakeEngine(step_seconds=0.04)
        sched.batching(BatchRecorder(engine), max_batch=8)
        sched.max_gather_s = 2.0
        answers = [await sched.submit("a", engine.job(f"a{i}"), group="typing")
                   for i in range(3)]
        sched.close()
        return answers, sched.gathered_s

    answers, gathered = asyncio.run(main())
    assert answers == ["a0", "a1", "a2"] and gathered == 0


def test_max_batch_one_runs_grouped_jobs_alone():
    async def main():
        sched, engine = Scheduler(), FakeEngine()
        runner = BatchRecorder(engine)
        sched.batching(runner, max_batch=1)
        engine.gate.clear()
        futures = [sched.submit(k, engine.job(k), group="typing") for k in "abc"]
        engine.gate.set()
        outcomes = await gather_outcomes(futures)
        sched.close()
        return outcomes, runner.sizes

    outcomes, sizes = asyncio.run(main())
    assert outcomes == ["a", "b", "c"] and sizes == []
    with pytest.raises(ValueError, match="max_batch"):
        Scheduler().batching(lambda works, stops: [], 0)


@pytest.mark.parametrize("every, expected", [(0.0, 3), (3600.0, 0)])
def test_the_worker_hands_memory_back_between_jobs_at_most_so_often(every, expected):
    """Freed heap pages go back to the system after a job's answer, at most every
    ``trim_every_s``: each of three jobs at 0 s, none within an hour of the start."""
    async def main():
        sched, engine = Scheduler(), FakeEngine()
        sched.trim_every_s = every
        trimmed_after = []
        sched.release_memory = lambda: trimmed_after.append(list(engine.computed))
        for name in ("a", "b", "c"):
            assert await sched.submit(name, engine.job(name)) == name
        for _ in range(500):  # the worker trims after resolving the last answer
            if sched.trims >= expected:
                break
            await asyncio.sleep(0.01)
        sched.close()
        return trimmed_after, sched.trims

    trimmed_after, trims = asyncio.run(main())
    assert trims == expected
    assert trimmed_after == [["a"], ["a", "b"], ["a", "b", "c"]][:expected]


def test_the_trim_waits_for_an_empty_queue():
    """A trim takes tens of milliseconds: while fills wait it is put off (up to four times
    ``trim_every_s``), so it comes after the last of three queued jobs, not between them."""
    async def main():
        sched, engine = Scheduler(), FakeEngine()
        sched.trim_every_s = 0.5
        trimmed_after = []
        sched.release_memory = lambda: trimmed_after.append(list(engine.computed))
        engine.gate.clear()  # all three wait behind the first while a trim falls due
        futures = [sched.submit(name, engine.job(name)) for name in ("a", "b", "c")]
        await asyncio.sleep(0.6)
        engine.gate.set()
        assert await gather_outcomes(futures) == ["a", "b", "c"]
        for _ in range(500):
            if sched.trims:
                break
            await asyncio.sleep(0.01)
        sched.close()
        return trimmed_after

    assert asyncio.run(main()) == [["a", "b", "c"]]
