"""Infilling quality vs latency, diffusion model vs AR baseline: ``training.evaluate``, a script.

    python benchmarks/bench_infilling.py --model model --ar-model benchmarks/ar_baseline --limit 100

Every flag is ``python -m training.evaluate``'s; see benchmarks/README.md.  This script also
supplies the server's own fill path for ``--lengths server`` (``coda_lsp.core.fim.best_fill``:
the span's candidate lengths, the context-cached sampler, ranking and the confidence
threshold), which ``training`` may not import itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from coda_lsp.core.fim import best_fill  # noqa: E402
from training.eval.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(server_fill=best_fill))
