"""`python -m training.ar_baseline`: the command; it lives in `training.eval.ar_baseline`."""

import sys

from training.eval.ar_baseline import main

if __name__ == "__main__":
    sys.exit(main())
