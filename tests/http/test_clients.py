"""The clients that already speak llama.cpp's and OpenAI's APIs, against the real server.

Every fill must be the one ``coda-lsp fill`` writes for the same prefix, suffix and steps:
the two share ``fim.fill_span``. Request bodies are the ones the plugins send, field for
field (llama.vim's ``llama#fim`` and ring update, llama.vscode's ``createRequestPayload``).
"""

from __future__ import annotations

import pytest
from http_kit import API_KEY, STEPS, fill_cli, sse_events
from openai import OpenAI

# (text before the cursor, text after it); the cursor ends a line, as when typing.
CASES = [
    ("def add(a, b):\n    return", "\n\n\nclass Stack:\n    pass\n"),
    ("class Stack:\n    def __init__(self):\n        self.items", "\n\n    def push(self):\n"),
]


@pytest.fixture(scope="module")
def expected(tiny_model_dir, tmp_path_factory):
    """What `coda-lsp fill` inserts at each case's cursor (non-empty, or the test is moot)."""
    out = []
    for i, (prefix, suffix) in enumerate(CASES):
        # the server detects Python from the text and offers its best fill, parsing or not
        filled = fill_cli(tiny_model_dir, tmp_path_factory.mktemp(f"fill{i}"), prefix, suffix,
                          STEPS, "snippet.py", "--accept-rejected")
        assert filled.startswith(prefix) and filled.endswith(suffix)
        middle = filled[len(prefix): len(filled) - len(suffix)]
        assert middle.strip(), "coda-lsp fill filled nothing: the comparison would be empty"
        out.append(middle)
    return out


def openai_client(server) -> OpenAI:
    return OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_openai_client_gets_the_fill_that_coda_lsp_fill_writes(http_server, expected, case):
    prefix, suffix = CASES[case]
    response = openai_client(http_server).completions.create(
        model="coda", prompt=prefix, suffix=suffix, max_tokens=64, temperature=0)
    assert response.object == "text_completion"
    assert response.choices[0].text == expected[case]
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens > 0
    assert response.usage.total_tokens == (response.usage.prompt_tokens
                                           + response.usage.completion_tokens)


def test_openai_stream_ends_with_done_and_adds_up_to_the_fill(http_server, expected):
    prefix, suffix = CASES[0]
    stream = openai_client(http_server).completions.create(
        model="coda", prompt=prefix, suffix=suffix, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)  # the client stops at data: [DONE]; it raises on a broken stream
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected[0]
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    status, text = http_server.request("POST", "/v1/completions", {
        "prompt": prefix, "suffix": suffix, "stream": True})
    assert status == 200 and sse_events(text)[-1] == "[DONE]"


def test_openai_n_returns_distinct_candidates_best_first(http_server, expected):
    prefix, suffix = CASES[0]
    response = openai_client(http_server).completions.create(
        model="coda", prompt=prefix, suffix=suffix, n=4)
    texts = [c.text for c in response.choices]
    assert texts[0] == expected[0]
    assert len(set(texts)) == len(texts) and [c.index for c in response.choices] == list(
        range(len(texts)))


def test_openai_stop_cuts_the_fill(http_server, expected):
    prefix, suffix = CASES[0]
    stop = expected[0][len(expected[0]) // 2:][:2]
    response = openai_client(http_server).completions.create(
        model="coda", prompt=prefix, suffix=suffix, stop=[stop])
    assert response.choices[0].text == expected[0][: expected[0].find(stop)]


def llama_vim_body(prefix_lines: str, line_prefix: str, suffix: str) -> dict:
    """llama.vim's llama#fim request, field for field (defaults of g:llama_config)."""
    return {
        "input_prefix": prefix_lines,
        "input_suffix": suffix,
        "input_extra": [{"text": "def helper():\n    pass\n", "time": [1764250000, 123456],
                         "filename": "helper.py"}],
        "prompt": line_prefix,
        "n_predict": 256,
        "n_indent": len(line_prefix) - len(line_prefix.lstrip()),
        "top_k": 40,
        "top_p": 0.99,
        "stream": False,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 1500,
        "response_fields": [
            "content",
            "timings/prompt_n",
            "timings/prompt_ms",
            "timings/prompt_per_token_ms",
            "timings/prompt_per_second",
            "timings/predicted_n",
            "timings/predicted_ms",
            "timings/predicted_per_token_ms",
            "timings/predicted_per_second",
            "truncated",
            "tokens_cached",
        ],
    }


def split_at_line(prefix: str) -> tuple[str, str]:
    """(whole lines before the cursor line, the cursor line up to the cursor): the plugins'
    input_prefix and prompt."""
    cut = prefix.rfind("\n") + 1
    return prefix[:cut], prefix[cut:]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_llama_vim_request_gets_the_fill_and_flattened_timings(http_server, expected, case):
    prefix, suffix = CASES[case]
    status, body = http_server.request("POST", "/infill", llama_vim_body(*split_at_line(prefix),
                                                                         suffix))
    assert status == 200
    assert body["content"] == expected[case]
    # llama.vim reads the flattened keys response_fields asks for, and only shows timings
    # when all six are there
    for key in ("timings/prompt_n", "timings/prompt_ms", "timings/prompt_per_second",
                "timings/predicted_n", "timings/predicted_ms", "timings/predicted_per_second"):
        assert isinstance(body[key], int | float), key
    assert body["timings/prompt_n"] > 0 and body["tokens_cached"] == 0
    assert set(body) == set(llama_vim_body("", "", "")["response_fields"])


def test_llama_vim_ring_update_is_answered_without_running_the_model(http_server):
    body = {
        "input_prefix": "", "input_suffix": "",
        "input_extra": [{"text": "x = 1\n", "time": [1, 2], "filename": "a.py"}],
        "prompt": "", "n_predict": 0, "temperature": 0.0, "stream": False, "samplers": [],
        "cache_prompt": True, "t_max_prompt_ms": 1, "t_max_predict_ms": 1,
        "response_fields": [""],
    }
    assert http_server.request("POST", "/infill", body) == (200, {})


def llama_vscode_body(prefix_lines: str, line_prefix: str, suffix: str,
                      predict: bool = True) -> dict:
    """llama.vscode's createRequestPayload (its defaults), for a completion or a warm-up."""
    chunks = [{"text": "import os\n", "time": 1764250000000, "filename": "/w/a.py"}]
    if not predict:
        return {"input_prefix": prefix_lines, "input_suffix": suffix, "input_extra": chunks,
                "prompt": line_prefix, "n_predict": 0, "samplers": [], "cache_prompt": True,
                "t_max_prompt_ms": 500, "t_max_predict_ms": 1}
    return {
        "input_prefix": prefix_lines,
        "input_suffix": suffix,
        "input_extra": chunks,
        "prompt": line_prefix,
        "n_predict": 128,
        "top_k": 40,
        "top_p": 0.99,
        "stream": False,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
        "n_indent": 4,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 2500,
    }


@pytest.mark.parametrize("case", range(len(CASES)))
def test_llama_vscode_request_gets_the_fill_and_timings(http_server, expected, case):
    prefix, suffix = CASES[case]
    status, body = http_server.request("POST", "/infill",
                                       llama_vscode_body(*split_at_line(prefix), suffix))
    assert status == 200
    assert body["content"] == expected[case]
    assert body["stop"] is True and body["truncated"] is False and body["tokens_cached"] == 0
    timings = body["timings"]
    assert timings["prompt_n"] > 0 and timings["predicted_n"] > 0
    assert timings["predicted_ms"] > 0 and timings["steps"] == STEPS


def test_llama_vscode_warm_up_request_is_answered_empty(http_server):
    status, body = http_server.request("POST", "/infill",
                                       llama_vscode_body("", "", "", predict=False))
    assert status == 200 and body["content"] == ""


def test_continue_fim_request_streams_the_fill_as_chat_deltas(http_server, expected):
    """Continue's FIM call (providers mistral/openai): POST {apiBase}fim/completions, read
    chunk.choices[0].delta.content from every event until [DONE]."""
    prefix, suffix = CASES[1]
    body = {"model": "coda", "prompt": prefix, "suffix": suffix, "max_tokens": 64,
            "temperature": 0, "top_p": 1, "frequency_penalty": 0, "presence_penalty": 0,
            "stop": ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<|endoftext|>",
                     "\n\n\n", "/src/", "#- coding: utf-8", "```", "\ndef", "\nclass"],
            "stream": True}
    headers = http_server.headers(**{"Accept": "application/json", "x-api-key": API_KEY})
    status, text = http_server.request("POST", "/v1/fim/completions", body, headers=headers)
    assert status == 200
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    content = "".join(e["choices"][0]["delta"]["content"] for e in events[:-1])
    stops = body["stop"]
    cut = min([i for i in (expected[1].find(s) for s in stops) if i >= 0],
              default=len(expected[1]))
    assert content == expected[1][:cut]


def test_infill_stream_states_show_the_fill_sharpening(http_server, expected):
    prefix, suffix = CASES[0]
    lines, line = split_at_line(prefix)
    status, text = http_server.request("POST", "/infill", {
        "input_prefix": lines, "prompt": line, "input_suffix": suffix, "stream": True,
        "stream_states": True, "steps": STEPS})
    assert status == 200
    events = sse_events(text)
    states = [e["state"] for e in events if "state" in e]
    runs: list[list[dict]] = []  # one per attempt: the fill contract may try again
    for s in states:
        if s["step"] == 1:
            runs.append([])
        runs[-1].append(s)
    assert runs and len(runs) <= 3
    for run in runs:
        assert [s["step"] for s in run] == list(range(1, STEPS + 1))
        assert all(s["steps"] == STEPS for s in run)
        masks = [sum(c.count("\u2591") for c in s["candidates"]) for s in run]
        assert masks[0] > 0 and masks[-1] == 0 and masks == sorted(masks, reverse=True)
    assert "".join(e["content"] for e in events) == expected[0]
    assert events[-1]["stop"] is True and events[-1]["timings"]["steps"] == STEPS


def test_steps_per_request_change_the_run(http_server):
    prefix, suffix = CASES[0]
    status, body = http_server.request("POST", "/infill", {
        "input_prefix": prefix, "input_suffix": suffix, "steps": 2, "alg": "entropy"})
    assert status == 200 and body["timings"]["steps"] == 2


def test_models_and_health(http_server):
    status, health = http_server.request("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["queue"]["max"] == 32
    assert list(health["models"]) == ["fill"]  # without --fast: the fill role
    models = openai_client(http_server).models.list()
    assert [m.id for m in models.data] == [http_server_model_name(http_server)]


def test_openai_client_retrieves_the_model_by_name(http_server):
    import openai

    client = openai_client(http_server)
    name = http_server_model_name(http_server)
    assert client.models.retrieve(name).id == name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def http_server_model_name(server) -> str:
    status, body = server.request("GET", "/v1/models")
    assert status == 200
    return body["data"][0]["id"]
