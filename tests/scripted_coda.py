"""``coda-lsp`` with a scripted model: the real CLI, server and HTTP paths, fills from a script.

Tests that need a particular candidate (one that adds a syntax error, one under the bar) run
``python tests/scripted_coda.py [coda-lsp arguments]`` with $CODA_SCRIPT set to JSON
``{"fills": [[text, confidence], ...], "retry": [[text, confidence], ...]}``: every fill
request returns ``fills``, a retry with a seed (``coda_lsp.core.contract.retry_jobs``) returns
``retry`` when given. ``"step_s"``: seconds each denoising step takes (a slow model to watch
and to cancel: the fill stops between steps when asked, as the engine does, and when
$CODA_SCRIPT_LOG names a file, JSON lines there say when a fill starts and at which step it
stopped or that it finished). The tokenizer is the
model folder's. Not a model: a test kit.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from coda_lsp.core.engine import MASK_GLYPH, Cancelled, Engine, Fill, FillResult  # noqa: E402


def sharpened(text: str, step: int, steps: int) -> str:
    """``text`` as a fill reads after ``step`` of ``steps``: a share decided, masks after."""
    decided = len(text) * step // steps
    return text[:decided] + MASK_GLYPH * min(4, len(text) - decided)


class ScriptedEngine:
    """Engine.fill's contract (a job in, candidates out, progress per step), canned fills."""

    def __init__(self, script: dict, tokenizer=None) -> None:
        self.script, self.tokenizer = script, tokenizer
        self.jobs: list = []

    def fill(self, job, should_stop=None, on_step=None, on_partial=None) -> FillResult:
        self.jobs.append(job)
        _note({"started": job.steps})
        fills = self.script.get("retry") if job.seed is not None else None
        fills = fills if fills is not None else self.script["fills"]
        for step in range(1, job.steps + 1):
            if should_stop is not None and should_stop():
                _note({"stopped": step - 1, "steps": job.steps})
                raise Cancelled()
            time.sleep(self.script.get("step_s", 0))
            if on_step is not None:
                on_step(step, job.steps)
            if on_partial is not None:  # each text decided left to right, the rest masked
                on_partial(step, job.steps, [sharpened(text, step, job.steps)
                                             for text, _ in fills])
        _note({"finished": job.steps})
        return FillResult([Fill(text, conf, len(text)) for text, conf in fills],
                          {"prompt": 0.0, "model": 0.0})


    def forget(self, key: str) -> None:
        """No per-document state to drop."""


def _note(record: dict) -> None:
    path = os.environ.get("CODA_SCRIPT_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")


def load_scripted(model_dir, *args, **kwargs) -> ScriptedEngine:
    from coda_model import load_tokenizer

    return ScriptedEngine(json.loads(os.environ["CODA_SCRIPT"]), load_tokenizer(model_dir))


if __name__ == "__main__":
    Engine.load = staticmethod(load_scripted)
    from coda_lsp.cli import main

    sys.exit(main())
