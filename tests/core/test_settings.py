"""Settings from the wire: camelCase, partial updates, invalid values fall back with a message."""

import dataclasses

from coda_lsp.core import settings
from coda_lsp.core.settings import Settings

DEFAULTS = Settings(steps=8)


def test_every_field_has_a_camel_case_name():
    assert set(settings.WIRE_NAMES.values()) == {f.name for f in dataclasses.fields(Settings)}
    assert settings.to_wire(DEFAULTS)["fillHoleSteps"] == 64


def test_partial_update_keeps_the_rest():
    new, problems = settings.update(
        DEFAULTS, {"steps": 4, "algTemp": 0.5, "enabledLanguages": ["python"]}, DEFAULTS
    )
    assert problems == []
    assert (new.steps, new.alg_temp, new.enabled_languages) == (4, 0.5, ("python",))
    assert new.context_tokens == DEFAULTS.context_tokens


def test_invalid_values_fall_back_to_defaults_and_are_reported():
    current = dataclasses.replace(DEFAULTS, steps=32, temperature=0.7)
    new, problems = settings.update(
        current, {"steps": "many", "temperature": -1, "enabled": 1, "bogus": 3}, DEFAULTS
    )
    assert new.steps == 8 and new.temperature == 0.0 and new.enabled is True
    assert len(problems) == 4
    assert any("coda.steps" in p for p in problems)
    assert any("unknown setting coda.bogus" in p for p in problems)


def test_multiline_is_one_of_three_words():
    new, problems = settings.update(DEFAULTS, {"multiline": "never"}, DEFAULTS)
    assert new.multiline == "never" and not problems
    new, problems = settings.update(new, {"multiline": True}, DEFAULTS)
    assert new.multiline == "auto"
    assert problems == ["coda.multiline must be one of auto, always, never; using 'auto'"]


def test_alg_accepts_the_release_spelling():
    new, problems = settings.update(DEFAULTS, {"alg": "original"}, DEFAULTS)
    assert new.alg == "origin" and not problems
    _, problems = settings.update(DEFAULTS, {"alg": "greedy"}, DEFAULTS)
    assert problems


def test_payload_shapes():
    inner = {"steps": 2}
    assert settings.coda_section({"settings": {"coda": inner}}) is inner
    assert settings.coda_section({"coda": inner}) is inner
    assert settings.coda_section(inner) is inner
    assert settings.update(DEFAULTS, None, DEFAULTS) == (DEFAULTS, [])
    assert settings.update(DEFAULTS, [1, 2], DEFAULTS)[1]


def test_language_filter():
    s = dataclasses.replace(DEFAULTS, enabled_languages=("python",))
    assert s.language_enabled("python") and not s.language_enabled("rust")
    assert DEFAULTS.language_enabled("rust")
    assert not dataclasses.replace(DEFAULTS, enabled=False).language_enabled("python")


def test_automatic_offers_clear_both_bars_explicit_ones_only_the_first():
    s = Settings(confidence_threshold=0.1, automatic_confidence_threshold=0.4)
    assert (s.inline_threshold(automatic=True), s.inline_threshold(automatic=False)) == (0.4, 0.1)
    s = Settings(confidence_threshold=0.6, automatic_confidence_threshold=0.4)
    assert s.inline_threshold(automatic=True) == 0.6
    new, problems = settings.update(s, {"automaticConfidenceThreshold": 1.5}, DEFAULTS)
    assert new.automatic_confidence_threshold == DEFAULTS.automatic_confidence_threshold
    assert problems and "automaticConfidenceThreshold" in problems[0]
