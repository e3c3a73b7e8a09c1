"""benchmarks/bench_threshold.py counts what the server would show at each confidence bar."""

import importlib.util
from pathlib import Path

from coda_lsp.core.engine import Fill

spec = importlib.util.spec_from_file_location(
    "bench_threshold", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_threshold.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_each_bar_shows_the_first_ranked_fill_that_clears_it():
    requests = [
        ([Fill("a + b", 0.9, 4)], "a + b"),                        # sure and right
        ([Fill("junk", 0.15, 4), Fill("x", 0.45, 2)], "x"),         # ranked junk, then right
        ([Fill("nope", 0.3, 4)], "y"),                              # unsure and wrong
        ([], "z"),                                                  # nothing to offer
    ]
    low, mid, high = bench.table(requests, bars=(0.1, 0.4, 0.5))
    assert (low["shown"], low["exact_kept"], low["exact_at_base"]) == (0.75, 1, 1)
    # at 0.4 the second request offers its confident "x" instead of the junk ranked first
    assert (mid["shown"], mid["exact_kept"], mid["exact_shown"]) == (0.5, 2, 1.0)
    assert high["shown"] == 0.25 and high["exact_kept"] == 1
    assert high["es_hidden"] == 0.0   # "junk" vs "x" and "nope" vs "y": nothing in common
