"""The GPU-efficiency switches of the loop, exercised on CPU: device corruption, bf16 autocast,
a time budget. (CUDA itself is checked by benchmarks/bench_training.py on a GPU machine.)"""

import time
from dataclasses import replace

import pytest
import torch
from test_training_golden import synthetic_corpus

from training.run import recipes
from training.run.checkpointing import latest_checkpoint
from training.run.loop import Trainer
from training.run.metrics import read_metrics


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return synthetic_corpus(tmp_path_factory.mktemp("corpus"))


def tiny(corpus, steps, *sets):
    r = recipes.get("tiny_cpu")
    r = replace(r, data=replace(r.data, sources=(str(corpus),), eval_fraction=0.2))
    return recipes.override(r, [f"train.steps={steps}", "train.log_every=1",
                                "train.eval_every=0", "train.checkpoint_every_seconds=0",
                                *sets])


def losses(run_dir):
    return [row["loss"] for row in read_metrics(run_dir / "metrics.jsonl")]


def test_cpu_defaults_stay_fp32_with_the_reference_corruption(corpus, tmp_path):
    trainer = Trainer(tiny(corpus, 1), tmp_path / "run")
    assert (trainer.bf16, trainer.on_device) == (False, False)
    assert not trainer.optimizer.param_groups[0].get("fused")


def test_device_corruption_in_bf16_learns_and_repeats_exactly(corpus, tmp_path):
    sets = ("train.corruption=device", "train.precision=bf16")
    trainer = Trainer(tiny(corpus, 40, *sets), tmp_path / "a")
    assert (trainer.bf16, trainer.on_device) == (True, True)
    before = trainer.evaluate()["masked_ce"]
    trainer.run()
    assert trainer.evaluate()["masked_ce"] < before - 0.3
    first = losses(tmp_path / "a")
    Trainer(tiny(corpus, 40, *sets), tmp_path / "b").run()
    assert losses(tmp_path / "b") == first         # seeded by (seed, step), like the reference
    assert torch.isfinite(torch.tensor(first)).all()


def test_device_corruption_resumes_exactly(corpus, tmp_path):
    sets = ("train.corruption=device",)
    Trainer(tiny(corpus, 12, *sets), tmp_path / "whole").run()
    Trainer(tiny(corpus, 12, *sets), tmp_path / "split").run(stop_after_step=5)
    Trainer(tiny(corpus, 12, *sets), tmp_path / "split").run()
    assert losses(tmp_path / "split") == losses(tmp_path / "whole")


def test_a_deadline_stops_the_run_and_checkpoints_the_last_step(corpus, tmp_path):
    trainer = Trainer(tiny(corpus, 10_000), tmp_path / "run")
    trainer.run(deadline=0.0)                        # already passed: no step runs
    assert trainer.step == 0
    trainer.run(deadline=time.monotonic() + 2.0)
    assert 0 < trainer.step < 10_000
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == f"step-{trainer.step:06d}"


def test_replanning_the_length_in_the_warm_up_gives_that_lengths_schedule(corpus, tmp_path):
    sets = ("optim.warmup_steps=5", "train.log_every=1")
    replanned = Trainer(tiny(corpus, 1000, *sets), tmp_path / "a")
    for _ in range(3):
        replanned.train_step()
    replanned.set_total_steps(12)
    replanned.run(resume=False)
    Trainer(tiny(corpus, 12, *sets), tmp_path / "b").run()
    lrs = [[row["lr"] for row in read_metrics(tmp_path / d / "metrics.jsonl")] for d in "ab"]
    assert lrs[0] == lrs[1][3:]
    with pytest.raises(ValueError, match="warm-up"):
        replanned.set_total_steps(20)


def test_a_replan_from_on_step_sets_the_runs_length_and_schedule(corpus, tmp_path):
    """What ``training.gpu_run`` does at the last warm-up step, once it has timed the steps."""
    sets = ("optim.warmup_steps=5", "train.log_every=1")
    replanned = Trainer(tiny(corpus, 1000, *sets), tmp_path / "a")
    replanned.run(on_step=lambda tr: tr.set_total_steps(12) if tr.step == 4 else None)
    Trainer(tiny(corpus, 12, *sets), tmp_path / "b").run()
    assert replanned.step == 12
    lrs = [[row["lr"] for row in read_metrics(tmp_path / d / "metrics.jsonl")] for d in "ab"]
    assert lrs[0] == lrs[1]
