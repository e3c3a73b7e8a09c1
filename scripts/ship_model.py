"""``python scripts/ship_model.py RUN_OUT``: ``python -m training.ship`` judged by what users
see: the run ships only if its held-out fills through the server's own path are no worse
(the probe only warns; twice it passed runs whose fills were not better). About 7 minutes on
2 cores. A separate script because ``training`` may not import the server."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from coda_lsp.fim import best_fill  # noqa: E402
from training.ship import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(server_fill=best_fill))
