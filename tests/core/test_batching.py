"""Fills from several requests as rows of one batch give the fills each request gets alone."""

import dataclasses
from pathlib import Path

import pytest

from coda_lsp.core import batching, fim
from coda_lsp.core.engine import Cancelled, Engine, FillJob
from coda_lsp.core.settings import Settings

SHIPPED = Path(__file__).resolve().parents[2] / "model"
SOURCE = Path(__file__).resolve().parents[2] / "coda_lsp" / "core" / "scheduling.py"
SETTINGS = Settings(context_tokens=160)  # short contexts: the test stays quick


@pytest.fixture(scope="module")
def shipped():
    # float32: the agreement checked is the batching's, not bf16's rounding of other shapes
    return Engine.load(SHIPPED, device="cpu", dtype="float32")


def typing_jobs(count: int, carry: bool = False) -> list[FillJob]:
    """Typing fills at fixed places in a real file: contexts of different lengths, cursors
    mid-line and at line ends, so prefixes, suffixes, lengths and healing all differ, and
    one or two candidate rows each (a keystroke's one, or a caller's alternatives)."""
    text = SOURCE.read_text(encoding="utf-8")
    jobs = []
    for i in range(count):
        cut = 400 + (len(text) - 800) * i // count
        start = max(0, cut - 300 - 37 * (i % 7))
        jobs.append(FillJob(text[start:cut], text[cut : cut + 120 + 11 * (i % 5)], (4, 8, 16),
                            4, SETTINGS, fast=True, inline=True,
                            carry_key=f"client:{i}" if carry else None, choices=1 + i % 2))
    return jobs


def twin(engine: Engine) -> Engine:
    """Another engine on the same weights, with carries of its own."""
    return Engine(engine.model, engine.tokenizer, engine.device, engine.dtype_name)


def texts(result) -> list[str]:
    return [f.text for f in result.fills]


def test_a_batch_gives_each_request_the_fill_it_gets_alone(shipped):
    jobs = typing_jobs(50)
    alone = [texts(shipped.fill(job)) for job in jobs]
    batched = shipped.fill_many(jobs, [lambda: False] * len(jobs))
    assert all(r.batch == len(jobs) for r in batched)
    pairs = [(a, b) for one, many in zip(alone, batched, strict=True)
             for a, b in zip(one, texts(many), strict=True)]
    same = sum(a == b for a, b in pairs)
    assert same >= 0.99 * len(pairs), [p for p in pairs if p[0] != p[1]]
    assert len({a for a, _ in pairs}) > 10  # different requests, different fills


def next_keystroke(shipped, jobs, warmed):
    """Each client types "x" after its job: (alone, batched) results on two twin engines,
    where the clients in ``warmed`` filled their previous keystroke (alone) first on both."""
    alone_engine, batch_engine = twin(shipped), twin(shipped)
    for job in warmed:
        alone_engine.fill(job)
        batch_engine.fill(job)
    typed = [dataclasses.replace(job, prefix=job.prefix + "x") for job in jobs]
    alone = [alone_engine.fill(job) for job in typed]
    return alone, batch_engine.fill_many(typed, [lambda: False] * len(typed))


def test_a_batch_reuses_each_clients_carried_context(shipped):
    jobs = typing_jobs(6, carry=True)
    alone, batched = next_keystroke(shipped, jobs, warmed=jobs)
    assert [r.reused for r in batched] == [r.reused for r in alone]
    assert all(r.reused > 50 for r in batched)
    same = sum(a == b for one, many in zip(alone, batched, strict=True)
               for a, b in zip(texts(one), texts(many), strict=True))
    assert same == sum(len(r.fills) for r in alone) == 9  # 3 x 1 row + 3 x 2 rows


def test_carried_and_fresh_clients_in_one_batch_each_get_their_own_fill(shipped):
    """Half the clients carry their last keystroke's context (first passes of a few dozen
    columns, run as one padded pass), half are new (full passes, run apart from them): every
    one gets the fill, and reuses the context, it gets alone."""
    jobs = typing_jobs(8, carry=True)
    alone, batched = next_keystroke(shipped, jobs, warmed=jobs[::2])
    assert [r.reused for r in batched] == [r.reused for r in alone]
    assert [r.reused > 50 for r in batched] == [True, False] * 4
    assert [texts(r) for r in batched] == [texts(r) for r in alone]


def test_a_batch_stops_when_every_member_is_stopped(shipped):
    jobs = typing_jobs(3)
    results = shipped.fill_many(jobs, [lambda: True] * 3)
    assert all(isinstance(r, Cancelled) for r in results)
    one_left = shipped.fill_many(jobs, [lambda: True, lambda: False, lambda: True])
    assert not any(isinstance(r, BaseException) for r in one_left)  # still wanted: computed


class Steps:
    """A fill as steps over a fixed text, as the HTTP server's work is."""

    def __init__(self, prefix: str, suffix: str) -> None:
        self.prefix, self.suffix = prefix, suffix

    def steps(self, should_stop):
        return fim.between_steps(self.prefix, self.suffix, SETTINGS, 4, fast=True)


def test_the_batch_runner_answers_every_work_as_fill_between_would(shipped):
    jobs = typing_jobs(4)
    works = [Steps(job.prefix, job.suffix) for job in jobs]
    outcomes = batching.run_batch(shipped, works, [lambda: False] * len(works))
    for work, (outcome, error) in zip(works, outcomes, strict=True):
        assert error is None
        alone = fim.fill_between(shipped, work.prefix, work.suffix, SETTINGS, 4, fast=True)
        assert [f.text for f in outcome.fills] == [f.text for f in alone.fills]
        assert outcome.batch == len(works)


def test_the_probe_measures_and_leaves_no_carries_behind(shipped):
    found = batching.probe(shipped, SETTINGS, limit=2, repeats=1)
    assert set(found.seconds) <= {1, 2} and 1 in found.seconds
    assert found.max_batch in found.seconds
    assert not any(k.startswith(batching.PROBE_KEY) for k in shipped.carries)


def test_the_probe_keeps_the_smallest_batch_with_nearly_the_best_rate():
    # fills per second still rising at 8, 16, 32 (2.6x, 2.7x, 2.9x one at a time, as
    # measured here): a cap of 8 would split 16 typing clients into two cohorts
    rising = {1: 0.040, 8: 8 * 0.040 / 2.6, 16: 16 * 0.040 / 2.7, 32: 32 * 0.040 / 2.9}
    assert batching.near_best(rising) == 32
    # a plateau from 8 on: no bigger batch for the same rate
    plateau = {1: 0.040, 8: 0.100, 16: 0.201, 32: 0.410}
    assert batching.near_best(plateau) == 8
    # batching that does not pay keeps one at a time
    assert batching.near_best({1: 0.040, 2: 0.080, 4: 0.170}) == 1
