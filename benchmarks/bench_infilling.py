"""Infilling quality vs latency, diffusion model vs AR baseline: ``training.evaluate`` as a script.

    python benchmarks/bench_infilling.py --model model --ar-model benchmarks/ar_baseline --limit 100

Every flag is ``python -m training.evaluate``'s; see benchmarks/README.md.  This script also
supplies the server's own fill path for ``--lengths server`` (``coda_lsp.fim.fill_between``:
the span's candidate lengths, the context-cached sampler, ranking and the confidence
threshold), which ``training`` may not import itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from training.evaluate import main  # noqa: E402


def server_fill(model, tokenizer):
    """``fill(prefix, suffix, steps) -> text``: what the server would offer between them."""
    from coda_lsp import fim
    from coda_lsp.engine import Engine
    from coda_lsp.settings import Settings

    engine, settings = Engine(model, tokenizer), Settings()

    def fill(prefix: str, suffix: str, steps: int) -> str:
        outcome = fim.fill_between(engine, prefix, suffix, settings, steps)
        return outcome.fills[0].text if outcome.fills else ""
    return fill


if __name__ == "__main__":
    sys.exit(main(server_fill=server_fill))
