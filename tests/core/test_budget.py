"""A big model's fill is sized to the machine's measured speed; a small model's never is."""

import logging

import pytest

from coda_lsp.core import budget
from coda_lsp.core.budget import Plan, Speed
from coda_lsp.core.engine import Engine, FillJob
from coda_lsp.core.settings import Settings

WANTED = Plan(context=1024, lengths=(4, 8, 16, 32), steps=64, window=16)
FAST = Speed(pass_ms=1.0, token_ms=0.001)   # the shipped model's order of magnitude
SLOW = Speed(pass_ms=40.0, token_ms=2.0)    # a 1.7B on two CPU cores, roughly


def test_a_plan_that_fits_is_kept():
    assert budget.plan(WANTED, FAST) == WANTED


def test_a_slow_machine_gets_a_plan_within_the_budget():
    chosen = budget.plan(WANTED, SLOW)
    assert SLOW.fill_ms(WANTED) > budget.budget_ms(8) >= SLOW.fill_ms(chosen)
    assert 8 in chosen.lengths   # the span's own estimate (4, 8, 16, 32: 0.5x, 1x, 2x, 4x) stays
    assert chosen.steps >= max(chosen.lengths) / 4


def test_cheaper_plans_cost_less_each_time():
    costs = [SLOW.fill_ms(p) for p in (WANTED, *budget.cheaper(WANTED))]
    assert len(costs) > 4 and costs == sorted(costs, reverse=True) and len(set(costs)) == len(costs)


def test_the_first_thing_given_up_is_steps_beyond_two_tokens_each():
    first = next(budget.cheaper(WANTED))
    assert first == Plan(1024, WANTED.lengths, 16, 16)


def test_when_nothing_fits_the_cheapest_plan_is_used():
    glacial = Speed(pass_ms=10_000.0, token_ms=100.0)
    assert budget.plan(WANTED, glacial) == list(budget.cheaper(WANTED))[-1]


def test_the_speed_follows_what_fills_take():
    slower = SLOW.observed(WANTED, 4 * SLOW.fill_ms(WANTED))
    assert SLOW.fill_ms(WANTED) < slower.fill_ms(WANTED) < 4 * SLOW.fill_ms(WANTED)
    for _ in range(30):   # a lasting change moves it all the way
        slower = slower.observed(WANTED, 4 * SLOW.fill_ms(WANTED))
    assert slower.fill_ms(WANTED) == pytest.approx(4 * SLOW.fill_ms(WANTED), rel=0.01)


def test_the_speed_is_measured_from_real_forward_passes(tiny_model_dir):
    speed = Engine.load(tiny_model_dir, device="cpu").speed
    assert speed.pass_ms >= 0 and speed.token_ms > 0
    assert speed.fill_ms(WANTED) > speed.fill_ms(list(budget.cheaper(WANTED))[-1])


@pytest.fixture
def engine(tiny_model_dir):
    return Engine.load(tiny_model_dir, device="cpu")


def job(fast=False):
    return FillJob(prefix="def add(a, b):\n    return ", suffix="\n", span_lengths=(2, 4, 8, 16),
                   steps=16, settings=Settings(), fast=fast)


def test_a_small_model_is_never_planned(engine):
    assert not engine.planned
    assert len(engine.fill(job()).fills) == 4


def test_a_big_model_on_a_slow_cpu_fills_fewer_candidates(engine, monkeypatch, caplog):
    monkeypatch.setattr(budget, "BIG_MODEL_PARAMS", 0)   # the tiny model counts as big
    engine = Engine(engine.model, engine.tokenizer)
    engine.speed = SLOW
    assert engine.planned
    with caplog.at_level(logging.INFO, logger="coda_lsp.core.engine"):
        fills = engine.fill(job()).fills
    assert len(fills) == 1 and fills[0].length >= 4   # the estimate (plus any healing)
    assert "fill sized to this CPU" in caplog.text
    engine.speed = SLOW
    assert len(engine.fill(job(fast=True)).fills) == 1   # invoked completions too
    assert engine.speed != SLOW   # and each fill's time corrects the measured speed


def test_the_context_goes_below_256_tokens_only_when_nothing_else_is_left():
    plans = list(budget.cheaper(WANTED))
    first_small = next(i for i, p in enumerate(plans) if p.context < 256)
    given_up = plans[first_small - 1]
    assert given_up.window == 0 and len(given_up.lengths) == 1
    assert given_up.steps == -(-max(given_up.lengths) // 4)
    assert [p.context for p in plans[first_small:]] == list(budget.LAST_CONTEXTS)


def test_a_1p7b_on_two_cores_fits_a_line_hole_in_its_goal():
    measured = Speed(pass_ms=82.0, token_ms=5.3, head_ms=35.0)   # int8 CoDA-1.7B, 2 cores
    line = Plan(context=1024, lengths=(2, 4, 10), steps=64, window=16, shared_context=True)
    chosen = budget.plan(line, measured)
    assert measured.fill_ms(chosen) <= budget.budget_ms(4) <= 1500   # issue 29: 1.5 s a line
    assert chosen.context >= 192   # as much context as the goal allows


def test_each_step_pays_the_output_head():
    """The head runs once a step over the masked tokens: a plan with more steps costs more
    by that much, and a big model's plans take it into account."""
    plan = Plan(context=256, lengths=(18,), steps=5, window=0)
    headless, headed = Speed(pass_ms=48.0, token_ms=4.6), Speed(48.0, 4.6, head_ms=35.0)
    assert headed.fill_ms(plan) == pytest.approx(headless.fill_ms(plan) + 5 * 35.0)
    invoked = Plan(context=1024, lengths=(8, 18), steps=16, window=0)
    assert headed.fill_ms(budget.plan(invoked, headed)) <= budget.budget_ms(18)
    assert headless.fill_ms(budget.plan(invoked, headless)) <= budget.budget_ms(18)
    assert headed.fill_ms(budget.plan(invoked, headless)) > budget.budget_ms(18)  # unplanned


def test_the_measured_speed_includes_the_head(tiny_model_dir):
    from coda_model import load_model

    speed = budget.measure(load_model(tiny_model_dir), repeats=1)
    assert speed.pass_ms >= 0 and speed.token_ms > 0 and speed.head_ms > 0
    slower = speed.observed(Plan(128, (8,), 4, 0), 10 * speed.fill_ms(Plan(128, (8,), 4, 0)))
    assert slower.head_ms > speed.head_ms
