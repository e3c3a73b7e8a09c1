"""``python scripts/ship_model.py RUN_OUT``: ``python -m training.ship`` with the held-out fill
gate: the run ships only if its fills through the server's own path are no worse (the probe
alone twice passed runs whose fills were not better). About 7 minutes on 2 cores."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from coda_lsp.fim import best_fill  # noqa: E402
from training.ship import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(server_fill=best_fill))
