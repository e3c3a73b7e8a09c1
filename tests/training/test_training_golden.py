"""Golden loss curve of a tiny run on a generated corpus.

A change that should not alter numerics (refactors, logging, checkpoint code) must keep these
losses; a change that alters the objective or the data on purpose regenerates them with
``CODA_REGEN_GOLDEN=1 pytest tests/test_training_golden.py`` and says so in its commit.
"""

import json
import os
import random
from dataclasses import replace
from pathlib import Path

import pytest

from training.run import recipes
from training.run.loop import Trainer
from training.run.metrics import read_metrics

GOLDEN = Path(__file__).resolve().parents[2] / "training" / "golden" / "tiny_cpu_losses.json"
STEPS = 12


def synthetic_corpus(root: Path, files: int = 24) -> Path:
    """Deterministic Python-like files: functions with branches, loops and calls."""
    rng = random.Random(1234)
    names = ["total", "items", "value", "count", "path", "result", "node", "key", "index"]
    ops = ["+", "-", "*", "//", "%"]
    root.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        lines = ["import os", "import sys", ""]
        for fn in range(rng.randint(3, 7)):
            a, b = rng.sample(names, 2)
            lines += ["", f"def {rng.choice(names)}_{f}_{fn}({a}, {b}=None):",
                      f'    """Compute the {a} of {b}."""',
                      f"    if {b} is None:", f"        {b} = {rng.randint(0, 9)}"]
            for _ in range(rng.randint(1, 4)):
                c = rng.choice(names)
                if rng.random() < 0.5:
                    lines += [f"    for {c} in range({a}):",
                              f"        {b} = {b} {rng.choice(ops)} {c}"]
                else:
                    lines += [f"    {c} = {a} {rng.choice(ops)} {rng.randint(1, 99)}",
                              f"    print({c}, file=sys.stderr)"]
            lines += [f"    return {a} {rng.choice(ops)} {b}", ""]
        (root / f"mod_{f}.py").write_text("\n".join(lines) + "\n")
    return root


def test_tiny_cpu_loss_curve_matches_golden(tmp_path):
    corpus = synthetic_corpus(tmp_path / "corpus")
    r = recipes.get("tiny_cpu")
    r = replace(r, data=replace(r.data, sources=(str(corpus),), eval_fraction=0.2))
    r = recipes.override(r, [f"train.steps={STEPS}", "train.log_every=1", "train.eval_every=0",
                             "train.checkpoint_every_seconds=0"])
    Trainer(r, tmp_path / "run").run()
    losses = [row["loss"] for row in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert len(losses) == STEPS
    if os.environ.get("CODA_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps({"recipe": "tiny_cpu", "steps": STEPS,
                                      "losses": losses}, indent=1) + "\n")
        pytest.skip("golden losses regenerated")
    golden = json.loads(GOLDEN.read_text())["losses"]
    assert losses == pytest.approx(golden, rel=1e-3, abs=1e-4)
