"""Data pipeline: reading, file-level split, syntax spans, packing, resumable batches, tokenizer."""

from pathlib import Path

import pytest
import torch

from coda_model import load_tokenizer
from training.data.packing import (
    BatchStream,
    DataConfig,
    build_dataset,
    eval_split,
    node_byte_spans,
    pack,
    read_corpus,
    token_spans,
)
from training.data.tokenizer_train import train_tokenizer

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = '''import os


def walk(root, depth=0):
    """Yield files under root."""
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.isdir(path) and depth < 3:
            yield from walk(path, depth + 1)
        else:
            yield path, len(name) * 2 + 1
'''


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    texts = [p.read_text() for p in sorted((ROOT / "training").glob("*.py"))] + [SNIPPET] * 5
    return train_tokenizer(texts, out, vocab_size=600)


def test_tokenizer_has_the_coda_special_tokens_by_name(tokenizer_dir):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tokenizer_dir / name).is_file()
    tok = load_tokenizer(tokenizer_dir)
    assert (tok.pad_id, tok.eos_id, tok.mask_id) == (0, 1, 2)
    assert None not in (tok.fim_prefix_id, tok.fim_middle_id, tok.fim_suffix_id, tok.fim_pad_id)
    assert tok.vocab_size == 600
    text = SNIPPET + "    café = 'λ' \t\r\n"
    assert tok.decode(tok.encode(text)) == text


def test_read_corpus_filters_dedupes_and_splits_by_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.py").write_text(SNIPPET)
    (tmp_path / "a" / "copy.py").write_text(SNIPPET + "\n")        # duplicate after strip
    (tmp_path / "a" / "tiny.py").write_text("x = 1\n")              # below min_bytes
    (tmp_path / "a" / "min.py").write_text("x = [" + "1, " * 300 + "]\n")  # minified line
    (tmp_path / "a" / "notes.txt").write_text(SNIPPET)              # other extension
    (tmp_path / "a" / "tests").mkdir()
    (tmp_path / "a" / "tests" / "t.py").write_text(SNIPPET + "# other\n")  # excluded dir
    docs = read_corpus(DataConfig(sources=(str(tmp_path / "a"),), max_line_length=200))
    assert [d.path for d in docs] == ["a/copy.py"] or [d.path for d in docs] == ["a/one.py"]
    # the split is a pure function of the path
    assert eval_split("pkg/x.py", 0.5) == eval_split("pkg/x.py", 0.5)
    share = sum(eval_split(f"f{i}.py", 0.1) for i in range(5000)) / 5000
    assert 0.08 < share < 0.12


def test_syntax_spans_map_to_the_tokens_of_their_nodes(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    enc = tok.backend.encode(SNIPPET, add_special_tokens=False)
    byte_spans = node_byte_spans(SNIPPET, "python")
    assert byte_spans, "tree-sitter-python should be installed"
    spans = token_spans(SNIPPET, enc.offsets, byte_spans, max_tokens=1000)
    node_texts = {SNIPPET.encode()[a:b].decode().strip() for a, b in byte_spans}
    decoded = [tok.decode(enc.ids[a:b]).strip() for a, b in spans]
    exact = sum(d in node_texts for d in decoded) / len(decoded)
    assert exact > 0.8
    assert "yield path, len(name) * 2 + 1" in decoded   # a statement
    # parameters: a token may straddle the node's end ("):" is one BPE token), never less
    assert any(d.startswith("(root, depth=0)") and len(d) <= 16 for d in decoded)


def test_pack_keeps_spans_inside_rows():
    docs = [list(range(10, 40)), list(range(50, 75))]
    spans = [[(0, 5), (8, 20), (25, 30)], [(1, 3), (10, 24)]]
    packed = pack(docs, spans, seq_len=16, eos_id=1)
    stream = docs[0] + [1] + docs[1] + [1]
    assert packed.ids.shape == (len(stream) // 16, 16)
    assert packed.ids.flatten().tolist() == stream[: packed.ids.numel()]
    for r in range(len(packed)):
        for a, b in packed.spans[packed.span_ptr[r]:packed.span_ptr[r + 1]].tolist():
            assert 0 <= a < b <= 16
    # (8, 20) of doc 0 crosses the row boundary at 16: dropped
    row0 = packed.spans[packed.span_ptr[0]:packed.span_ptr[1]].tolist()
    assert row0 == [[0, 5]]
    padded = packed.spans_for([0, 1, 2])
    assert padded.shape[0] == 3 and padded.shape[2] == 2


def test_build_dataset_round_trip(tmp_path, tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    cfg = DataConfig(sources=(str(ROOT / "training"),), seq_len=32, eval_fraction=0.3)
    manifest = build_dataset(cfg, tok, tmp_path)
    splits = manifest["splits"]
    assert splits["train"]["rows"] > 0 and splits["eval"]["files"] > 0
    files = manifest["files"]
    assert {f["split"] for f in files.values()} == {"train", "eval"}
    from training.data.packing import PackedSplit
    train = PackedSplit.load(tmp_path / "train.safetensors")
    assert train.ids.dtype == torch.int32 and train.ids.shape[1] == 32
    assert int(train.ids.max()) < tok.vocab_size


def test_batch_stream_resumes_exactly():
    a = BatchStream(50, 8, seed=3)
    seen = [a.next() for _ in range(9)]          # crosses an epoch boundary
    state = a.state_dict()
    expected = [a.next() for _ in range(5)]
    b = BatchStream(50, 8, seed=3)
    b.load_state_dict(state)
    assert [b.next() for _ in range(5)] == expected
    first_epoch = [i for batch in seen[:6] for i in batch]
    assert len(set(first_epoch)) == 48           # no repeats within an epoch
    with pytest.raises(ValueError):
        BatchStream(50, 4, seed=3).load_state_dict(state)
