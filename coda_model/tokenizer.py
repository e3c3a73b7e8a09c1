"""The tokenizer of a CoDA folder, with its special ids read from the folder's own files.

`tokenizer.json` is loaded with the `tokenizers` library; a folder with only the slow-tokenizer
files (`vocab.json` + `merges.txt` + `added_tokens.json`) gets the same Qwen2 byte-level BPE
built from them. Nothing is hard-coded: the mask, pad and eos tokens are named in
`tokenizer_config.json` / `special_tokens_map.json`, and FIM tokens are looked up by name.
"""

from __future__ import annotations

import functools
import json
import os
from array import array
from bisect import bisect_left
from functools import cached_property
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as FastTokenizer

# Qwen2's pre-tokenizer split (contractions, letters, single digits, punctuation runs, newlines).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
FIM_NAMES = {"fim_prefix_id": "<|fim_prefix|>", "fim_middle_id": "<|fim_middle|>",
             "fim_suffix_id": "<|fim_suffix|>", "fim_pad_id": "<|fim_pad|>"}
# Used only when a folder names no mask token at all (the CoDA release always does).
DEFAULT_MASK = "<|mask|>"
LAST_CODE_POINT = chr(0x10FFFF)  # sorts after every other character


# Texts ending in complete lines, encoded as ordinary text, are remembered: text up to its last
# line break and the rest encode apart to the same ids (``splits_after_newlines``), and typing
# sends the same lines again with every keystroke. Only windows of this many characters.
LINES_CHARS = (256, 16_384)
LINES_REMEMBERED = 64  # a typing client's prefix and suffix each: 32 clients


def splits_after_newlines(backend: FastTokenizer) -> bool:
    """Whether this tokenizer never joins the text before a line's last break with the text
    after it: Qwen2's pre-tokenizer split (every match ends at or before the last of a run of
    line breaks: no alternative reads on past one), byte-level and NFC only (a line break
    composes with nothing), and no added token spelled with a line break."""
    # the components' own JSON (as transformers reads them): the whole tokenizer's
    # serialisation would cost ~0.4 s at load for Qwen2's 151 k vocabulary
    pre = json.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer else {}
    steps = pre.get("pretokenizers", [])
    split_ok = (pre.get("type") == "Sequence" and len(steps) == 2
                and steps[0].get("type") == "Split"
                and steps[0].get("pattern") == {"Regex": QWEN2_SPLIT}
                and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")
                and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex"))
    normalizer = json.loads(backend.normalizer.__getstate__()) if backend.normalizer else None
    return (split_ok and (normalizer is None or normalizer.get("type") == "NFC")
            and not any("\n" in t.content or "\r" in t.content
                        for t in backend.get_added_tokens_decoder().values()))


class TokenizerError(ValueError):
    """A tokenizer folder that cannot be used, with the reason."""


class Tokenizer:
    def __init__(self, backend: FastTokenizer, special: dict[str, str | None]) -> None:
        self.backend = backend
        self.mask_id = self._require(special.get("mask_token") or DEFAULT_MASK, "mask")
        self.pad_id = self._require(special.get("pad_token") or special.get("eos_token"), "pad")
        self.eos_id = self._require(special.get("eos_token") or special.get("pad_token"), "eos")
        for attr, name in FIM_NAMES.items():
            setattr(self, attr, backend.token_to_id(name))
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
        # Control tokens (fim markers, chat markers, file separators...) never belong in code:
        # a fill ends at the first one the model writes.
        self.control_ids = frozenset(
            i for i, t in backend.get_added_tokens_decoder().items() if t.special)
        self._cuts_at_lines = splits_after_newlines(backend)
        self._complete_lines = functools.lru_cache(maxsize=LINES_REMEMBERED)(self._lines_ids)

    def _require(self, name: str | None, role: str) -> int:
        token_id = None if name is None else self.backend.token_to_id(name)
        if token_id is None:
            raise TokenizerError(f"the tokenizer has no {role} token ({name!r} not in vocabulary)")
        return token_id

    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        """Token ids without any special tokens added.

        Like the reference, special-token spellings in the text become special tokens; pass
        allow_special=False for user code (a file containing "<|mask|>"), which must never
        inject a control token: it is then encoded as ordinary text.
        """
        if not allow_special and self._cuts_at_lines:
            # a typing prompt's window: the same complete lines on every keystroke
            cut = text.rfind("\n") + 1
            if LINES_CHARS[0] <= cut <= LINES_CHARS[1] and text[cut : cut + 1] != "\r":
                return list(self._complete_lines(text[:cut])) + self._plain(text[cut:])
        self.backend.encode_special_tokens = not allow_special
        return self.backend.encode(text, add_special_tokens=False).ids

    def _plain(self, text: str) -> list[int]:
        self.backend.encode_special_tokens = True
        return self.backend.encode(text, add_special_tokens=False).ids

    def _lines_ids(self, lines: str) -> array:
        return array("i", self._plain(lines))

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    @cached_property
    def token_texts(self) -> list[str]:
        """Each id's text on its own (a batched decode, once: ~0.4 s for Qwen2's 151 k)."""
        return self.backend.decode_batch([[i] for i in range(self.vocab_size)],
                                         skip_special_tokens=False)

    @cached_property
    def texts_in_order(self) -> tuple[list[str], list[int]]:
        """Ordinary tokens' texts in sorted order with their ids (control tokens, mask, pad and
        eos left out): the tokens that start with a given text are one run of it."""
        skip = {self.mask_id, self.pad_id, self.eos_id, *self.control_ids}
        pairs = sorted((t, i) for i, t in enumerate(self.token_texts) if i not in skip)
        return [t for t, _ in pairs], [i for _, i in pairs]

    def run_starting_with(self, text: str) -> tuple[int, int]:
        """[lo, hi) of ``texts_in_order`` whose texts start with ``text``: two binary searches
        (every such text sorts at or after ``text`` and before ``text`` + the last code point),
        so even " " (half of a vocabulary) costs microseconds."""
        texts, _ = self.texts_in_order
        return bisect_left(texts, text), bisect_left(texts, text + LAST_CODE_POINT)

    def ids_starting_with(self, text: str) -> list[int]:
        """Ids of the ordinary tokens whose text starts with ``text``."""
        lo, hi = self.run_starting_with(text)
        return self.texts_in_order[1][lo:hi]


def _token_name(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def _special_names(path: Path) -> dict[str, str | None]:
    names: dict[str, str | None] = {}
    for filename in ("special_tokens_map.json", "tokenizer_config.json"):
        f = path / filename
        if f.is_file():
            data = json.loads(f.read_text(encoding="utf-8"))
            for key in ("mask_token", "pad_token", "eos_token"):
                if names.get(key) is None and data.get(key) is not None:
                    names[key] = _token_name(data[key])
    return names


def _added_tokens(path: Path) -> list[tuple[int, str, bool]]:
    tokens: dict[int, tuple[str, bool]] = {}
    config = path / "tokenizer_config.json"
    if config.is_file():
        decoder = json.loads(config.read_text(encoding="utf-8")).get("added_tokens_decoder", {})
        for token_id, entry in decoder.items():
            tokens[int(token_id)] = (entry["content"], bool(entry.get("special", True)))
    added = path / "added_tokens.json"
    if added.is_file():
        for content, token_id in json.loads(added.read_text(encoding="utf-8")).items():
            tokens.setdefault(int(token_id), (content, True))
    return [(i, c, s) for i, (c, s) in sorted(tokens.items())]


def _from_vocab_and_merges(path: Path) -> FastTokenizer:
    model = models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt"))
    backend = FastTokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    added = _added_tokens(path)
    for expected_id, content, special in added:
        token = AddedToken(content, special=special, normalized=False)
        if special:
            backend.add_special_tokens([token])
        else:
            backend.add_tokens([token])
        if backend.token_to_id(content) != expected_id:
            raise TokenizerError(
                f"{path}: added token {content!r} got id {backend.token_to_id(content)}, "
                f"files say {expected_id} (vocab.json and added_tokens.json disagree)"
            )
    return backend


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    path = Path(path)
    try:
        if (path / "tokenizer.json").is_file():
            backend = FastTokenizer.from_file(str(path / "tokenizer.json"))
        elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            backend = _from_vocab_and_merges(path)
        else:
            raise TokenizerError(f"{path}: no tokenizer.json, nor vocab.json + merges.txt")
        return Tokenizer(backend, _special_names(path))
    except TokenizerError:
        raise
    except Exception as exc:  # the tokenizers library raises plain Exception on bad files
        raise TokenizerError(f"{path}: unreadable tokenizer files ({exc})") from exc
