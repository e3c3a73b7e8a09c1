"""Recipes, the accelerate fine-tuning runner, and the torch_xla path (only where installed)."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from coda_model import load_model
from training.run import recipes
from training.run.loop import Trainer
from training.run.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_every_recipe_builds(name):
    r = recipes.get(name)
    assert r.name == name and r.train.steps > 0 and r.data.seq_len >= 8
    assert r.hardware


def test_overrides_are_typed_and_checked():
    r = recipes.override(recipes.get("tiny_cpu"),
                         ["train.steps=7", "optim.lr=0.01", "objective.block_sizes=[3, 5]",
                          "model.hidden_size=32"])
    assert (r.train.steps, r.optim.lr, r.objective.block_sizes) == (7, 0.01, (3, 5))
    assert r.model["hidden_size"] == 32
    with pytest.raises(ValueError):
        recipes.override(r, ["train.nope=1"])
    with pytest.raises(ValueError):
        recipes.override(r, ["objective.p_fim=2"])
    with pytest.raises(ValueError):
        recipes.get("no_such_recipe")


@pytest.mark.parametrize("key, message", [
    ("model.vocab_size=8192", "comes from the tokenizer; set tokenizer.vocab_size"),
    ("model.mask_token_id=3", "comes from the tokenizer"),
    ("model.hidden_sise=64", "unknown model field 'hidden_sise'"),
])
def test_model_overrides_name_config_fields_the_run_may_set(key, message):
    """These used to pass here and die later in CodaConfig with a TypeError."""
    with pytest.raises(ValueError, match=message):
        recipes.override(recipes.get("tiny_cpu"), [key])


def test_the_cpu_path_never_imports_torch_xla():
    code = ("import sys, training.pretrain, training.run.loop, training.finetune, "
            "training.run.recipes; "
            "sys.exit('torch_xla' in sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    r = recipes.get("tiny_cpu")
    r = replace(r, data=replace(r.data, sources=(str(ROOT / "training"),), eval_fraction=0.3))
    r = recipes.override(r, ["train.steps=3", "train.eval_every=0",
                             "train.checkpoint_every_seconds=0"])
    Trainer(r, out).run()
    return out / "final"


def test_finetune_sft_on_jsonl_pairs(base_model, tmp_path):
    from training import finetune

    pairs = tmp_path / "pairs.jsonl"
    with pairs.open("w") as f:
        for i in range(40):
            f.write(json.dumps({"prompt": f"def f{i}(x):\n", "response": f"    return x * {i}\n"})
                    + "\n")
    out = tmp_path / "sft"
    finetune.main(["--base", str(base_model), "--data", str(pairs), "--recipe",
                   "tiny_finetune_cpu", "--out", str(out), "--cpu", "--set", "train.steps=4",
                   "train.log_every=1", "train.checkpoint_every_seconds=0"])
    rows = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert load_model(out / "final").config == load_model(base_model).config
    with pytest.raises(ValueError):
        finetune.read_pairs([_bad_jsonl(tmp_path)])


def _bad_jsonl(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x"}) + "\n")
    return bad


def test_finetune_on_a_source_folder(base_model, tmp_path):
    from training import finetune

    out = tmp_path / "repo"
    finetune.main(["--base", str(base_model), "--data", str(ROOT / "coda_model"), "--recipe",
                   "tiny_finetune_cpu", "--out", str(out), "--cpu", "--set", "train.steps=3",
                   "train.checkpoint_every_seconds=0", "data.eval_fraction=0.3",
                   "--keep-worse"])  # 3 steps need not help: the verdict has its own tests
    assert (out / "final" / "model.safetensors").is_file()
    assert json.loads((out / "data" / "manifest.json").read_text())["splits"]["train"]["rows"]


def test_xla_backend_runs_tiny_steps(tmp_path):
    pytest.importorskip("torch_xla")
    env = {**os.environ, "PJRT_DEVICE": os.environ.get("PJRT_DEVICE", "CPU"),
           "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "training.pretrain", "--recipe", "tiny_cpu",
                    "--out", str(tmp_path / "xla"), "--data", str(ROOT / "training"),
                    "--set", "train.device=xla", "train.steps=3", "train.eval_every=0",
                    "data.eval_fraction=0.3"], cwd=ROOT, env=env, check=True, timeout=600)
    assert (tmp_path / "xla" / "final" / "config.json").is_file()
