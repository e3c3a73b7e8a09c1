"""Fine-tuning on your own repository (issue 13): recipe limits, before/after scores, the data
cache, hardware paths, resume safety and one-line errors. Tiny models: seconds per test."""

import json
import logging
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from training import finetune
from training.data.packing import DataConfig, DataError, load_or_build, read_corpus
from training.run import checkpointing, devices, pretrain, recipes, state_io
from training.run.loop import RecipeChanged, Trainer
from training.run.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]


def write_repo(folder: Path, n: int = 12) -> Path:
    """A small package of distinct, parseable Python files."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"mod{i}.py").write_text(
            f'"""Module {i}."""\n\n\ndef scale_{i}(values, factor={i + 1}):\n'
            f"    total = 0\n    for value in values:\n        total += value * factor\n"
            f"    return total\n\n\nclass Box{i}:\n    def __init__(self, size):\n"
            f"        self.size = size + {i}\n\n    def area(self):\n"
            f"        return self.size * self.size\n")
    return folder


def tiny_args(base, data, out, *extra):
    """finetune's arguments for a seconds-long run; ``extra`` holds flags and KEY=VALUEs."""
    flags = [a for a in extra if a.startswith("--") or not a.count("=")]
    sets = [a for a in extra if a not in flags]
    return ["--base", str(base), "--data", str(data), "--recipe", "tiny_finetune_cpu",
            "--out", str(out), "--cpu", "--eval-spans", "12", *flags, "--set", "train.steps=3",
            "train.eval_every=0", "train.checkpoint_every_seconds=0", "data.min_eval_files=3",
            *sets]


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) >= 1 and "Traceback" not in "\n".join(err)
    return err[-1]


# ---------------------------------------------------------------- 1. the CPU recipe

def test_seq_len_is_capped_at_the_base_models_positions_with_a_message(tiny_model_dir, tmp_path,
                                                                       caplog):
    base = tmp_path / "base"
    base.mkdir()
    for f in tiny_model_dir.iterdir():
        (base / f.name).write_bytes(f.read_bytes())
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 128}))
    recipe = recipes.get("finetune_repo_gpu")
    with caplog.at_level(logging.WARNING):
        capped = finetune.fit_to_base(recipe, base)
    assert capped.data.seq_len == 128
    assert "2048" in caplog.text and "128" in caplog.text
    assert finetune.fit_to_base(recipes.get("finetune_repo_cpu"), base).data.seq_len == 128


def test_the_cpu_recipe_leaves_warm_up_and_fits_the_shipped_model():
    r = recipes.get("finetune_repo_cpu")
    shipped = json.loads((ROOT / "model" / "config.json").read_text())
    assert r.data.seq_len <= shipped["max_position_embeddings"]
    assert r.optim.warmup_steps * 10 <= r.train.steps and r.optim.lr >= 1e-4
    assert r.train.device == "cpu" and r.data.eval_token_cap > 0   # held out by tokens (#31)


# ---------------------------------------------------------------- 2. before/after scores

def test_small_repos_hold_out_a_few_files_stably(tmp_path):
    repo = write_repo(tmp_path / "repo", n=12)
    cfg = DataConfig(sources=(str(repo),), eval_fraction=0.0, min_eval_files=3)
    held = [d.path for d in read_corpus(cfg) if d.is_eval]
    assert len(held) == 3 and held == [d.path for d in read_corpus(cfg) if d.is_eval]
    tiny = write_repo(tmp_path / "tiny", n=5)   # never more than a quarter of the files
    assert sum(d.is_eval for d in read_corpus(replace(cfg, sources=(str(tiny),)))) == 1


def test_finetune_prints_and_writes_the_before_after_table(tiny_model_dir, tmp_path, capsys,
                                                           caplog):
    repo = write_repo(tmp_path / "repo")
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert finetune.main(tiny_args(tiny_model_dir, repo, out, "--keep-worse",
                                       "data.eval_fraction=0", "data.min_eval_files=2")) == 0
    printed = capsys.readouterr().out
    rows = json.loads((out / "eval.json").read_text())
    assert "paired" in printed and {"diff", "se", "helped"} <= set(rows.pop("verdict"))
    assert [name.split()[0] for name in rows] == ["base", "fine-tuned"]
    for r in rows.values():
        assert r["spans"] == 12 and 0 <= r["exact_match"] <= 1 and 0 <= r["edit_similarity"] <= 1
        assert r["middle_ce"] > 0 and len(r["per_span"]) == 12
    before, after = rows.values()
    assert [s["id"] for s in before["per_span"]] == [s["id"] for s in after["per_span"]]
    assert before["middle_ce"] != after["middle_ce"]   # the weights did change
    table = (out / "eval.md").read_text()
    assert "| base " in table and "| fine-tuned " in table and table.strip() in printed
    assert "of 12" in table.splitlines()[-1]
    assert "held-out set is small (2 files" in caplog.text


# ---------------------------------------------------------------- 3. the data cache

def test_the_packed_data_is_rebuilt_when_a_source_changes(tiny_model_dir, tmp_path):
    from coda_model import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    repo = write_repo(tmp_path / "repo")
    cfg = DataConfig(sources=(str(repo),), seq_len=32, eval_fraction=0.2)
    out = tmp_path / "data"
    first, _ = load_or_build(cfg, tok, out)
    packed_at = (out / "train.safetensors").stat().st_mtime_ns
    load_or_build(cfg, tok, out)
    assert (out / "train.safetensors").stat().st_mtime_ns == packed_at   # reused
    train_file = next(p for p in sorted(repo.iterdir())
                      if not read_corpus(cfg)[sorted(repo.iterdir()).index(p)].is_eval)
    train_file.write_text(train_file.read_text() + "\n\ndef added():\n    return 'new code'\n")
    second, _ = load_or_build(cfg, tok, out)
    assert (out / "train.safetensors").stat().st_mtime_ns != packed_at
    assert second.ids.numel() != first.ids.numel() or not torch.equal(second.ids, first.ids)
    packed_at = (out / "train.safetensors").stat().st_mtime_ns
    load_or_build(cfg, tok, out, rebuild=True)   # --fresh
    assert (out / "train.safetensors").stat().st_mtime_ns != packed_at


def test_fresh_repacks_through_the_cli(tiny_model_dir, tmp_path, caplog):
    repo = write_repo(tmp_path / "repo")
    out = tmp_path / "run"
    assert finetune.main(tiny_args(tiny_model_dir, repo, out, "--no-eval")) == 0
    (repo / "mod0.py").write_text("def changed():\n    return 'a different body here'\n" * 3)
    with caplog.at_level(logging.INFO):
        assert finetune.main(tiny_args(tiny_model_dir, repo, out, "--no-eval", "--fresh")) == 0
    assert "re-packing" in caplog.text
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["sources"]["files"] == 12


# ---------------------------------------------------------------- 4. hardware paths

@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cuda_without_a_gpu_is_a_one_line_error(no_cuda, tiny_model_dir, tmp_path, capsys):
    with pytest.raises(devices.DeviceError, match="train.device=cpu"):
        devices.resolve("cuda")
    assert devices.resolve("auto") == "cpu"
    code = pretrain.main(["--recipe", "tiny_cpu", "--out", str(tmp_path / "p"),
                          "--set", "train.device=cuda"])
    assert "train.device=cuda" in one_line_error(capsys, code)
    repo = write_repo(tmp_path / "repo")
    code = finetune.main(["--base", str(tiny_model_dir), "--data", str(repo), "--recipe",
                          "finetune_repo_gpu", "--out", str(tmp_path / "f")])
    assert "cuda" in one_line_error(capsys, code)
    assert not (tmp_path / "f" / "recipe.json").exists()


def test_missing_torch_xla_gets_an_install_hint(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(__import__("sys").modules, "torch_xla", None)
    code = pretrain.main(["--recipe", "tiny_cpu", "--out", str(tmp_path / "x"),
                          "--set", "train.device=xla"])
    assert "pip install" in one_line_error(capsys, code)


def test_the_recipe_records_the_device_actually_used(no_cuda, tiny_model_dir, tmp_path):
    repo = write_repo(tmp_path / "repo")
    out = tmp_path / "run"
    assert finetune.main(tiny_args(tiny_model_dir, repo, out, "--no-eval",
                                   "train.device=auto")) == 0
    assert json.loads((out / "recipe.json").read_text())["train"]["device"] == "cpu"


def test_dry_run_checks_everything_and_trains_nothing(tiny_model_dir, tmp_path, capsys):
    repo = write_repo(tmp_path / "repo")
    out = tmp_path / "run"
    assert finetune.main(tiny_args(tiny_model_dir, repo, out, "--dry-run")) == 0
    printed = capsys.readouterr().out
    assert "GiB" in printed and "train rows" in printed and "held-out" in printed
    assert (out / "data" / "manifest.json").is_file()
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()
    assert pretrain.main(["--recipe", "tiny_cpu", "--out", str(tmp_path / "p"), "--data",
                          str(repo), "--dry-run"]) == 0
    assert "GiB" in capsys.readouterr().out and not (tmp_path / "p" / "checkpoints").exists()


@pytest.mark.parametrize("entry", [finetune, pretrain])
def test_help_names_gpu_tpu_and_accelerate(entry, capsys):
    with pytest.raises(SystemExit):
        entry.main(["--help"])
    text = capsys.readouterr().out
    assert "GPU" in text.upper() and "TPU" in text and "accelerate launch" in text


# ---------------------------------------------------------------- 5. resume

def tiny_recipe(repo: Path, *extra: str):
    r = recipes.get("tiny_cpu")
    r = replace(r, data=replace(r.data, sources=(str(repo),), eval_fraction=0.25))
    return recipes.override(r, ["train.steps=6", "train.checkpoint_every_seconds=0",
                                "train.checkpoint_every_steps=2", "train.eval_every=0",
                                "train.log_every=1", *extra])


def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    repo = write_repo(tmp_path / "repo")
    clean = tmp_path / "clean"
    Trainer(tiny_recipe(repo), clean).run()
    run = tmp_path / "run"
    Trainer(tiny_recipe(repo), run).run(stop_after_step=4)
    latest = checkpointing.latest_checkpoint(run / "checkpoints")
    assert latest.name == "step-000004"
    (latest / "trainer_state.safetensors").write_bytes(b"\0" * 10)
    with caplog.at_level(logging.WARNING):
        Trainer(tiny_recipe(repo), run).run()
    assert "step-000004" in caplog.text and "step-000002" not in caplog.text.split(
        "unreadable")[0]
    assert (run / "checkpoints" / "corrupt-step-000004").is_dir()   # kept for a look
    loss = {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl")}
    assert loss == {r["step"]: r["loss"] for r in read_metrics(clean / "metrics.jsonl")}


def test_a_changed_setting_refuses_to_resume_unless_forced(tmp_path):
    repo = write_repo(tmp_path / "repo")
    run = tmp_path / "run"
    Trainer(tiny_recipe(repo), run).run(stop_after_step=2)
    before = (run / "recipe.json").read_text()
    with pytest.raises(RecipeChanged, match=r"optim\.lr: 0\.003 -> 0\.01") as err:
        Trainer(tiny_recipe(repo, "optim.lr=0.01"), run).run()
    assert "--force" in str(err.value)
    assert (run / "recipe.json").read_text() == before   # not overwritten
    Trainer(tiny_recipe(repo, "optim.lr=0.01"), run).run(force=True)
    assert json.loads((run / "recipe.json").read_text())["optim"]["lr"] == 0.01


def test_recipe_differences_list_changes_but_not_fields_added_since():
    old = recipes.get("tiny_cpu").to_dict()
    new = recipes.override(recipes.get("tiny_cpu"), ["train.steps=9", "data.seq_len=32"])
    new = json.loads(json.dumps(new.to_dict()))
    old = json.loads(json.dumps(old))
    assert recipes.differences(old, new) == ["data.seq_len: 64 -> 32", "train.steps: 30 -> 9"]
    del old["data"]["min_eval_files"]   # a checkpoint written before the field existed
    assert recipes.differences(old, new) == ["data.seq_len: 64 -> 32", "train.steps: 30 -> 9"]


def test_a_changed_set_is_a_one_line_error_from_the_cli(tiny_model_dir, tmp_path, capsys):
    repo = write_repo(tmp_path / "repo")
    out = tmp_path / "run"
    args = tiny_args(tiny_model_dir, repo, out, "--no-eval")
    assert finetune.main([*args, "--stop-after-step", "1"]) == 0
    code = finetune.main([*args, "optim.lr=0.5"])
    assert "optim.lr: 0.001 -> 0.5" in one_line_error(capsys, code)
    assert finetune.main([*args, "optim.lr=0.5", "--force"]) == 0


def test_a_corrupt_trainer_state_error_names_the_file(tmp_path):
    state_io.save_state({"step": 3, "t": torch.ones(2)}, tmp_path)
    (tmp_path / "trainer_state.safetensors").write_bytes(b"garbage")
    with pytest.raises(state_io.StateError, match="trainer_state.safetensors"):
        state_io.load_state(tmp_path)
    state_io.save_state({"step": 3, "t": torch.ones(2)}, tmp_path)
    (tmp_path / "trainer_state.json").write_text('{"dict": [[')
    with pytest.raises(state_io.StateError, match="trainer_state.json"):
        state_io.load_state(tmp_path)


# ---------------------------------------------------------------- 6. errors and files

def test_bad_folders_and_bases_are_one_line_errors(tiny_model_dir, tmp_path, capsys):
    repo = write_repo(tmp_path / "repo")

    def error(base, data):
        return one_line_error(capsys, finetune.main(tiny_args(base, data, tmp_path / "o")))

    assert "no such file or folder" in error(tiny_model_dir, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "is empty" in error(tiny_model_dir, tmp_path / "empty")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("not python")
    assert "no .py files" in error(tiny_model_dir, tmp_path / "docs")
    (tmp_path / "small").mkdir()
    for i in range(3):
        (tmp_path / "small" / f"m{i}.py").write_text("x = 1\n")
    (tmp_path / "small" / "gen.py").write_text("x = [" + "1, " * 300 + "]\n")
    line = error(tiny_model_dir, tmp_path / "small")
    assert "no usable files" in line and "all 4 dropped" in line
    assert "3 size" in line and "1 generated" in line
    assert "no such folder" in error(tmp_path / "nowhere", repo)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    assert "no tokenizer.json" in error(tmp_path / "half", repo)


def test_checkpoint_folders_are_readable_by_others(tmp_path):
    repo = write_repo(tmp_path / "repo")
    old = os.umask(0o022)
    try:
        Trainer(tiny_recipe(repo, "train.steps=2"), tmp_path / "run").run()
    finally:
        os.umask(old)
    ckpt = checkpointing.latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o755


def test_the_readme_names_the_real_checkpoint_files():
    text = (ROOT / "training" / "README.md").read_text()
    assert "trainer_state.pt" not in text
    assert "trainer_state.json" in text and "finetune_repo_cpu" in text


def test_an_unreadable_data_source_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_corpus(DataConfig(sources=(str(tmp_path / "gone"),)))
