"""The fill contract: judging candidates with real tree-sitter, the one-line reason, retries."""

from scripted_coda import ScriptedEngine

from coda_lsp.core import contract, fim
from coda_lsp.core.engine import Fill, FillJob
from coda_lsp.core.settings import Settings
from coda_syntax import spans

HOLE_FILE = "def add(a, b):\n    ...\n"
BROKEN = [["elif a == 0:\n        a =", 0.9], ["elif a ==", 0.8], ["elif", 0.7]]


def hole_outcome(script: dict, **kwargs) -> fim.Outcome:
    doc = fim.open_document(HOLE_FILE, "file:///w/holes.py")
    hole = spans.holes(doc.syntax)[0]
    engine = ScriptedEngine(script)
    outcome = fim.fill_span(engine, doc, hole, 4, Settings(), **kwargs)
    outcome.jobs = engine.jobs
    return outcome


def test_every_candidate_adding_a_syntax_error_is_refused_with_the_best_kept():
    outcome = hole_outcome({"fills": BROKEN}, retry=False)
    decision = outcome.decision
    assert outcome.fills == [] and not decision.accepted
    assert decision.reason == "3 candidate(s): 3 added a syntax error"
    assert decision.best_rejected.text == "elif a == 0:\n        a ="
    assert decision.cause == contract.BROKEN
    assert decision.anyway_title == "Fill anyway (adds a syntax error)"


def test_a_parsing_confident_fill_passes_ahead_of_broken_ones():
    decision = hole_outcome({"fills": [*BROKEN, ["return a + b", 0.5]]}).decision
    assert [f.text for f in decision.fills] == ["return a + b"]
    assert decision.reason == "" and decision.rejected[contract.BROKEN] == 3
    assert decision.attempts == 1


def test_empty_and_unsure_candidates_are_counted_in_check_order():
    decision = hole_outcome({"fills": [["  ", 0.9], ["return a", 0.05], ["return b", 0.02]]},
                            retry=False).decision
    assert decision.reason == ("3 candidate(s): 1 was empty, "
                               "2 were below the confidence threshold 0.1")
    assert decision.best_rejected.text == "return a"
    assert decision.anyway_title == "Fill anyway (under the confidence bar)"


def test_no_candidate_at_all_says_so():
    decision = contract.judge([], 0.1, lambda text: 0)
    assert decision.reason == "the model returned no candidate"
    assert decision.anyway_title == "Fill anyway (empty)"


def test_a_refusal_retries_shorter_then_another_order_and_a_retry_can_rescue():
    outcome = hole_outcome({"fills": BROKEN, "retry": [["return a - b", 0.6]]})
    decision = outcome.decision
    assert [f.text for f in decision.fills] == ["return a - b"]
    first, shorter, other = outcome.jobs
    assert min(shorter.span_lengths) < min(first.span_lengths)
    assert set(contract.EXPRESSION_LENGTHS) <= set(shorter.span_lengths)
    assert other.seed == contract.RETRY_SEED and other.settings.alg != first.settings.alg
    assert decision.attempts == 3 and decision.candidates == 7


def test_retries_stop_at_the_time_budget():
    """The first attempt (longest candidate 16) takes 1 s, the budget is 3 s in all. The
    shorter retry is expected to cost less; the longer one (longest 24) 1.5 s, so it starts
    only if 1.5 s are left: after a 0.4 s shorter retry it runs, after a 1 s one it does not
    (it would end at 3.5 s), nor after a 1.5 s one."""
    job = FillJob("def f():\n    ", "\n", (8, 16), 4, Settings())
    shorter, longer = contract.retry_jobs(job)
    assert max(shorter.span_lengths) < 16 and max(longer.span_lengths) == 24
    for durations, expected in (((1.0, 0.4, 1.5), 3), ((1.0, 1.0, 1.5), 2),
                                ((1.0, 1.5, 1.0), 2)):
        now = [100.0]
        attempts = contract.Attempts(job, 0.1, lambda text: 1, clock=lambda now=now: now[0])
        runs = 0
        while attempts.next_job() is not None:
            now[0] += durations[runs]
            runs += 1
            attempts.add([Fill("x = (", 0.9, 4)])
        assert runs == expected, durations
        assert not attempts.decision.accepted


def test_no_retry_once_something_passes_or_when_told_not_to():
    job = FillJob("x = ", "\n", (4,), 4, Settings())
    attempts = contract.Attempts(job, 0.1, lambda text: 0)
    assert attempts.next_job() is job
    attempts.add([Fill("1", 0.9, 1)])
    assert attempts.next_job() is None
    attempts = contract.Attempts(job, 0.1, lambda text: 1, retry=False)
    attempts.next_job()
    attempts.add([Fill("1 +", 0.9, 1)])
    assert attempts.next_job() is None
