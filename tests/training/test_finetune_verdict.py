"""Issue 31: a fine-tune says whether it helped.  The held-out split (stable under renames,
capped by tokens), the paired verdict and where the model goes (final/ or rejected/), the
missing-extras line, saved file modes and dtype, progress lines, and a tiny end-to-end run with
the CPU recipe's replay and passes."""

import json
import logging
import os
import stat
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from training import finetune
from training.data import repo_split
from training.data.packing import DataConfig, load_or_build, read_corpus
from training.eval import repo as repo_eval
from training.eval import verdict
from training.run import recipes

STDLIB_JSON = str(Path(recipes.STDLIB) / "json")


def write_repo(folder: Path, n: int = 16, big: int = 0) -> Path:
    """``n`` small distinct modules in a package, plus one ``big`` times larger."""
    pkg = folder / "pkg"
    pkg.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (pkg / f"mod{i}.py").write_text(
            f'"""Module {i}."""\n\n\ndef scale_{i}(values, factor={i + 1}):\n'
            f"    total = 0\n    for value in values:\n        total += value * factor\n"
            f"    return total\n\n\nclass Box{i}:\n    def __init__(self, size):\n"
            f"        self.size = size + {i}\n\n    def area(self):\n"
            f"        return self.size * self.size\n")
    if big:
        (pkg / "big.py").write_text("".join(
            f"def f{k}(x):\n    return x * {k} + len(str(x))\n\n\n" for k in range(big)))
    return folder


def held(cfg: DataConfig) -> dict[str, str]:
    return {repo_split.path_in_repo(d.path): d.text for d in read_corpus(cfg) if d.is_eval}


# ---------------------------------------------------------------- the held-out split

def test_the_split_survives_renaming_the_checkout_and_is_capped_by_tokens(tmp_path):
    a = write_repo(tmp_path / "boltons-1.0", big=200)
    cfg = DataConfig(sources=(str(a),), eval_fraction=0.0, eval_token_cap=0.12)
    first = held(cfg)
    renamed = a.rename(tmp_path / "my-checkout")
    assert held(DataConfig(sources=(str(renamed),), eval_fraction=0.0,
                           eval_token_cap=0.12)) == first
    docs = read_corpus(cfg.__class__(**{**cfg.__dict__, "sources": (str(renamed),)}))
    total = sum(repo_split.approx_tokens(d.text) for d in docs)
    out = sum(repo_split.approx_tokens(d.text) for d in docs if d.is_eval)
    assert first and 0.06 * total < out <= 0.12 * total
    assert "pkg/big.py" not in first   # larger than the cap: always trained on
    # the old per-file fraction over "folder/path" moved with the folder's name
    old = DataConfig(sources=(str(renamed),), eval_fraction=0.3)
    assert {d.path for d in read_corpus(old) if d.is_eval} != set()


def test_tests_train_only_never_held_out_and_leave_the_split_as_it_was(tmp_path):
    repo = write_repo(tmp_path / "repo", big=200)
    cfg = DataConfig(sources=(str(repo),), eval_fraction=0.0, eval_token_cap=0.12,
                     val_token_cap=0.06)
    before = {d.path: (d.is_eval, d.is_val) for d in read_corpus(cfg)}
    tests = repo / "tests"
    tests.mkdir()
    for i in range(12):  # many test tokens: counted in the caps, they would move the split
        (tests / f"test_mod{i}.py").write_text(
            f"from pkg.mod{i} import scale_{i}\n\n\ndef test_scale():\n"
            f"    assert scale_{i}([1, 2, 3]) == {6 * (i + 1)}\n" * 20)
    assert {d.path for d in read_corpus(cfg)} == set(before)  # excluded unless asked
    docs = read_corpus(DataConfig(**{**cfg.__dict__, "train_only_dirs": ("tests",)}))
    extra = [d for d in docs if d.path not in before]
    assert len(extra) == 12 and all(d.train_only and not d.is_eval and not d.is_val
                                    for d in extra)
    assert {d.path: (d.is_eval, d.is_val) for d in docs if d.path in before} == before


def test_list_overrides_take_json_or_commas_and_refuse_a_number():
    r = recipes.get("finetune_repo_cpu")
    assert recipes.override(r, ["data.train_only_dirs=tests,test"]).data.train_only_dirs \
        == ("tests", "test")
    assert recipes.override(r, ['data.train_only_dirs=["tests"]']).data.train_only_dirs \
        == ("tests",)
    assert recipes.override(r, ["optim.betas=0.9,0.99"]).optim.betas == (0.9, 0.99)
    with pytest.raises(ValueError, match="takes a list"):
        recipes.override(r, ["data.train_only_dirs=3"])


def test_the_cpu_recipe_holds_out_by_tokens_and_replays_general_code():
    r = recipes.get("finetune_repo_cpu")
    assert r.data.eval_token_cap == pytest.approx(0.12) and r.data.replay_mix == 0.5
    assert r.data.replay_sources == (recipes.STDLIB,)
    assert (r.train.batch_size, r.data.seq_len, r.optim.lr) == (16, 256, 1.5e-4)
    assert (r.train.passes, r.train.steps, r.optim.warmup_steps) == (2.0, 100, 10)
    assert r.optim.schedule == "cosine"


def test_replay_fills_about_the_wanted_share_of_the_train_split(tiny_model_dir, tmp_path):
    from coda_model import load_tokenizer
    repo = write_repo(tmp_path / "repo", n=30)
    cfg = DataConfig(sources=(str(repo),), seq_len=64, eval_fraction=0.0, eval_token_cap=0.12,
                     replay_sources=(STDLIB_JSON,), replay_mix=0.5)
    load_or_build(cfg, load_tokenizer(tiny_model_dir), tmp_path / "data")
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    repo_tokens = sum(f["tokens"] for f in manifest["files"].values() if f["split"] == "train")
    assert manifest["splits"]["replay"]["tokens"] >= repo_tokens
    assert not any(p.startswith("json") for p in manifest["files"])   # replay is not the repo's


# ---------------------------------------------------------------- the verdict

def scores(similarities, parses=0.8):
    return {"spans": len(similarities), "steps": 8, "exact_match": 0.0,
            "edit_similarity": sum(similarities) / len(similarities), "parses": parses,
            "middle_ce": 5.0, "ms_per_fill": 1.0,
            "per_span": [{"id": f"a.py#{i}", "similarity": s, "middle_ce": 5.0}
                         for i, s in enumerate(similarities)]}


def test_the_verdict_wants_a_gain_beyond_one_standard_error_and_parses_kept():
    base = [0.1, 0.2, 0.3, 0.4] * 10
    better = verdict.judge(scores(base), scores([s + 0.05 for s in base]))
    assert better.helped and better.diff == pytest.approx(0.05) and better.se < 1e-9
    worse = verdict.judge(scores(base), scores([s - 0.05 for s in base]))
    assert not worse.helped and "did not rise" in worse.why
    noisy = verdict.judge(scores(base), scores([s + (0.3 if i % 2 else -0.29)
                                                for i, s in enumerate(base)]))
    assert 0 < noisy.diff <= noisy.se and not noisy.helped and "noise" in noisy.why
    unparsed = verdict.judge(scores(base, 0.8), scores([s + 0.05 for s in base], 0.77))
    assert not unparsed.helped and "parse" in unparsed.why
    assert verdict.judge(scores(base, 0.8), scores([s + 0.05 for s in base], 0.79)).helped
    assert "did NOT help" in worse.line() and "-0.050 ± 0.000" in worse.line()


def tiny_args(base, data, out, *extra):
    """A seconds-long run; ``extra``: flags, and KEY=VALUEs that override the ones here."""
    flags = [a for a in extra if a.startswith("--")]
    sets = [a for a in extra if a not in flags]
    return ["--base", str(base), "--data", str(data), "--recipe", "tiny_finetune_cpu",
            "--out", str(out), "--cpu", "--eval-spans", "12", *flags, "--set",
            "train.steps=3", "train.eval_every=0", "train.checkpoint_every_seconds=0",
            "data.eval_fraction=0", "data.eval_token_cap=0.12", *sets]


@pytest.fixture
def fake_after(monkeypatch):
    """The fine-tuned model's scores made better or worse than the base's (the real ones
    before): the verdict's consequences, whatever a 3-step tiny run happens to do."""
    real = repo_eval.score
    shift = {"by": 0.0}

    def score(model, tok, examples, **kw):
        out = real(model, tok, examples, **kw)
        if "fine-tuned" in kw.get("desc", ""):
            for s in out["per_span"]:
                s["similarity"] = min(1.0, max(0.0, base_of[s["id"]] + shift["by"]))
            out["edit_similarity"] = sum(s["similarity"] for s in out["per_span"]) / len(
                out["per_span"])
            out["parses"] = before_parses["v"]
        else:
            base_of.update({s["id"]: 0.5 for s in out["per_span"]})
            for s in out["per_span"]:
                s["similarity"] = 0.5
            out["edit_similarity"] = 0.5
            before_parses["v"] = out["parses"]
        return out

    base_of: dict = {}
    before_parses: dict = {}
    monkeypatch.setattr(finetune.repo_eval, "score", score)
    return shift


def test_a_fine_tune_that_helped_goes_to_final(tiny_model_dir, tmp_path, capsys, fake_after):
    fake_after["by"] = 0.1
    out = tmp_path / "run"
    assert finetune.main(tiny_args(tiny_model_dir, write_repo(tmp_path / "r"), out)) == 0
    printed = capsys.readouterr().out
    assert (out / "final" / "model.safetensors").is_file() and not (out / "rejected").exists()
    assert "the fine-tune helped" in printed and f"coda-lsp --model {out / 'final'}" in printed
    assert json.loads((out / "eval.json").read_text())["verdict"]["helped"] is True


def test_a_worse_fine_tune_goes_to_rejected_and_exits_1(tiny_model_dir, tmp_path, capsys,
                                                       fake_after):
    fake_after["by"] = -0.1
    out = tmp_path / "run"
    assert finetune.main(tiny_args(tiny_model_dir, write_repo(tmp_path / "r"), out)) == 1
    printed = capsys.readouterr().out
    assert (out / "rejected" / "model.safetensors").is_file() and not (out / "final").exists()
    assert "did NOT help" in printed and f"model is in {out / 'rejected'}" in printed
    assert "coda-lsp --model" not in printed
    assert json.loads((out / "eval.json").read_text())["verdict"]["helped"] is False
    # --keep-worse: final/ and exit 0, said plainly
    assert finetune.main(tiny_args(tiny_model_dir, tmp_path / "r", out, "--keep-worse")) == 0
    printed = capsys.readouterr().out
    assert (out / "final").is_dir() and not (out / "rejected").exists()
    assert "did NOT help" in printed and "--keep-worse" in printed


# ---------------------------------------------------------------- the newcomer's path

def test_missing_train_extras_is_one_line_with_the_install_command(tiny_model_dir, tmp_path,
                                                                   capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate", None)
    code = finetune.main(tiny_args(tiny_model_dir, write_repo(tmp_path / "r"), tmp_path / "o",
                                   "--dry-run"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert 'pip install -e ".[train]"' in err[0]


def bf16_base(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny model as the shipped one is stored: bf16 weights, torch_dtype bfloat16."""
    from coda_model import load_model, save_model
    save_model(load_model(tiny_model_dir), folder, tokenizer_dir=tiny_model_dir,
               dtype="bfloat16")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "torch_dtype": "bfloat16"}))
    return folder


def test_end_to_end_with_replay_passes_modes_dtype_and_progress_lines(tiny_model_dir, tmp_path,
                                                                      capsys, caplog):
    base = bf16_base(tiny_model_dir, tmp_path / "base")
    repo = write_repo(tmp_path / "repo", n=24)
    out = tmp_path / "run"
    old = os.umask(0o077)   # a strict umask: the model folder is still readable by others
    try:
        with caplog.at_level(logging.INFO):
            code = finetune.main(tiny_args(base, repo, out, "train.passes=2",
                                           "train.steps=100", "train.batch_size=4",
                                           f'data.replay_sources=["{STDLIB_JSON}"]',
                                           "data.replay_mix=0.5"))
    finally:
        os.umask(old)
    printed = capsys.readouterr().out
    result = json.loads((out / "eval.json").read_text())["verdict"]
    assert code == (0 if result["helped"] else 1)
    model = out / ("final" if result["helped"] else "rejected")
    assert not (out / ("rejected" if result["helped"] else "final")).exists()
    assert "paired" in printed and str(model) in printed
    assert stat.S_IMODE(model.stat().st_mode) == 0o755
    assert {stat.S_IMODE(f.stat().st_mode) for f in model.iterdir()} == {0o644}
    with safe_open(str(model / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}
    steps = json.loads((out / "recipe.json").read_text())["train"]["steps"]
    rows = json.loads((out / "data" / "manifest.json").read_text())["splits"]["train"]["rows"]
    assert steps == -(-2 * rows // 4) < 100   # two passes over the train split
    assert "replay:" in caplog.text
    assert "scoring the base model: 12/12 span" in caplog.text
    assert "scoring the fine-tuned model: 12/12 span" in caplog.text
    assert "\r" not in caplog.text   # no progress bars in a log that is not a terminal
