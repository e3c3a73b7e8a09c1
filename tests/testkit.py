"""Builders for tests: a tiny random CoDA checkpoint with a small BPE tokenizer.

A module of its own (not conftest.py) so any test file can import it by a unique name.
"""

import json
from pathlib import Path

import torch

from coda_model import CodaConfig, CodaModel, save_model

SPECIALS = ["<|endoftext|>", "<|im_end|>", "<|mask|>", "<|fim_prefix|>", "<|fim_middle|>",
            "<|fim_suffix|>", "<|fim_pad|>"]
SAMPLE_CODE = '''
def add(a, b):
    """Return the sum."""
    return a + b


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        if not self.items:
            raise IndexError("pop from empty stack")
        return self.items.pop()


for i in range(10):
    if i % 2 == 0:
        print(i, "even")
    else:
        print(i, "odd")

function greet(name) { return `hello ${name}`; }
fn main() { let x = vec![1, 2, 3]; println!("{:?}", x); }
'''


def build_tokenizer(out: Path, vocab_size: int = 600) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # No full byte alphabet: a random model then only emits bytes of the sample (ASCII), so
    # its fills always decode to whole characters.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  show_progress=False)
    tok.train_from_iterator([SAMPLE_CODE] * 20, trainer=trainer)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "mask_token": "<|mask|>", "pad_token": "<|endoftext|>", "eos_token": "<|im_end|>",
    }))


def build_checkpoint(out: Path, *, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """A random-weight CoDA folder (config, safetensors, tokenizer) that load_model accepts."""
    from tokenizers import Tokenizer

    tok_dir = out.parent / f"{out.name}-tokenizer"
    build_tokenizer(tok_dir)
    vocab = Tokenizer.from_file(str(tok_dir / "tokenizer.json")).get_vocab_size()
    config = CodaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=hidden // 4, mask_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    model = CodaModel(config)
    for p in model.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.5)
    # Like a trained model, it never writes a fim or mask marker as code (a fill ends at one):
    # zero output rows lose to the random ones. Padding and eos stay, so fills can end.
    with torch.no_grad():
        for name in SPECIALS[2:]:
            model.lm_head.weight[SPECIALS.index(name)] = 0.0
    return save_model(model, out, tokenizer_dir=tok_dir)


def build_saying_checkpoint(out: Path, word: str, *, layers: int = 2, hidden: int = 32,
                            seed: int = 0) -> Path:
    """A checkpoint whose every fill is ``word`` over and over: one model told from another
    by what it writes (two-model routing tests). Every embedding carries a large constant in
    dimension 0, so after the final norm the hidden state points the same way at every
    position; only ``word``'s output row reads that dimension."""
    from tokenizers import Tokenizer

    build_checkpoint(out, layers=layers, hidden=hidden, seed=seed)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    token = tok.token_to_id(word)
    assert token is not None, f"{word!r} is not one token of the test tokenizer"
    from coda_model import load_model

    model = load_model(out, device="cpu")
    assert not model.config.tie_word_embeddings
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 1000.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[token, 0] = 50.0
    return save_model(model, out, tokenizer_dir=out)


def write_toy_repo(folder: Path, n: int) -> Path:
    """A repository of ``n`` small, alike modules under ``folder/pkg``: enough files for the
    fine-tune's held-out, validation and training splits."""
    pkg = folder / "pkg"
    pkg.mkdir(parents=True)
    for i in range(n):
        (pkg / f"mod{i}.py").write_text(
            f"def scale_{i}(values, factor={i + 1}):\n    total = 0\n"
            f"    for value in values:\n        total += value * factor\n    return total\n\n\n"
            f"class Box{i}:\n    def __init__(self, size):\n        self.size = size + {i}\n")
    return folder
