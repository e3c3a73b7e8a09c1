"""``python -m coda_lsp``: the same as the ``coda-lsp`` command."""

import sys

from coda_lsp.cli import main

if __name__ == "__main__":
    sys.exit(main())
