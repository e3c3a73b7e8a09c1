"""coda_model reproduces the public CoDA reference implementation on the shared tiny checkpoint."""

import json
from pathlib import Path

import pytest
import torch

from coda_model import SamplerConfig, denoise, load_model, load_tokenizer
from coda_model.forward import FullForward

FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "coda-reference-tiny"
pytestmark = pytest.mark.skipif(
    not (FIXTURE / "golden.json").is_file(),
    reason=f"reference fixture not found at {FIXTURE} (../shared is absent)",
)


@pytest.fixture(scope="module")
def golden():
    return json.loads((FIXTURE / "golden.json").read_text())


@pytest.fixture(scope="module")
def model():
    return load_model(FIXTURE, dtype=torch.float32)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(FIXTURE)


def test_tokenizer_ids_match_reference(golden, tokenizer):
    for case in golden["tokenize"]:
        assert tokenizer.encode(case["text"]) == case["ids"], case["text"]
        assert tokenizer.decode(case["ids"]) == case["text"]


def test_special_ids_come_from_the_files(golden, tokenizer):
    config = json.loads((FIXTURE / "config.json").read_text())
    assert tokenizer.mask_id == config["mask_token_id"]
    assert tokenizer.pad_id == config["pad_token_id"]
    assert tokenizer.token(tokenizer.eos_id) == "<|im_end|>"
    assert tokenizer.token(tokenizer.fim_prefix_id) == "<|fim_prefix|>"


@pytest.mark.parametrize("text", [" s", ".", "(", "    ", "\n", "ret", "_d", "é", "<|"])
def test_ids_starting_with_finds_every_ordinary_token_of_qwen2(tokenizer, text):
    """Token healing's lookup (a binary search of the sorted texts) against a scan of all
    151 k Qwen2 tokens; control tokens, mask, pad and eos are never offered."""
    skip = {tokenizer.mask_id, tokenizer.pad_id, tokenizer.eos_id, *tokenizer.control_ids}
    scan = {i for i, t in enumerate(tokenizer.token_texts) if t.startswith(text) and i not in skip}
    found = tokenizer.ids_starting_with(text)
    assert len(found) == len(set(found)) and set(found) == scan
    assert text != "<|" or not scan   # "<|mask|>" and the fim markers are all control tokens


def test_slow_tokenizer_files_give_the_same_ids(golden, tmp_path):
    for name in ("vocab.json", "merges.txt", "added_tokens.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        (tmp_path / name).write_bytes((FIXTURE / name).read_bytes())
    slow = load_tokenizer(tmp_path)
    for case in golden["tokenize"]:
        assert slow.encode(case["text"]) == case["ids"]
    assert slow.encode("<|mask|>x") == [slow.mask_id, slow.encode("x")[0]]
    user_text = slow.encode("a <|mask|> b", allow_special=False)
    assert slow.mask_id not in user_text and slow.decode(user_text) == "a <|mask|> b"


def test_forward_matches_reference(golden, model):
    for case in golden["forward"]:
        with torch.no_grad():
            logits = model(torch.tensor([case["input_ids"]]))[0]
        assert logits.argmax(-1).tolist() == case["argmax"]
        torch.testing.assert_close(torch.logsumexp(logits, -1), torch.tensor(case["logsumexp"]),
                                   atol=1e-4, rtol=0)
        torch.testing.assert_close(logits[:, :32], torch.tensor(case["logits_first_32"]),
                                   atol=1e-4, rtol=0)


def _config(case, **overrides):
    return SamplerConfig(steps=case["steps"], alg=case["alg"], alg_temp=case["alg_temp"],
                         temperature=case["temperature"], top_p=case["top_p"],
                         top_k=case["top_k"], eps=case["eps"], **overrides)


@pytest.mark.parametrize("skip_idle_steps", [False, True])
def test_infill_matches_reference(golden, model, tokenizer, skip_idle_steps):
    for case in golden["infill"]:
        out = denoise(model, torch.tensor([case["input_ids"]]),
                      _config(case, skip_idle_steps=skip_idle_steps), mask_id=tokenizer.mask_id)
        assert out[0].tolist() == case["output_ids"], {k: case[k] for k in ("alg", "steps")}


@pytest.mark.parametrize("skip_idle_steps", [False, True])
def test_complete_matches_reference(golden, model, tokenizer, skip_idle_steps):
    for case in golden["complete"]:
        prompt = case["input_ids"] + [tokenizer.mask_id] * case["max_new_tokens"]
        out = denoise(model, torch.tensor([prompt]),
                      _config(case, skip_idle_steps=skip_idle_steps), mask_id=tokenizer.mask_id)
        assert out[0].tolist() == case["output_ids"], {k: case[k] for k in ("alg", "steps")}


def test_skipping_idle_steps_saves_forward_passes(golden, model, tokenizer):
    case = next(c for c in golden["infill"] if c["steps"] == 16)
    passes = {}
    for skip in (False, True):
        forward = FullForward(model)
        denoise(model, torch.tensor([case["input_ids"]]), _config(case, skip_idle_steps=skip),
                mask_id=tokenizer.mask_id, forward=forward)
        passes[skip] = forward.passes
    assert passes[False] == 16
    assert passes[True] < passes[False]
