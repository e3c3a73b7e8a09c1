"""Encoding a typing window's complete lines once (remembered) and the rest apart gives the
ids of encoding it whole: on real code cut anywhere, and on the line breaks BPE could join."""

import inspect
import json
import random
import textwrap
from pathlib import Path

import pytest

from coda_model import load_tokenizer
from coda_model.tokenizer import LINES_CHARS, splits_after_newlines

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT.parent / "shared" / "fixtures" / "coda-reference-tiny"
FOLDERS = [ROOT / "model"] + ([REFERENCE] if REFERENCE.is_dir() else [])

TRICKY = [
    "x = 1\n\n\n    \n\ty = 2\n",  # runs of breaks and blanks
    "if a:\r\n    b()\r\n\r\nc",  # CRLF
    "def f():\n\n\r\n  return 1",  # a lone CR right after the last break
    "call(x):\n\u0301e\u0301 = 1",  # a combining mark right after a break
    "s = '\u1100'\n\u1161\u11a8 = 2",  # Hangul jamo that compose, across the break
    "text = '<|mask|>'\n<|endoftext|> + <|fim_prefix|>\n",  # control spellings as text
    "  \n  \n   x\n",
    "):\n\n# comment\n\"\"\"doc\"\"\"\n",
]


def plain(tok, text: str) -> list[int]:
    tok.backend.encode_special_tokens = True
    return tok.backend.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_remembered_lines_encode_as_the_whole_text(folder):
    tok = load_tokenizer(folder)
    assert tok._cuts_at_lines  # both are Qwen2-split byte-level BPE
    rng = random.Random(5)
    sources = [inspect.getsource(m) for m in (json.decoder, textwrap, inspect)]
    texts = [t * 40 for t in TRICKY]
    for source in sources:
        for _ in range(60):
            a = rng.randrange(len(source) - 3000)
            texts.append(source[a : a + rng.randrange(300, 3000)])
    cut_used = 0
    for text in texts:
        for typed in ("", "x", "    retu", " \u00e9"):  # keystrokes after the lines
            window = text + typed
            assert tok.encode(window, allow_special=False) == plain(tok, window)
            cut_used += LINES_CHARS[0] <= window.rfind("\n") + 1 <= LINES_CHARS[1]
        assert tok.encode(text, allow_special=False) == plain(tok, text)  # remembered now
    assert cut_used > 200  # the remembered path, not only the plain one, was compared


def test_a_tokenizer_whose_split_could_join_lines_is_never_cut():
    """Another pre-tokenizer (here: whitespace runs kept whole) could join a break with the
    next line's indentation: such a tokenizer encodes every text whole."""
    tok = load_tokenizer(ROOT / "model")
    spec = json.loads(tok.backend.to_str())
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"Regex": r"\s+|\S+"}
    from tokenizers import Tokenizer as FastTokenizer

    assert not splits_after_newlines(FastTokenizer.from_str(json.dumps(spec)))
