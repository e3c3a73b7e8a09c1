"""Span requests on a real ``coda-lsp http``: what a language server's remote engine
(``core.remote``) sends, the caller's own lengths and settings, answered with every
candidate as the local engine writes it."""

from __future__ import annotations

import pytest

from coda_lsp.core.engine import Engine, FillJob
from coda_lsp.core.settings import Settings

PREFIX = "def total(items):\n    result = 0\n    for item in items:\n        result += "
SUFFIX = "\n    return result\n"


@pytest.fixture(scope="module")
def local(tiny_model_dir):
    return Engine.load(tiny_model_dir, "cpu")


@pytest.mark.parametrize("fast, choices", [(False, 1), (True, 1), (True, 2)])
def test_a_span_request_answers_each_length_as_the_local_engine_fills_it(http_server, local,
                                                                          fast, choices):
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "lengths": [3, 8], "steps": 6,
            "inline": True, "fast": fast, "choices": choices,
            "settings": {"multiline": "never", "maxMiddleTokens": 16}}
    status, answer = http_server.request("POST", "/infill", body)  # no client: no carry
    assert status == 200, answer
    settings = Settings(steps=6, multiline="never", max_middle_tokens=16)
    expected = local.fill(FillJob(PREFIX, SUFFIX, (3, 8), 6, settings, inline=True,
                                  fast=fast, choices=choices)).fills
    assert len(expected) == (1 if fast and choices == 1 else 2)  # a keystroke's one length
    got = answer["candidates"]
    assert [c["text"] for c in got] == [f.text for f in expected]
    assert [c["length"] for c in got] == [f.length for f in expected]
    assert [c["confidence"] for c in got] == pytest.approx([f.confidence for f in expected],
                                                           abs=0.02)
    assert answer["content"] == got[0]["text"]  # a llama.cpp client still reads content


def test_a_span_request_streams_its_steps_then_the_candidates(http_server):
    from http_kit import sse_events

    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "lengths": [4], "steps": 5,
            "stream": True, "stream_states": True}
    status, text = http_server.request("POST", "/infill", body)
    assert status == 200
    events = sse_events(text)
    steps = [e["state"]["step"] for e in events if "state" in e]
    assert steps[-1] == 5 and steps == sorted(steps)
    assert len(events[-1]["candidates"]) == 1 and events[-1]["stop"] is True


@pytest.mark.parametrize("choices", [1, 2])
def test_a_remote_engine_asks_for_the_alternatives_its_caller_shows(http_server, choices):
    """An invoked completion through a remote engine gets two typing lengths, as locally."""
    from coda_lsp.core.remote import RemoteEngine

    job = FillJob(PREFIX, SUFFIX, (3, 8), 4, Settings(steps=4), inline=True, fast=True,
                  choices=choices)
    remote = RemoteEngine(http_server.base_url, api_key=http_server.api_key)
    assert len(remote.fill(job).fills) == choices
