"""The HTTP request shapes and answers, without a server (tests/http/ runs the real one)."""

import pytest

from coda_lsp.core.settings import Settings
from coda_lsp.http.wire import (
    Answer,
    BadRequest,
    choices,
    infill_body,
    parse_completions,
    parse_infill,
    select,
)


def test_infill_prefix_is_input_prefix_then_the_cursor_line():
    req = parse_infill({"input_prefix": "a\n", "prompt": "  b", "input_suffix": "\nc",
                        "n_predict": 8, "steps": 3, "alg": "entropy"})
    assert (req.prefix, req.suffix, req.max_tokens) == ("a\n  b", "\nc", 8)
    s = req.settings(Settings(steps=16, max_middle_tokens=64, confidence_threshold=0.5))
    # the fill contract's bar stays the server's, as in `coda-lsp fill` and the editors
    assert (s.steps, s.alg, s.max_middle_tokens, s.confidence_threshold) == (3, "entropy", 8,
                                                                             0.5)


def test_no_limit_keeps_the_servers_settings():
    req = parse_infill({"n_predict": -1})
    assert req.max_tokens is None and not req.nothing_to_predict
    assert req.settings(Settings(steps=5)).steps == 5
    assert parse_infill({"n_predict": 0}).nothing_to_predict


def test_completions_take_prompt_suffix_and_user_as_the_client_key():
    req = parse_completions({"prompt": ["before"], "suffix": None, "user": "u1", "n": 2,
                             "stop": "\n\n", "stream": True,
                             "stream_options": {"include_usage": True}})
    assert (req.prefix, req.suffix, req.client, req.n, req.stop) == ("before", "", "u1", 2,
                                                                     ("\n\n",))
    assert req.stream and req.include_usage
    assert parse_completions({"prompt": "x", "user": "u1"}, client="header").client == "header"


@pytest.mark.parametrize("body", [
    {"prompt": "x", "steps": 2000}, {"prompt": "x", "alg": "greedy"}, {"prompt": "x", "n": 0},
])
def test_out_of_range_options_are_refused(body):
    with pytest.raises(BadRequest):
        parse_completions(body).settings(Settings())


def test_choices_are_distinct_cut_at_stops_and_never_empty():
    assert choices(["ab\ncd", "ab\nxy", "zz"], 2, ("\n",)) == ["ab", "zz"]
    assert choices([], 3, ()) == [""]


def test_response_fields_flatten_paths_like_llama_cpp():
    body = infill_body(Answer(["x"], 5, [1], 1.0, 2.0, 4, "m"))
    assert select(body, ("content", "timings/prompt_n", "nope", "timings/nope", "")) == {
        "content": "x", "timings/prompt_n": 5}
