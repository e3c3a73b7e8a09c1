"""Hole fills on unseen repositories through the server's own "Fill this hole" path.

    python -m training.unseen fetch                       # once: the pinned sdists (network)
    python benchmarks/eval_unseen.py run --model model [--seed 0] [--lines 15] [--blocks 10]

Every flag is ``python -m training.unseen``'s (``training.eval.unseen``). This script supplies
the fill, which ``training`` may not import: the hole is a ``<FILL>`` marker, sized by
``coda_syntax.spans.hole_at`` as the server sizes it, filled by ``coda_lsp.core.fim.fill_span``
with the server's settings (``fillHoleSteps``, the context-cached sampler, ranking, the fill
contract and its retries), the model loaded by ``Engine.load`` as the server loads it (its
dtype for this CPU unless ``CODA_EVAL_DTYPE`` says otherwise). ``CODA_EVAL_RETRY=0`` keeps the
contract's first attempt only (no retries when every candidate fails: the engine path of
``bench_fill_hole.py``; cheaper where the model is often refused).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from coda_lsp.core import fim  # noqa: E402
from coda_lsp.core.engine import Engine  # noqa: E402
from coda_lsp.core.settings import Settings  # noqa: E402
from coda_syntax import spans  # noqa: E402
from coda_syntax.text import FILL_MARKER  # noqa: E402
from training.eval.unseen import main  # noqa: E402

MARKER = FILL_MARKER.decode()


def hole_fill(folder: Path):
    """``fill(prefix, suffix) -> (offered, best)`` for documents ``prefix <FILL> suffix``."""
    engine = Engine.load(folder, device="cpu", dtype=os.environ.get("CODA_EVAL_DTYPE") or None)
    settings = Settings()
    retry = os.environ.get("CODA_EVAL_RETRY", "1") != "0"

    def fill(prefix: str, suffix: str) -> tuple[str, str]:
        doc = fim.open_document(prefix + MARKER + suffix, "file:///unseen/hole.py")
        span = spans.hole_at(doc.syntax, doc.byte_at(len(prefix)))
        if span is None:
            raise RuntimeError(f"no hole found at the marker: {prefix[-40:]!r}")
        decision = fim.fill_span(engine, doc, span, settings.fill_hole_steps, settings,
                                 retry=retry).decision
        offered = decision.fills[0].text if decision.fills else ""
        best = offered or (decision.best_rejected.text if decision.best_rejected else "")
        return offered, best
    return fill


if __name__ == "__main__":
    sys.exit(main(hole_fill=hole_fill))
