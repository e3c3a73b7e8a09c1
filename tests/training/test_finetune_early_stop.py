"""Issue 31, item 1: early stopping on validation files (kept apart from the files the verdict
scores) keeps the best weights, and the number of passes follows the repository's size."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from testkit import write_toy_repo

from coda_model import load_model
from training.data.packing import DataConfig, read_corpus
from training.run import early_stop, recipes
from training.run.loop import Trainer, passes_for


def write_repo(folder: Path, n: int = 40) -> Path:
    return write_toy_repo(folder, n)


def test_early_stop_keeps_the_best_snapshot_and_stops_after_patience():
    stop = early_stop.EarlyStop(patience=2)
    seen = []
    for step, loss in enumerate([5.0, 4.0, 3.5, 3.6, 3.4, 3.9, 3.8, 3.0]):
        if stop.see(step, loss, lambda step=step: {"step": step}):
            seen.append(step)
            break
    assert seen == [6]                        # 3.9 and 3.8 after the best, 3.4 at step 4
    assert (stop.best_step, stop.best, stop.state) == (4, 3.4, {"step": 4})
    with pytest.raises(ValueError):
        early_stop.EarlyStop(patience=0)


def test_passes_follow_the_split_size_within_bounds():
    r = recipes.get("finetune_repo_cpu_early_stop")
    assert (r.train.early_stop_every, r.data.val_token_cap, r.optim.lr) == (10, 0.06, 1.5e-4)
    t = r.train
    assert (t.passes_rows, t.passes_min, t.passes_max, t.steps) == (1600, 1.0, 4.0, 100)
    assert passes_for(t, 100) == 4.0          # a small repository: seen at most 4 times
    assert passes_for(t, 800) == 2.0          # about 1600 rows either way
    assert passes_for(t, 10_000) == 1.0       # a large one: at least once
    assert passes_for(replace(t, passes_rows=0, passes=2.0), 100) == 2.0


def test_validation_files_are_neither_trained_on_nor_scored(tmp_path):
    repo = write_repo(tmp_path / "repo")
    docs = read_corpus(DataConfig(sources=(str(repo),), eval_fraction=0.0,
                                  eval_token_cap=0.12, val_token_cap=0.08))
    val = {d.path for d in docs if d.is_val}
    held = {d.path for d in docs if d.is_eval}
    assert val and held and not val & held
    # the held-out files are those of a run without validation files
    plain = read_corpus(DataConfig(sources=(str(repo),), eval_fraction=0.0, eval_token_cap=0.12))
    assert {d.path for d in plain if d.is_eval} == held


def stop_recipe(base: Path, repo: Path) -> recipes.Recipe:
    r = recipes.get("tiny_finetune_cpu")
    return replace(r, init_from=str(base), tokenizer=replace(r.tokenizer, path=str(base)),
                   data=replace(r.data, sources=(str(repo),), eval_fraction=0.0,
                                eval_token_cap=0.12, val_token_cap=0.1),
                   train=replace(r.train, steps=30, eval_every=0, checkpoint_every_seconds=0,
                                 early_stop_every=2, early_stop_patience=2))


def test_the_run_stops_early_and_saves_the_best_weights(tiny_model_dir, tmp_path, monkeypatch):
    """Scores scripted to bottom out at step 4: the run stops at step 8 (two worse scores) and
    final/ holds the weights of step 4, not the last ones."""
    scores = iter([9.0, 8.0, 7.0, 7.5, 7.2, 1.0])
    weights = {}

    def scripted(self):
        weights[self.step] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return next(scores)

    monkeypatch.setattr(Trainer, "validate", scripted)
    trainer = Trainer(stop_recipe(tiny_model_dir, write_repo(tmp_path / "repo")),
                      tmp_path / "run")
    assert trainer.val_split is not None and len(trainer.val_split) > 0
    trainer.run()
    assert sorted(weights) == [0, 2, 4, 6, 8]
    assert trainer.stopped_early and trainer.finished and trainer.step == 8
    assert trainer.best_step == 4
    final = load_model(tmp_path / "run" / "final").state_dict()
    changed = [k for k in final if not torch.equal(weights[4][k], weights[8][k])]
    assert changed   # the weights did move after the best step
    for k in final:
        assert torch.equal(final[k], weights[4][k].to(final[k].dtype)), k
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows if r["kind"] == "val"] == [0, 2, 4, 6, 8]
    # the same command again: resumed, already finished, no more steps nor scores
    again = Trainer(stop_recipe(tiny_model_dir, tmp_path / "repo"), tmp_path / "run")
    weights.clear()
    again.run()
    assert again.step == 8 and again.finished and not weights


def test_early_stopping_without_validation_rows_trains_to_the_end(tiny_model_dir, tmp_path,
                                                                  caplog):
    r = stop_recipe(tiny_model_dir, write_repo(tmp_path / "repo"))
    r = replace(r, data=replace(r.data, val_token_cap=0.0), train=replace(r.train, steps=3))
    trainer = Trainer(r, tmp_path / "run")
    trainer.run()
    assert trainer.step == 3 and not trainer.stopped_early and trainer.best_step is None
    assert "no validation rows" in caplog.text
