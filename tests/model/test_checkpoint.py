"""Checkpoint loading is strict, safetensors-only, and says what is wrong."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from coda_model import CheckpointError, CodaConfig, load_model, load_tokenizer, save_model


@pytest.fixture
def folder(tiny_model_dir, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, dst)
    return dst


def logits_of(model):
    with torch.no_grad():
        return model(torch.tensor([[5, 6, 7, 8]]))


def test_round_trip_gives_identical_logits(folder, tmp_path):
    model = load_model(folder)
    again = load_model(save_model(model, tmp_path / "again", tokenizer_dir=folder))
    torch.testing.assert_close(logits_of(model), logits_of(again), rtol=0, atol=0)
    assert load_tokenizer(tmp_path / "again").mask_id == load_tokenizer(folder).mask_id


def test_config_round_trip_keeps_release_keys():
    data = {"model_type": "CoDA", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "sampling_eps": [0.001], "auto_map": {"AutoModel": "x.Y"}}
    config = CodaConfig.from_dict(data)
    assert config.head_dim == 4
    out = config.to_dict()
    assert out["sampling_eps"] == [0.001] and "auto_map" not in out
    assert CodaConfig.from_dict(out) == config


@pytest.mark.parametrize("change, message", [
    ({"num_attention_heads": 3}, "multiple of num_key_value_heads"),
    ({"model_type": "llama"}, "model_type"),
    ({"hidden_size": 0}, "positive integer"),
    ({"rope_scaling": {"type": "yarn"}}, "rope_scaling"),
])
def test_bad_config_is_rejected(folder, change, message):
    data = json.loads((folder / "config.json").read_text())
    data.update(change)
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=message):
        load_model(folder)


def _drop_up_proj(state):
    del state["model.layers.1.mlp.up_proj.weight"]


def _add_extra(state):
    state["model.layers.9.extra.weight"] = torch.zeros(2)


def _reshape_norm(state):
    state["model.norm.weight"] = torch.ones(7)


@pytest.mark.parametrize("damage, message", [
    (_drop_up_proj, r"missing tensors: model\.layers\.1\.mlp\.up_proj"),
    (_add_extra, r"unexpected tensors: model\.layers\.9\.extra"),
    (_reshape_norm, r"model\.norm\.weight has shape \(7,\)"),
])
def test_a_mismatched_tensor_is_named(folder, damage, message):
    state = load_file(folder / "model.safetensors")
    damage(state)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=message):
        load_model(folder)


def test_corrupt_weights_file(folder):
    (folder / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_model(folder)


def test_pickled_weights_are_refused_with_advice(folder):
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="Convert them to safetensors"):
        load_model(folder)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="not a directory"):
        load_model(tmp_path / "absent")


def test_missing_lm_head_is_tied_to_embedding(folder):
    state = load_file(folder / "model.safetensors")
    del state["lm_head.weight"]
    save_file(state, folder / "model.safetensors")
    model = load_model(folder)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_sharded_bf16_checkpoint(folder):
    model = load_model(folder)
    state = {k: v.to(torch.bfloat16) for k, v in load_file(folder / "model.safetensors").items()}
    names = sorted(state)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half],
              "model-00002-of-00002.safetensors": names[half:]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, folder / shard)
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: s for s, keys in shards.items() for k in keys}}))
    sharded = load_model(folder)
    assert sharded.model.norm.weight.dtype == torch.float32
    torch.testing.assert_close(logits_of(sharded), logits_of(model), atol=0.5, rtol=0.1)
    assert load_model(folder, dtype="bf16").model.norm.weight.dtype == torch.bfloat16
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="shard model-00002-of-00002"):
        load_model(folder)


def test_auto_map_is_never_executed(folder):
    data = json.loads((folder / "config.json").read_text())
    data["auto_map"] = {"AutoModel": "evil.Model"}
    (folder / "config.json").write_text(json.dumps(data))
    (folder / "evil.py").write_text("raise SystemExit('checkpoint code ran')\n")
    load_model(folder)


def test_an_autoregressive_checkpoint_is_refused_unless_asked_for(folder):
    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**data, "objective": "autoregressive-fim"}))
    with pytest.raises(CheckpointError, match="autoregressive model .objective 'autoregr"):
        load_model(folder)
    assert load_model(folder, autoregressive=True).config.extra["objective"] == "autoregressive-fim"


def test_save_is_atomic_when_it_fails(folder, tmp_path, monkeypatch):
    model = load_model(folder)
    target = save_model(model, tmp_path / "out")
    before = (target / "model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("coda_model.checkpoint.save_file", boom)
    with pytest.raises(OSError):
        save_model(model, target)
    assert (target / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []


def test_loading_leaves_torch_compile_machinery_unimported(folder):
    """Building the model on the meta device once pulled in torch._dynamo: two seconds of
    every server's cold start and ~80 MB of its memory, for nothing."""
    import subprocess
    import sys

    probe = ("import sys; from coda_model import load_model; load_model(sys.argv[1]); "
             "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))")
    out = subprocess.run([sys.executable, "-c", probe, str(folder)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]"


def test_a_fresh_model_keeps_torch_default_embedding_init():
    """Tests and benchmarks seed torch and build random models: the meta-device shortcut must
    not change the weights they get."""
    from coda_model.modeling import CodaModel

    config = CodaConfig(vocab_size=50, hidden_size=8, intermediate_size=16,
                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                        head_dim=4)
    torch.manual_seed(3)
    model = CodaModel(config)
    torch.manual_seed(3)
    reference = torch.nn.Embedding(50, 8)
    assert torch.equal(model.model.embed_tokens.weight, reference.weight)
    assert model.model.embed_tokens.weight.requires_grad
