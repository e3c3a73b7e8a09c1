"""A big model's fill sized to the machine: context, candidates and steps within a time budget.

The settings suit the shipped model (64 steps, up to 4 candidate rows, 1024 context tokens:
~0.4 s on a 2-core CPU). A CoDA-1.7B on the same CPU would take minutes with them: its first
pass computes every row's whole context (4 rows x 1,088 tokens), then each step recomputes
each row's hole and the HOLE_CACHE_WINDOW around it. So for a model of BIG_MODEL_PARAMS or
more on a CPU, ``plan`` times the job with the forward-pass cost measured on this machine
(``Speed``) and gives things up in the order that costs the fill least until it fits
``budget_ms``: steps down to two tokens a step, then candidates (4 -> 2 -> 1, keeping the
span's own length estimate, and the longest while two are kept), then context (512, then
256 tokens: the code next to the hole matters most), then the recomputed window, then steps
down to four tokens a step, and last the context again (192, 128, then 96 tokens: on a 2-core
CPU a 1.7B's first pass costs ~5 ms a token, so 256 tokens alone spend most of a line's 1.5 s).
The speed measured at load follows what each fill then takes
(``Speed.observed``), so a model loaded while the machine was busy is not held to a cheap
plan for good. Small models are never planned, so their fills stay what the settings say on
any machine (and the same from run to run, however busy the machine).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch

BIG_MODEL_PARAMS = 100_000_000  # below this a CPU fill meets the goals as the settings are
BUDGET_BASE_MS = 1400.0  # a hole of up to LINE_TOKENS: under the 1.5 s goal for a line
LINE_TOKENS = 24  # an invoked completion at a line's end estimates 18-20 tokens
BUDGET_PER_TOKEN_MS = 40.0  # past a line: ~40 tokens 2.0 s, ~64 tokens 3 s (a block's goal)
CONTEXTS = (512, 256)  # context tokens tried, in order, when the setting does not fit
LAST_CONTEXTS = (192, 128, 96)  # tried when nothing else is left to give up
SPEED_TOKENS = (16, 128)  # the two forward passes timed: cost per pass and per token
OBSERVED_WEIGHT = 0.3  # how far one fill's time moves the measured speed (in log scale)


@dataclass(frozen=True)
class Speed:
    """What one forward pass costs here: a fixed part and a part per token of every row, and
    the output head over a step's masked tokens (a 1.7B's head is a 151,936 x 2,048 product:
    ~35 ms a step on 2 cores whatever the few rows, a quarter of a step over a line's hole)."""

    pass_ms: float
    token_ms: float
    head_ms: float = 0.0

    def fill_ms(self, plan: Plan) -> float:
        """The expected time of a fill: one pass over every row's whole canvas, then one pass
        per further step over the holes and their windows (idle steps are skipped, so a fill
        takes at most one step per token of its longest candidate)."""
        rows, longest = len(plan.lengths), max(plan.lengths)
        whole = 1 if plan.shared_context else rows  # rows whose whole canvas the first pass runs
        first = self.pass_ms + self.token_ms * whole * (plan.context + longest)
        step = self.pass_ms + self.token_ms * rows * (longest + 2 * plan.window + 1)
        steps = min(plan.steps, longest)
        return first + (steps - 1) * step + steps * self.head_ms


    def observed(self, plan: Plan, actual_ms: float) -> Speed:
        """This speed corrected by a fill of ``plan`` that took ``actual_ms``: the machine may
        be busier (or idler) than when it was measured. Smoothed (OBSERVED_WEIGHT), so one
        odd fill moves the plans a little and a lasting change moves them all the way."""
        ratio = (max(actual_ms, 1e-3) / max(self.fill_ms(plan), 1e-3)) ** OBSERVED_WEIGHT
        return Speed(self.pass_ms * ratio, self.token_ms * ratio, self.head_ms * ratio)


@dataclass(frozen=True)
class Plan:
    context: int  # context tokens around the hole, canvas included (prompt.build's budget)
    lengths: tuple[int, ...]  # candidate mask counts, ascending
    steps: int
    window: int  # context tokens recomputed on each side of the hole every step
    shared_context: bool = False  # one row's first pass gives every row its context (holes)

    def describe(self) -> str:
        return (f"context {self.context}, {len(self.lengths)} candidate(s) {list(self.lengths)}, "
                f"{self.steps} steps, window {self.window}")


def estimate(lengths: tuple[int, ...]) -> int:
    """The span's own length estimate: the second of text.estimate_lengths' 0.5x, 1x, 2x..."""
    return lengths[min(1, len(lengths) - 1)]


def budget_ms(tokens: int) -> float:
    """The time a fill of about ``tokens`` tokens may take (issue 29's goals on 2 CPU cores:
    a one-line hole 1.5 s, a block 3 s)."""
    return BUDGET_BASE_MS + BUDGET_PER_TOKEN_MS * max(0, tokens - LINE_TOKENS)


def cheaper(plan: Plan):
    """Ever cheaper plans, in the order that costs a fill least."""
    if plan.steps > math.ceil(max(plan.lengths) / 2):
        plan = replace(plan, steps=math.ceil(max(plan.lengths) / 2))
        yield plan
    guess = estimate(plan.lengths)
    for kept in ((guess, plan.lengths[-1]), (guess,)):
        if len(plan.lengths) > len(kept):
            plan = replace(plan, lengths=tuple(sorted(set(kept))))
            yield plan
    for context in CONTEXTS:
        if plan.context > context:
            plan = replace(plan, context=context)
            yield plan
    if plan.window:
        plan = replace(plan, window=0)
        yield plan
    if plan.steps > math.ceil(max(plan.lengths) / 4):
        plan = replace(plan, steps=math.ceil(max(plan.lengths) / 4))
        yield plan
    for context in LAST_CONTEXTS:
        if plan.context > context:
            plan = replace(plan, context=context)
            yield plan


def plan(wanted: Plan, speed: Speed) -> Plan:
    """``wanted`` if it fits the budget, else the first cheaper plan that does (the cheapest
    when none does)."""
    limit = budget_ms(estimate(wanted.lengths))
    chosen = wanted
    for chosen in (wanted, *cheaper(wanted)):
        if speed.fill_ms(chosen) <= limit:
            return chosen
    return chosen


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def measure(model, repeats: int = 2) -> Speed:
    """Time forward passes of SPEED_TOKENS tokens (one row, the best of ``repeats``) and fit
    cost = pass + tokens x token; then the output head over the first size's tokens (as many
    as a line's hole). One pass first warms the kernels up and gives the head its input."""
    device = next(model.parameters()).device
    token = model.config.vocab_size // 2  # any ordinary token: the cost does not depend on it
    sizes = [torch.full((1, n), token, dtype=torch.long, device=device) for n in SPEED_TOKENS]
    hidden = model.hidden_states(sizes[0])

    def best_ms(run) -> float:
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            best = min(best, (time.perf_counter() - start) * 1e3)
        return best

    t1, t2 = (best_ms(lambda ids=ids: model.hidden_states(ids)) for ids in sizes)
    model.lm_head(hidden)
    head = best_ms(lambda: model.lm_head(hidden))
    n1, n2 = SPEED_TOKENS
    token = max((t2 - t1) / (n2 - n1), 1e-6)
    return Speed(pass_ms=max(t1 - token * n1, 0.0), token_ms=token, head_ms=head)
