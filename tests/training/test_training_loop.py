"""The CPU training loop: loss goes down, checkpoints serve, kill -9 resumes exactly."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from coda_model import load_model
from training.run import recipes
from training.run.checkpointing import latest_checkpoint
from training.run.loop import Trainer
from training.run.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("training", "coda_model")  # our own code: always present, copied so it cannot change
QUIET = ["train.checkpoint_every_seconds=0", "train.eval_every=0", "train.log_every=1"]


CORPUS: tuple[str, ...] = ()


def tiny(steps=30, extra=()):
    r = recipes.get("tiny_cpu")
    r = replace(r, data=replace(r.data, sources=CORPUS, eval_fraction=0.25))
    return recipes.override(r, [f"train.steps={steps}", *QUIET, *extra])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A frozen copy of the corpus; tokenizer and packed data built once for every run."""
    global CORPUS
    corpus = tmp_path_factory.mktemp("corpus")
    for name in SOURCES:
        (corpus / name).mkdir()
        for f in (ROOT / name).glob("*.py"):
            shutil.copyfile(f, corpus / name / f.name)
    CORPUS = tuple(str(corpus / name) for name in SOURCES)
    out = tmp_path_factory.mktemp("prepared")
    Trainer(tiny(), out)
    return out


def seeded_run_dir(prepared, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer", "data"):
        shutil.copytree(prepared / name, path / name, dirs_exist_ok=True)
    return path


def test_a_few_steps_lower_the_held_out_loss(prepared, tmp_path):
    trainer = Trainer(tiny(steps=40), seeded_run_dir(prepared, tmp_path / "run"))
    before = trainer.evaluate()["masked_ce"]
    trainer.run()
    after = trainer.evaluate()["masked_ce"]
    assert after < before - 0.5, (before, after)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 41))
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000


def test_checkpoint_serves_the_same_logits(prepared, tmp_path):
    out = seeded_run_dir(prepared, tmp_path / "run")
    trainer = Trainer(tiny(steps=6), out)
    trainer.run()
    ids = trainer.train_split.ids[:2].long()
    with torch.no_grad():
        expected = trainer.model.eval()(ids)
    for folder in (latest_checkpoint(out / "checkpoints"), out / "final"):
        served = load_model(folder)
        with torch.no_grad():
            assert torch.equal(served(ids), expected)
        assert json.loads((folder / "config.json").read_text())["mask_token_id"] == 2
        assert (folder / "tokenizer.json").is_file()


def test_resume_in_process_matches_uninterrupted(prepared, tmp_path):
    a = Trainer(tiny(steps=12), seeded_run_dir(prepared, tmp_path / "a"))
    a.run()
    b_dir = seeded_run_dir(prepared, tmp_path / "b")
    Trainer(tiny(steps=12), b_dir).run(stop_after_step=5)
    Trainer(tiny(steps=12), b_dir).run()
    la = read_metrics(tmp_path / "a" / "metrics.jsonl")
    lb = read_metrics(b_dir / "metrics.jsonl")
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def _pretrain(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "training.pretrain", "--recipe", "tiny_cpu", "--out", str(out),
            "--data", *CORPUS, "--set", "data.eval_fraction=0.25", *QUIET, *args]


def test_cli_reuses_the_prepared_data(prepared):
    manifest = json.loads((prepared / "data" / "manifest.json").read_text())
    assert manifest["config"]["sources"] == list(CORPUS)


def test_kill_9_then_resume_gives_the_uninterrupted_next_loss(prepared, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = seeded_run_dir(prepared, tmp_path / "killed")
    steps = ["train.steps=400", "train.checkpoint_every_steps=4"]
    proc = subprocess.Popen(_pretrain(killed, "--set", *steps), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while latest_checkpoint(killed / "checkpoints") is None:
            assert proc.poll() is None, "training exited before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    resume_step = int(latest_checkpoint(killed / "checkpoints").name.split("-")[1])
    target = resume_step + 1
    recipe = tiny(steps=400, extra=["train.checkpoint_every_steps=4"])
    Trainer(recipe, killed).run(stop_after_step=target)           # resumes the killed run
    clean = seeded_run_dir(prepared, tmp_path / "clean")
    Trainer(recipe, clean).run(stop_after_step=target)            # never interrupted

    def loss_at(run):
        rows = [r for r in read_metrics(run / "metrics.jsonl") if r["step"] == target]
        assert len(rows) == 1
        return rows[0]["loss"]

    assert loss_at(killed) == loss_at(clean)


def test_a_run_from_an_ar_checkpoint_makes_a_diffusion_model(tiny_model_dir, tmp_path):
    """The shipped recipe starts from the AR baseline: its "objective" mark must not survive."""
    from coda_model import load_tokenizer, save_model
    from training.run.loop import build_model

    ar = load_model(tiny_model_dir)
    ar.config.extra["objective"] = "autoregressive-fim"
    save_model(ar, tmp_path / "ar", tokenizer_dir=tiny_model_dir)
    recipe = replace(recipes.get("tiny_cpu"), init_from=str(tmp_path / "ar"))
    model = build_model(recipe, load_tokenizer(tmp_path / "ar"))
    assert "objective" not in model.config.extra and model.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 ar.state_dict().values(), strict=True))
