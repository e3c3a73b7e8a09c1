"""Train a small byte-level BPE tokenizer with the CoDA special tokens, for models from scratch.

The pre-tokenizer is Qwen2's split (so digits are single tokens and indentation runs stay
together) followed by byte-level mapping, as in the CoDA release; the named special tokens are
the release's, written in the Hugging Face files that `coda_model.load_tokenizer` reads:
``tokenizer.json`` + ``tokenizer_config.json`` + ``special_tokens_map.json``.

    python -m training.tokenizer_train --out DIR --vocab-size 8192 SRC_DIR...

It does not read or filter corpora itself: give it texts (see ``training.data.read_corpus``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

log = logging.getLogger(__name__)

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PAD, EOS, MASK = "<|endoftext|>", "<|im_end|>", "<|mask|>"
FIM = ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>")
# Order fixes the ids: 0 pad, 1 eos, 2 mask, 3..6 fim.
SPECIAL_TOKENS = (PAD, EOS, MASK, *FIM)


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 8192,
                    min_frequency: int = 2) -> Path:
    """Train on ``texts`` and write the three tokenizer files into ``out_dir``."""
    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size {vocab_size} is below the 256 byte symbols + specials")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return write_tokenizer(tok, out_dir)


def write_tokenizer(tok: Tokenizer, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    decoder = {str(tok.token_to_id(t)): {"content": t, "special": True, "lstrip": False,
                                         "rstrip": False, "normalized": False,
                                         "single_word": False}
               for t in SPECIAL_TOKENS}
    names = {"pad_token": PAD, "eos_token": EOS, "mask_token": MASK}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 1 << 20,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": list(FIM),
        "bos_token": None,
        **names,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({**names, "additional_special_tokens": list(FIM)}, indent=2) + "\n")
    log.info("tokenizer with %d tokens written to %s", tok.get_vocab_size(), out)
    return out


def main(argv: list[str] | None = None) -> None:
    from training.data.packing import DataConfig, read_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("sources", nargs="+")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    docs = read_corpus(DataConfig(sources=tuple(args.sources)))
    train_tokenizer((d.text for d in docs if not d.is_eval), args.out, args.vocab_size)


if __name__ == "__main__":
    main()
