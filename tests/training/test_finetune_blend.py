"""Issue 31, item 1: final/ is the fine-tuned weights averaged with the base's (train.blend,
the repository recipe's default), each weight once, and the checkpoints keep what was trained."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from testkit import write_toy_repo

from coda_model import CodaConfig, CodaModel, load_model
from training.run import blend, recipes
from training.run.loop import Trainer


def small_model(seed: int) -> CodaModel:
    torch.manual_seed(seed)
    return CodaModel(CodaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=1, head_dim=8, tie_word_embeddings=True))


def test_each_weight_is_blended_once_a_tied_embedding_included():
    trained, base = small_model(0), small_model(1)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    blend.with_base(trained, base, 0.25)
    after, theirs = trained.state_dict(), base.state_dict()
    assert after["lm_head.weight"].data_ptr() == after["model.embed_tokens.weight"].data_ptr()
    for name, value in after.items():
        want = 0.25 * before[name] + 0.75 * theirs[name]
        assert torch.allclose(value, want, atol=1e-6), name   # blended twice: 1/16 + 15/16


def test_a_share_of_one_keeps_the_trained_weights_and_bad_input_is_refused():
    trained, base = small_model(0), small_model(1)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    blend.with_base(trained, base, 1.0)
    assert all(torch.equal(v, before[k]) for k, v in trained.state_dict().items())
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        blend.with_base(trained, base, 1.5)
    other = CodaModel(CodaConfig(vocab_size=64, hidden_size=32, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=1, head_dim=16))
    with pytest.raises(ValueError, match="different architecture"):
        blend.with_base(trained, other, 0.5)
    with pytest.raises(ValueError, match="train.blend"):
        recipes.TrainConfig(blend=-0.1)


def test_the_cpu_recipe_blends_by_default():
    assert recipes.get("finetune_repo_cpu").train.blend == 0.5
    assert recipes.get("finetune_repo_gpu").train.blend == 1.0   # not measured there


def test_final_is_the_average_of_the_last_checkpoint_and_the_base(tiny_model_dir, tmp_path):
    r = recipes.get("tiny_finetune_cpu")
    r = replace(r, init_from=str(tiny_model_dir),
                tokenizer=replace(r.tokenizer, path=str(tiny_model_dir)),
                data=replace(r.data, sources=(str(write_toy_repo(tmp_path / "repo", 20)),)),
                train=replace(r.train, steps=3, eval_every=0, blend=0.5))
    Trainer(r, tmp_path / "run").run()
    final = load_model(tmp_path / "run" / "final").state_dict()
    trained = load_model(tmp_path / "run" / "checkpoints" / "step-000003").state_dict()
    base = load_model(Path(tiny_model_dir)).state_dict()
    moved = [k for k in final if not torch.equal(trained[k], base[k])]
    assert moved                                   # the three steps did change the weights
    for k in final:
        assert torch.allclose(final[k], 0.5 * trained[k] + 0.5 * base[k], atol=1e-6), k
