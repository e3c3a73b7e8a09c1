"""Coordinate conversions at the edges: column 0, tabs, CRLF, emoji, out of range, mid-pair."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lsprotocol import types

from coda_lsp.core import positions
from coda_lsp.core.positions import UTF8, UTF16, UTF32, LineIndex

TEXT = "a\tb\r\nx😀y\n\né=1\rlast"


def pos(line, ch):
    return types.Position(line=line, character=ch)


def off(text, p, enc=UTF16):
    return positions.position_to_offset(text, LineIndex.of(text), p, enc)


def test_line_starts_cover_all_terminators():
    assert LineIndex.of(TEXT).starts == [0, 5, 9, 10, 14]


@pytest.mark.parametrize(
    "p, enc, expected",
    [
        (pos(0, 0), UTF16, 0),
        (pos(0, 2), UTF16, 2),  # after the tab: a tab is one unit
        (pos(0, 99), UTF16, 3),  # past the end of the line: clamp before CRLF
        (pos(1, 1), UTF16, 6),  # before the emoji
        (pos(1, 2), UTF16, 6),  # inside the surrogate pair: round down
        (pos(1, 3), UTF16, 7),  # after the emoji
        (pos(1, 4), UTF16, 8),
        (pos(1, 3), UTF8, 6),  # inside the emoji's four bytes
        (pos(1, 5), UTF8, 7),
        (pos(1, 2), UTF32, 7),
        (pos(2, 0), UTF16, 9),  # empty line
        (pos(3, 1), UTF16, 11),  # é is one UTF-16 unit
        (pos(3, 2), UTF8, 11),  # é is two UTF-8 bytes
        (pos(4, 2), UTF16, 16),  # after a lone CR
        (pos(9, 0), UTF16, len(TEXT)),  # past the last line
    ],
)
def test_position_to_offset(p, enc, expected):
    assert off(TEXT, p, enc) == expected


@pytest.mark.parametrize("enc", [UTF8, UTF16, UTF32])
def test_round_trip_every_offset(enc):
    idx = LineIndex.of(TEXT)
    for i in range(len(TEXT) + 1):
        if TEXT[i - 1 : i + 1] == "\r\n":
            continue  # between CR and LF is not a position
        p = positions.offset_to_position(TEXT, idx, i, enc)
        assert positions.position_to_offset(TEXT, idx, p, enc) == i


def test_offset_to_position_columns():
    idx = LineIndex.of(TEXT)
    assert positions.offset_to_position(TEXT, idx, 7, UTF16) == pos(1, 3)
    assert positions.offset_to_position(TEXT, idx, 7, UTF8) == pos(1, 5)
    assert positions.offset_to_position(TEXT, idx, 999, UTF16) == pos(4, 4)


def test_bytes_and_back():
    assert positions.offset_to_byte(TEXT, 7) == 10
    assert positions.byte_to_offset(TEXT, 10) == 7
    assert positions.byte_to_offset(TEXT, 8) == 6  # inside the emoji: round down
    assert positions.byte_to_offset("abc", 99) == 3


def test_lone_surrogate_never_raises():
    text = "x\ud800y"
    assert positions.utf8_len(text) == 5
    assert off(text, pos(0, 2), UTF8) == 1
    assert positions.offset_to_byte(text, 3) == 5


def test_choose_encoding():
    offered = types.ClientCapabilities(
        general=types.GeneralClientCapabilities(position_encodings=[UTF32, UTF8, UTF16])
    )
    assert positions.choose_encoding(offered) == UTF8
    assert positions.choose_encoding(types.ClientCapabilities()) == UTF16
    only32 = types.ClientCapabilities(
        general=types.GeneralClientCapabilities(position_encodings=[UTF32])
    )
    assert positions.choose_encoding(only32) == UTF16


pieces = st.lists(st.sampled_from(["a", "\n", "\r", "\r\n", "😀", "\t", "é"]), max_size=12)


@given(pieces, pieces, st.data())
def test_incremental_line_index_matches_full_scan(before, inserted, data):
    text = "".join(before)
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    new = "".join(inserted)
    idx = LineIndex.of(text)
    result = text[:start] + new + text[end:]
    idx.replaced(result, start, end, len(new))
    assert idx.starts == LineIndex.of(result).starts


def test_for_model_replaces_only_lone_surrogates_one_for_one():
    text = "a\ud800b😀c\udfffé"
    clean = positions.for_model(text)
    assert clean == "a\ufffdb😀c\ufffdé" and len(clean) == len(text)
    clean.encode("utf-8")  # strict: what a tokenizer needs
    assert positions.for_model("plain") == "plain"
