"""The sampler's mechanics, with a model whose logits the test controls."""

import pytest
import torch
from torch import nn

from coda_model import Cancelled, SamplerConfig, denoise, infill, load_model, load_tokenizer
from coda_model.forward import FullForward

MASK, PAD, EOS = 0, 1, 2


class ScriptedModel(nn.Module):
    """hidden state at position i is the one-hot e_i, so logits row i is column i of `table`:
    the token at position p is predicted by column p-1 (the shift)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        vocab, length = table.shape
        self.lm_head = nn.Linear(length, vocab, bias=False)
        self.lm_head.weight.data = table.clone()

    def hidden_states(self, x, key_mask=None, **_):
        return torch.eye(self.lm_head.in_features)[: x.shape[1]].expand(x.shape[0], -1, -1)


def scripted(predictions: dict[int, tuple[int, float]], length: int, vocab: int = 16):
    """predictions: position -> (token, logit); other tokens get logit 0."""
    table = torch.zeros(vocab, length)
    for pos, (tok, logit) in predictions.items():
        table[tok, pos - 1] = logit
    return ScriptedModel(table)


@pytest.mark.parametrize("bad", [
    {"steps": 0}, {"steps": 2.5}, {"alg": "greedy"}, {"temperature": -1}, {"top_p": 0},
    {"top_k": 0}, {"eps": 1.0}, {"block_length": 0}, {"threshold": 0},
    {"alg": "origin", "threshold": 0.9}, {"refresh_every": -1},
])
def test_invalid_config_is_rejected_with_reason(bad):
    with pytest.raises(ValueError, match="SamplerConfig|alg must be"):
        SamplerConfig(**bad)


def test_release_spelling_of_origin_is_accepted():
    assert SamplerConfig(alg="original").alg == "origin"


def test_most_confident_mask_is_committed_first():
    x = torch.tensor([[5, MASK, MASK, MASK, 6]])
    model = scripted({1: (7, 1.0), 2: (8, 9.0), 3: (9, 4.0)}, length=5)
    seen = []

    class Recording(FullForward):
        def __call__(self, ids, mask):
            seen.append(ids.clone())
            return super().__call__(ids, mask)

    out = denoise(model, x, SamplerConfig(steps=3, threshold=2.0), mask_id=MASK,
                  forward=Recording(model))
    assert out.tolist() == [[5, 7, 8, 9, 6]]
    assert seen[1].tolist() == [[5, MASK, 8, MASK, 6]]  # position 2 was the most confident
    assert seen[2].tolist() == [[5, MASK, 8, 9, 6]]


def test_cancellation_between_steps_stops_the_model():
    x = torch.tensor([[5] + [MASK] * 6])
    model = scripted({p: (3, 1.0) for p in range(1, 7)}, length=7)
    forward = FullForward(model)
    polls = []

    def should_stop():
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(Cancelled):
        denoise(model, x, SamplerConfig(steps=6, skip_idle_steps=False), mask_id=MASK,
                forward=forward, should_stop=should_stop)
    assert forward.passes == 2


def test_threshold_above_one_commits_one_token_per_step():
    x = torch.tensor([[5] + [MASK] * 6])
    model = scripted({p: (3, 20.0) for p in range(1, 7)}, length=7)
    forward = FullForward(model)
    out = denoise(model, x, SamplerConfig(steps=6, threshold=1.5), mask_id=MASK, forward=forward)
    assert forward.passes == 6 and (out[0, 1:] == 3).all()


def test_confident_threshold_commits_everything_in_one_pass():
    x = torch.tensor([[5] + [MASK] * 6])
    model = scripted({p: (3, 20.0) for p in range(1, 7)}, length=7)
    forward = FullForward(model)
    out = denoise(model, x, SamplerConfig(steps=6, threshold=0.9), mask_id=MASK, forward=forward)
    assert forward.passes == 1 and (out[0, 1:] == 3).all()


def test_blocks_are_decoded_left_to_right():
    x = torch.tensor([[5] + [MASK] * 8])
    # The right half is far more confident: without blocks it would be committed first.
    model = scripted({**{p: (3, 1.0) for p in range(1, 5)}, **{p: (4, 9.0) for p in range(5, 9)}},
                     length=9)
    order = []

    class Recording(FullForward):
        def __call__(self, ids, mask):
            order.append(mask.nonzero()[:, 1].tolist())
            return super().__call__(ids, mask)

    out = denoise(model, x, SamplerConfig(steps=8, block_length=4), mask_id=MASK,
                  forward=Recording(model))
    assert out[0].tolist() == [5, 3, 3, 3, 3, 4, 4, 4, 4]
    blocks = [0 if max(eligible) <= 4 else 1 for eligible in order]
    assert all(min(e) >= 5 for e, b in zip(order, blocks, strict=True) if b == 1)  # never mixed
    assert blocks == sorted(blocks) and set(blocks) == {0, 1}


def test_seeded_sampling_is_reproducible():
    x = torch.tensor([[5] + [MASK] * 6])
    model = scripted({p: (3, 0.5) for p in range(1, 7)}, length=7)
    config = SamplerConfig(steps=3, temperature=1.0, alg_temp=0.5, seed=7)
    a = denoise(model, x, config, mask_id=MASK)
    assert torch.equal(a, denoise(model, x, config, mask_id=MASK))
    assert not (a == MASK).any()


class Tok:
    mask_id, pad_id, eos_id = MASK, PAD, EOS

    def decode(self, ids):
        return " ".join(map(str, ids))


def test_infill_text_stops_at_the_first_padding_token():
    # prefix [5], canvas of 4: model writes 7, 8, pad, pad.
    model = scripted({1: (7, 9.0), 2: (8, 9.0), 3: (PAD, 9.0), 4: (PAD, 9.0)}, length=6)
    [cand] = infill(model, Tok(), [5], [6], [4], SamplerConfig(steps=4))
    assert cand.ids == [7, 8] and cand.text == "7 8" and cand.length == 4
    assert len(cand.confidences) == 4 and 0.99 < cand.mean_confidence <= 1.0


def test_infill_text_ends_at_a_control_token():
    # A fim marker (or any special token the tokenizer flags) is never code: the fill ends
    # there, so "<|fim_prefix|>" can never reach ghost text.
    class WithControls(Tok):
        control_ids = frozenset({PAD, EOS, 9})

    model = scripted({1: (7, 9.0), 2: (9, 9.0), 3: (8, 9.0)}, length=5)
    [cand] = infill(model, WithControls(), [5], [6], [3], SamplerConfig(steps=3))
    assert cand.ids == [7] and cand.text == "7"
    [plain] = infill(model, Tok(), [5], [6], [3], SamplerConfig(steps=3))
    assert plain.ids == [7, 9, 8]   # a tokenizer that flags nothing keeps it (old behaviour)


@pytest.mark.parametrize("config", [SamplerConfig(steps=3),
                                    SamplerConfig(steps=3, temperature=0.01, seed=1),
                                    SamplerConfig(steps=3, alg="origin", seed=1)],
                         ids=["dense", "gathered", "origin"])
def test_a_banned_column_takes_its_next_choice_and_no_other_column_changes(config):
    # first choices: 7, 9, 8; second choice at position 1 is 10
    table = torch.zeros(16, 5)
    table[7, 0], table[10, 0], table[9, 1], table[8, 2] = 9.0, 6.0, 9.0, 9.0
    x = torch.tensor([[5, MASK, MASK, MASK, 6]])
    free = denoise(ScriptedModel(table), x, config, mask_id=MASK)
    banned = torch.zeros(16, dtype=torch.bool)
    banned[[7, 9, 8]] = True   # 9 and 8 are banned too, but only column 1 is restricted
    healed = denoise(ScriptedModel(table), x, config, mask_id=MASK, allowed_at=(1, banned))
    assert free[0].tolist() == [5, 7, 9, 8, 6]
    assert healed[0].tolist() == [5, 10, 9, 8, 6]


def test_the_real_tokenizers_flag_their_fim_and_chat_markers():
    from pathlib import Path
    tok = load_tokenizer(Path(__file__).resolve().parents[2] / "model")
    names = {tok.token(i) for i in tok.control_ids}
    assert {"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|mask|>"} <= names
    assert tok.encode("return x")[0] not in tok.control_ids


def test_fill_confidence_counts_the_fill_not_its_padding():
    # canvas of 8: one unsure token (logit 1 over a 16-token vocabulary), then sure padding
    pads = {p: (PAD, 9.0) for p in range(2, 9)}
    padded = scripted({1: (7, 1.0), **pads}, length=10)
    [long] = infill(padded, Tok(), [5], [6], [8], SamplerConfig(steps=8))
    # canvas of 2: two fairly sure tokens, nothing padded
    full = scripted({1: (7, 4.0), 2: (8, 4.0)}, length=4)
    [short] = infill(full, Tok(), [5], [6], [2], SamplerConfig(steps=2))
    assert long.ids == [7] and short.ids == [7, 8]
    assert long.mean_confidence > short.mean_confidence  # the canvas mean prefers the padding
    assert short.fill_confidence > long.fill_confidence
    assert long.fill_confidence == pytest.approx(long.confidences[0])
    empty = scripted({1: (PAD, 9.0), 2: (PAD, 9.0)}, length=4)
    [nothing] = infill(empty, Tok(), [5], [6], [2], SamplerConfig(steps=2))
    assert nothing.ids == [] and nothing.fill_confidence == 0.0 < nothing.mean_confidence


def test_infill_needs_a_prefix_token():
    model = scripted({}, length=4)
    with pytest.raises(ValueError, match="prefix"):
        infill(model, Tok(), [], [6], [2], SamplerConfig())


def test_batched_candidates_decode_as_they_would_alone(tiny_model_dir):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    prefix, suffix = tok.encode("def push(self, item):\n    "), tok.encode("\n\nclass Stack:\n")
    config = SamplerConfig(steps=4)
    batched = infill(model, tok, prefix, suffix, [3, 6, 9], config)
    for cand in batched:
        [alone] = infill(model, tok, prefix, suffix, [cand.length], config)
        assert alone.ids == cand.ids
        assert alone.confidences == pytest.approx(cand.confidences, abs=1e-4)


def test_causal_attention_with_a_kv_cache_matches_a_full_causal_pass(tiny_model_dir):
    """The AR baseline's incremental decoding sees exactly what a full causal pass sees."""
    model = load_model(tiny_model_dir)
    ids = torch.tensor([[5, 9, 11, 3, 7, 8]])
    with torch.no_grad():
        full = model.hidden_states(ids, causal=True)
        kv = []
        head = model.hidden_states(ids[:, :4], causal=True, out_kv=kv)
        tail = model.hidden_states(ids[:, 4:], positions=torch.arange(4, 6), causal=True,
                                   kv_context=kv)
        bidirectional = model.hidden_states(ids)
    torch.testing.assert_close(torch.cat((head, tail), 1), full, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(full[:, :4], bidirectional[:, :4], atol=1e-3)


def test_stop_weight_commits_the_fill_before_its_padding():
    # canvas of 3: padding at positions 2-3 is surer than the real token at position 1
    x = torch.tensor([[5, MASK, MASK, MASK, 6]])
    model = scripted({1: (7, 3.0), 2: (PAD, 9.0), 3: (PAD, 8.0)}, length=5)
    class Recording(FullForward):
        def __call__(self, ids, mask):
            self.seen.append(ids.clone())
            return super().__call__(ids, mask)

    for weight, first in ((1.0, [[5, MASK, PAD, MASK, 6]]), (0.0, [[5, 7, MASK, MASK, 6]])):
        forward = Recording(model)
        forward.seen = []
        config = SamplerConfig(steps=3, threshold=2.0, stop_weight=weight)
        out = denoise(model, x, config, mask_id=MASK, forward=forward, stop_ids=(PAD, EOS))
        assert out.tolist() == [[5, 7, PAD, PAD, 6]]
        assert forward.seen[1].tolist() == first, weight


def test_stop_weight_one_is_the_reference_and_needs_a_valid_range():
    with pytest.raises(ValueError, match="stop_weight"):
        SamplerConfig(stop_weight=1.5)
    assert SamplerConfig().stop_weight == 1.0
