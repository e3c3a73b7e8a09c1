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


def test_a_span_request_carries_the_callers_lengths_steps_flags_and_settings():
    """What a language server's remote engine sends (core.remote): its own span lengths and
    sampler settings, a hole fill's steps past the steps setting's 1024, a retry's seed."""
    req = parse_infill({"input_prefix": "a", "input_suffix": "b", "lengths": [3, 6, 10],
                        "steps": 2048, "fast": True, "inline": True, "seed": 7,
                        "choices": 2, "settings": {"contextTokens": 512, "multiline": "never"}})
    assert (req.lengths, req.steps, req.fast, req.inline, req.seed, req.n) == (
        (3, 6, 10), 2048, True, True, 7, 2)
    s = req.settings(Settings())
    assert (s.context_tokens, s.multiline) == (512, "never")
    assert parse_infill({"seed": 7}).seed is None  # llama.cpp clients' seed: ignored as before


@pytest.mark.parametrize(("body", "line"), [
    ({"fast": True}, "fast, inline, choices and settings go with lengths (a span request)"),
    ({"choices": 2}, "fast, inline, choices and settings go with lengths (a span request)"),
    ({"lengths": []}, "lengths must be a list of 1 to 64 integers in [1, 1024]"),
    ({"lengths": [4], "steps": 5000}, "steps must be an integer in [1, 4096]"),
    ({"lengths": [0]}, "lengths[0] must be an integer in [1, 1024]"),
    ({"lengths": [4], "settings": {"typingModel": "/x"}}, "settings: unknown field "
     "'typingModel' (one of algTemp, contextTokens, maxMiddleTokens, fillHoleExact, multiline)"),
    ({"steps": 2048}, "steps must be an integer in [1, 1024]"),
])
def test_a_span_request_out_of_shape_is_one_line(body, line):
    with pytest.raises(BadRequest) as info:
        parse_infill(body).settings(Settings())
    assert str(info.value) == line


def test_a_span_answer_lists_every_candidate():
    a = Answer(["x"], 3, [1], 1.0, 2.0, 4, "m",
               [{"text": "x", "confidence": 0.5, "length": 4}])
    assert infill_body(a)["candidates"] == [{"text": "x", "confidence": 0.5, "length": 4}]
    assert "candidates" not in infill_body(Answer(["x"], 3, [1], 1.0, 2.0, 4, "m"))
