"""The autoregressive PSM baseline: row formatting, cached greedy decoding, train and resume."""

from __future__ import annotations

import json

import pytest
import torch

from coda_model import CheckpointError, load_model, load_tokenizer
from training.eval import ar_baseline
from training.run import recipes


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matmuls: threads only add synchronisation
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


@pytest.mark.parametrize("prefix, suffix", [
    ("def add(a, b):\n    return", "\n\nclass Stack:\n"),
    ("x", ""),
    ("for i in range(10):\n    if i % 2 == 0:\n        print(i", ")\n    else:\n"),
])
def test_greedy_with_the_kv_cache_equals_greedy_without(tiny, prefix, suffix):
    model, tok = tiny
    pre, suf = tok.encode(prefix), tok.encode(suffix)
    cached = ar_baseline.greedy_fim(model, tok, pre, suf, 16, use_cache=True)
    full = ar_baseline.greedy_fim(model, tok, pre, suf, 16, use_cache=False)
    assert cached == full
    assert len(cached) <= 16


def test_greedy_stops_at_a_stop_token(tiny):
    model, tok = tiny
    prompt = tok.encode("def add(a, b):")
    first = ar_baseline.greedy(model, prompt, 1, stop_ids=())
    assert ar_baseline.greedy(model, prompt, 10, stop_ids=first) == []


def test_psm_rows_put_prefix_suffix_middle_in_order(tiny):
    _, tok = tiny
    ids = torch.tensor([tok.encode("def add(a, b):\n    return a + b\n" * 8)[:60]] * 3)
    spans = torch.tensor([[[5, 12]], [[0, 0]], [[20, 30]]])
    middles = torch.zeros(ids.shape, dtype=torch.bool)
    rows = ar_baseline.psm_rows(ids, spans, tok, p_fim=1.0, max_middle=16, p_inside=0.0,
                                generator=torch.Generator().manual_seed(0), middle_out=middles)
    assert rows.shape == ids.shape
    for b, row in enumerate(rows.tolist()):
        assert row[0] == tok.fim_prefix_id
        s, m = row.index(tok.fim_suffix_id), row.index(tok.fim_middle_id)
        e = row.index(tok.eos_id, m)
        prefix, suffix, middle = row[1:s], row[s + 1:m], row[m + 1:e]
        assert 1 <= len(middle) <= 16
        assert prefix + middle + suffix == ids[b, :60 - ar_baseline.EXTRA_TOKENS].tolist()
        assert all(t == tok.pad_id for t in row[e + 1:])
        assert middles[b].nonzero().flatten().tolist() == list(range(m + 1, e + 1))
        if b == 0:
            assert (len(prefix), len(middle)) == (5, 7)   # the syntax span, whole
    plain = ar_baseline.psm_rows(ids, None, tok, p_fim=0.0, max_middle=16, p_inside=0.0,
                                 generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain, ids)


def test_a_middle_never_crosses_a_file_boundary(tiny):
    _, tok = tiny
    body = tok.encode("x = 1\n")
    ids = torch.tensor([(body + [tok.eos_id] + body * 6)[:40]])
    spans = torch.tensor([[[2, len(body) + 4]]])   # a range across the eos
    row = ar_baseline.psm_rows(ids, spans, tok, p_fim=1.0, max_middle=32, p_inside=0.0,
                               generator=torch.Generator().manual_seed(0))[0].tolist()
    m = row.index(tok.fim_middle_id)
    assert tok.eos_id not in row[m + 1:row.index(tok.eos_id, m)]


def test_training_checkpoints_resumes_and_marks_the_objective(tiny_model_dir, tmp_path):
    tok_dir = tiny_model_dir.parent / f"{tiny_model_dir.name}-tokenizer"
    recipe = recipes.override(recipes.get("tiny_cpu"), [
        "train.steps=3", "train.log_every=1", "train.eval_every=3", "train.eval_batches=1",
        "data.seq_len=32"])
    out = tmp_path / "ar"
    ar_baseline.train(recipe, out, tok_dir, p_fim=0.9, stop_after_step=2)
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000002"
    assert not (out / "final").exists()
    row = ar_baseline.train(recipe, out, tok_dir, p_fim=0.9)
    assert row["step"] == 3 and row["tokens"] == 3 * 8 * 32
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["objective"] == "autoregressive-fim"
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"train"' in line]
    assert steps == [1, 2, 3]
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]
    assert evals[-1]["step"] == 3 and evals[-1]["eval_ce_middle"] > 0
    final = load_model(out / "final", autoregressive=True)
    assert final.config.extra["objective"] == "autoregressive-fim"
    with pytest.raises(CheckpointError, match="autoregressive"):  # never decoded as diffusion
        load_model(out / "final")



def test_init_from_starts_a_new_run_from_finished_weights(tiny_model_dir, tmp_path):
    tok_dir = tiny_model_dir.parent / f"{tiny_model_dir.name}-tokenizer"
    recipe = recipes.override(recipes.get("tiny_cpu"), [
        "train.steps=2", "train.log_every=1", "train.eval_every=0", "data.seq_len=32",
        "optim.lr=1e-30"])   # steps below fp32 resolution: the weights stay as they start
    first = tmp_path / "first"
    ar_baseline.train(recipe, first, tok_dir, p_fim=0.9)
    second = tmp_path / "second"
    row = ar_baseline.train(recipes.override(recipe, [f"init_from={first / 'final'}"]), second,
                            tok_dir, p_fim=0.9, data_dir=first / "data")
    assert row["step"] == 2   # a new schedule, counted from zero
    a = load_model(first / "final", autoregressive=True).state_dict()
    b = load_model(second / "final", autoregressive=True).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    scratch = tmp_path / "scratch"
    ar_baseline.train(recipes.override(recipe, ["train.seed=5"]), scratch, tok_dir, p_fim=0.9)
    c = load_model(scratch / "final", autoregressive=True).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)
