"""Issue 31, item 3: LoRA on the released model's shape, rehearsed on CPU with the tiny
reference checkpoint (Qwen3-shaped CoDA weights): adapters train, merge into a servable bf16
folder that coda_model loads, change exactly the adapted weights, and the merged model computes
what the adapted one did."""

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from testkit import write_toy_repo

from coda_model import CodaModel, load_model, save_model
from training import finetune
from training.run import checkpointing, lora, recipes
from training.run.loop import Trainer

SHARED = Path(os.environ.get("CODA_SHARED", Path(__file__).resolve().parents[3] / "shared"))
FIXTURE = SHARED / "fixtures" / "coda-reference-tiny"

pytestmark = pytest.mark.skipif(not (FIXTURE / "config.json").is_file(),
                                reason=f"no tiny reference checkpoint at {FIXTURE}")
pytest.importorskip("peft")

ADAPTED = tuple(f"{name}.weight" for name in lora.TARGETS)


def write_repo(folder: Path, n: int = 30) -> Path:
    return write_toy_repo(folder, n)


def lora_recipe(repo: Path, steps: int = 4) -> recipes.Recipe:
    r = recipes.get("tiny_finetune_cpu")
    return replace(r, init_from=str(FIXTURE), tokenizer=replace(r.tokenizer, path=str(FIXTURE)),
                   data=replace(r.data, sources=(str(repo),), eval_fraction=0.2),
                   # a large rate, so a few steps move the merged weights past bf16's rounding
                   optim=replace(r.optim, lr=5e-2, warmup_steps=1),
                   train=replace(r.train, steps=steps, eval_every=0,
                                 checkpoint_every_seconds=0),
                   lora=lora.LoraSettings(enabled="on", rank=4, alpha=8))


def test_lora_trains_merges_and_serves_what_it_trained(tmp_path):
    trainer = Trainer(lora_recipe(write_repo(tmp_path / "repo")), tmp_path / "run")
    trainer.run(stop_after_step=3)   # a checkpoint; the model stays adapted
    adapted = trainer.backend.unwrap(trainer.model)
    assert lora.is_lora(adapted)
    trained = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)

    ckpt = checkpointing.latest_checkpoint(trainer.ckpt_dir)
    assert (ckpt / lora.ADAPTER_FILE).is_file()
    again = Trainer(lora_recipe(tmp_path / "repo"), tmp_path / "run")
    assert again.resume()
    saved = load_file(str(ckpt / lora.ADAPTER_FILE))
    restored = lora.adapter_state(again.backend.unwrap(again.model))
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)

    ids = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(0))
    adapted.eval()
    with torch.no_grad():
        want = adapted(ids)
        plain = lora.merged(adapted, inplace=True)
        assert type(plain) is CodaModel
        torch.testing.assert_close(plain.eval()(ids), want, atol=1e-4, rtol=1e-4)
    save_model(plain, tmp_path / "merged", tokenizer_dir=FIXTURE, dtype="bfloat16")

    with safe_open(str(tmp_path / "merged" / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    served, base = load_model(tmp_path / "merged"), load_model(FIXTURE)
    base_state = base.state_dict()
    for name, tensor in served.state_dict().items():
        if name.endswith(ADAPTED):
            assert not torch.equal(tensor, base_state[name]), name
        else:
            assert torch.equal(tensor, base_state[name]), name
    with torch.no_grad():
        got, before = served(ids), base(ids)
    error = (got - want).abs().max()
    assert error < 0.05 * want.abs().max()                 # bf16 weights
    assert error < 0.25 * (before - want).abs().max()      # far nearer than the base


def test_finetune_lora_end_to_end_writes_a_bf16_final_and_the_verdict(tmp_path, capsys):
    repo = write_repo(tmp_path / "repo")
    out = tmp_path / "run"
    code = finetune.main(["--base", str(FIXTURE), "--data", str(repo), "--out", str(out),
                          "--recipe", "tiny_finetune_cpu", "--cpu", "--lora", "--keep-worse",
                          "--eval-spans", "8", "--set", "train.steps=3", "train.eval_every=0",
                          "train.checkpoint_every_seconds=0", "data.min_eval_files=3",
                          "optim.lr=0.05", "lora.rank=4"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "paired" in printed and "serve it" in printed or "kept anyway" in printed
    assert json.loads((out / "recipe.json").read_text())["lora"]["enabled"] == "on"
    rows = json.loads((out / "eval.json").read_text())
    assert {"diff", "se", "helped"} <= set(rows.pop("verdict"))
    before, after = rows.values()
    assert before["middle_ce"] != after["middle_ce"]
    with safe_open(str(out / "final" / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
        assert {f.get_slice(k).get_dtype() for k in names} == {"BF16"}
    assert not any("lora" in n or "base_layer" in n for n in names)
    assert set(load_model(out / "final").state_dict()) == set(load_model(FIXTURE).state_dict())


def test_lora_by_default_only_for_a_big_base_on_a_gpu():
    auto = lora.LoraSettings()
    assert lora.wanted(auto, 2_000_000_000, "cuda")
    assert not lora.wanted(auto, 2_000_000_000, "cpu")
    assert not lora.wanted(auto, 5_000_000, "cuda")
    assert lora.wanted(replace(auto, enabled="on"), 5_000_000, "cpu")
    assert not lora.wanted(replace(auto, enabled="off"), 2_000_000_000, "cuda")
    with pytest.raises(ValueError, match="auto, on or off"):
        lora.LoraSettings(enabled="yes")
